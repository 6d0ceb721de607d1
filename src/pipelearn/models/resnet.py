"""CIFAR-style ResNet18 and ResNet50: stem, one block per residual block, then a pooled linear head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pipelearn.models.blocks import BasicBlock, Bottleneck, ConvBlock, DenseBlock, check_model_args

STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)


def make_resnet(
    block: type[BasicBlock | Bottleneck],
    depths: Sequence[int],
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    batchnorm: bool = True,
) -> nn.Sequential:
    """Build a ResNet with ``depths[i]`` residual blocks in stage i (widths 64..512).

    The stem is a 3x3 stride-1 conv (+BN) + ReLU with no max-pool (CIFAR style); the head is
    global average pool + flatten + linear, so any input of at least 1x1 works.
    """
    channels, _, _ = check_model_args(input_shape, num_classes)
    blocks: list[nn.Module] = [ConvBlock(channels, STAGE_WIDTHS[0], 3, batchnorm=batchnorm)]
    in_channels = STAGE_WIDTHS[0]
    for width, stride, depth in zip(STAGE_WIDTHS, STAGE_STRIDES, depths, strict=True):
        for i in range(depth):
            blocks.append(block(in_channels, width, stride if i == 0 else 1, batchnorm=batchnorm))
            in_channels = width * block.expansion
    blocks.append(DenseBlock(in_channels, num_classes, activation=None, global_pool=True))
    return nn.Sequential(*blocks)


def resnet18(input_shape: tuple[int, int, int], num_classes: int, *, batchnorm: bool = True) -> nn.Sequential:
    """ResNet18 (CIFAR stem): 10 blocks = stem, 8 basic blocks (2, 2, 2, 2), head."""
    return make_resnet(BasicBlock, (2, 2, 2, 2), input_shape, num_classes, batchnorm=batchnorm)


def resnet50(input_shape: tuple[int, int, int], num_classes: int, *, batchnorm: bool = True) -> nn.Sequential:
    """ResNet50 (CIFAR stem): 18 blocks = stem, 16 bottlenecks (3, 4, 6, 3), head."""
    return make_resnet(Bottleneck, (3, 4, 6, 3), input_shape, num_classes, batchnorm=batchnorm)
