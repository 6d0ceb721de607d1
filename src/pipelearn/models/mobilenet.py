"""MobileNetV3-Small and -Large (Howard et al., 2019) as sequences of blocks, adapted to small inputs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pipelearn.models.blocks import (
    Activation,
    ConvBlock,
    DenseBlock,
    InvertedResidual,
    check_model_args,
)

# One bneck row of the paper's Tables 1 and 2: kernel, expansion size, out channels, SE, activation, stride.
BneckRow = tuple[int, int, int, bool, Activation, int]

LARGE_BNECKS: tuple[BneckRow, ...] = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
)
SMALL_BNECKS: tuple[BneckRow, ...] = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", 1),
    (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1),
    (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1),
    (5, 576, 96, True, "hardswish", 1),
)

# Inputs smaller than this get a stride-1 stem, so 28/32 px images keep a 2x2 map at the last stage.
SMALL_INPUT_PX = 64


def make_mobilenetv3(
    bnecks: Sequence[BneckRow],
    last_channels: int,
    head_channels: int,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    batchnorm: bool = True,
) -> nn.Sequential:
    """Build a MobileNetV3: stem, one block per bneck, last 1x1 conv, then two classifier blocks.

    The stem is a 3x3 conv (16) + hard-swish with stride 2, or stride 1 for inputs under 64 px.
    The classifier is global avg-pool + flatten + linear(``head_channels``) + hard-swish (the paper's
    1x1 conv without BatchNorm on the pooled map), then linear to the classes; no dropout.
    """
    channels, height, width = check_model_args(input_shape, num_classes)
    stem_stride = 1 if min(height, width) < SMALL_INPUT_PX else 2
    stem_channels = 16
    blocks: list[nn.Module] = [
        ConvBlock(channels, stem_channels, 3, stride=stem_stride, batchnorm=batchnorm, activation="hardswish")
    ]
    in_channels = stem_channels
    for kernel, expanded, out, use_se, activation, stride in bnecks:
        blocks.append(
            InvertedResidual(in_channels, kernel, expanded, out, use_se, activation, stride, batchnorm=batchnorm)
        )
        in_channels = out
    blocks.append(ConvBlock(in_channels, last_channels, 1, batchnorm=batchnorm, activation="hardswish"))
    blocks.append(DenseBlock(last_channels, head_channels, activation="hardswish", global_pool=True))
    blocks.append(DenseBlock(head_channels, num_classes, activation=None))
    return nn.Sequential(*blocks)


def mobilenetv3_small(input_shape: tuple[int, int, int], num_classes: int, *, batchnorm: bool = True) -> nn.Sequential:
    """MobileNetV3-Small: 15 blocks = stem, 11 bnecks, conv 576, pooled dense 1024, dense classes.

    As in torchvision, the last conv has no SE (Table 2 of the paper lists one there).
    """
    return make_mobilenetv3(SMALL_BNECKS, 576, 1024, input_shape, num_classes, batchnorm=batchnorm)


def mobilenetv3_large(input_shape: tuple[int, int, int], num_classes: int, *, batchnorm: bool = True) -> nn.Sequential:
    """MobileNetV3-Large: 19 blocks = stem, 15 bnecks, conv 960, pooled dense 1280, dense classes."""
    return make_mobilenetv3(LARGE_BNECKS, 960, 1280, input_shape, num_classes, batchnorm=batchnorm)
