"""VGG-style models (VGG5, VGG8, VGG11, VGG16) as sequences of conv and dense blocks."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from pipelearn.models.blocks import ConvBlock, DenseBlock, check_model_args, output_shape

POOL = "M"

VGG5_CONVS: tuple[int | str, ...] = (32, POOL, 64, POOL, 64)
VGG8_CONVS: tuple[int | str, ...] = (32, POOL, 64, POOL, 64, 128, POOL, 128)
VGG11_CONVS: tuple[int | str, ...] = (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL)
VGG16_CONVS: tuple[int | str, ...] = (
    64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL,
)  # fmt: skip


def make_vgg(
    convs: Sequence[int | str],
    hidden: Sequence[int],
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    batchnorm: bool = True,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Build a VGG: one block per 3x3 conv (``"M"`` folds a 2x2 max-pool into the conv before it), then dense.

    A pool is skipped where the feature map is already smaller than 2x2, so any input size works.
    The dense blocks are ``hidden`` widths with ReLU then ``dropout``, and a final linear to the classes.
    """
    shape = check_model_args(input_shape, num_classes)
    channels, height, width = shape
    if not convs or not isinstance(convs[0], int):
        raise ValueError("a VGG configuration must start with a conv width")
    blocks: list[nn.Module] = []
    in_channels = channels
    for i, entry in enumerate(convs):
        if entry == POOL:
            continue
        if not isinstance(entry, int):
            raise ValueError(f"VGG configuration entries are ints or {POOL!r}, got {entry!r}")
        pool = i + 1 < len(convs) and convs[i + 1] == POOL and min(height, width) >= 2
        if pool:
            height, width = height // 2, width // 2
        blocks.append(ConvBlock(in_channels, entry, 3, batchnorm=batchnorm, pool=pool))
        in_channels = entry
    in_features = math.prod(output_shape(blocks, shape))
    for i, width_out in enumerate(hidden):
        blocks.append(DenseBlock(in_features, width_out, dropout=dropout, flatten=i == 0))
        in_features = width_out
    blocks.append(DenseBlock(in_features, num_classes, activation=None, flatten=not hidden))
    return nn.Sequential(*blocks)


def vgg5(input_shape: tuple[int, int, int], num_classes: int, *, batchnorm: bool = True) -> nn.Sequential:
    """VGG5 of the FedAdapt/PipeLearn reference: conv 32, 64, 64 (pools after the first two), dense 128.

    5 blocks: conv(C→32)+BN+ReLU+pool, conv(32→64)+BN+ReLU+pool, conv(64→64)+BN+ReLU,
    dense(flat→128)+ReLU, dense(128→classes).
    """
    return make_vgg(VGG5_CONVS, (128,), input_shape, num_classes, batchnorm=batchnorm)


def vgg8(input_shape: tuple[int, int, int], num_classes: int, *, batchnorm: bool = True) -> nn.Sequential:
    """VGG8: VGG5 deepened to 5 convs and 3 dense layers.

    8 blocks: conv 32+pool, 64+pool, 64, 128+pool, 128 (each +BN+ReLU), dense(flat→256)+ReLU,
    dense(256→128)+ReLU, dense(128→classes). Flatten size: 128x4x4 for 32 px, 128x3x3 for 28 px.
    """
    return make_vgg(VGG8_CONVS, (256, 128), input_shape, num_classes, batchnorm=batchnorm)


def vgg11(
    input_shape: tuple[int, int, int], num_classes: int, *, batchnorm: bool = True, dropout: float = 0.5
) -> nn.Sequential:
    """VGG11 (configuration "A") with the small-input classifier: 8 convs, dense 512, 512, classes.

    11 blocks; dropout follows the ReLU of both hidden dense layers. 32 and 28 px inputs
    both reach 1x1x512 before the classifier (the last pool is skipped for 28 px).
    """
    return make_vgg(VGG11_CONVS, (512, 512), input_shape, num_classes, batchnorm=batchnorm, dropout=dropout)


def vgg16(
    input_shape: tuple[int, int, int], num_classes: int, *, batchnorm: bool = True, dropout: float = 0.5
) -> nn.Sequential:
    """VGG16 (configuration "D") with the small-input classifier: 13 convs, dense 512, 512, classes.

    16 blocks; dropout follows the ReLU of both hidden dense layers. 32 and 28 px inputs
    both reach 1x1x512 before the classifier (the last pool is skipped for 28 px).
    """
    return make_vgg(VGG16_CONVS, (512, 512), input_shape, num_classes, batchnorm=batchnorm, dropout=dropout)
