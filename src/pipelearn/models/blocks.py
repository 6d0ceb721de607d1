"""Building blocks of the model zoo: each block is one unit the split point can fall between."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "hardswish"]


def make_activation(name: Activation | None) -> nn.Module:
    """Return a fresh (not in-place) activation module for ``name``; ``None`` gives identity."""
    if name is None:
        return nn.Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "hardswish":
        return nn.Hardswish()
    raise ValueError(f"unknown activation {name!r}; valid: 'relu', 'hardswish' or None")


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    groups: int = 1,
    batchnorm: bool = True,
    activation: Activation | None = "relu",
) -> list[nn.Module]:
    """Return the layers conv (+BatchNorm) (+activation), with 'same' padding for odd kernels."""
    # A convolution followed by BatchNorm needs no bias; without BatchNorm it does.
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=not batchnorm,
        )
    ]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_channels))
    if activation is not None:
        layers.append(make_activation(activation))
    return layers


class ConvBlock(nn.Sequential):
    """Conv (+BatchNorm) + activation (+2x2 max-pool) as one block."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        batchnorm: bool = True,
        activation: Activation | None = "relu",
        pool: bool = False,
    ) -> None:
        """Build the block; ``pool`` appends ``MaxPool2d(2)``."""
        layers = conv_norm_act(
            in_channels, out_channels, kernel_size, stride=stride, batchnorm=batchnorm, activation=activation
        )
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class DenseBlock(nn.Sequential):
    """[global avg-pool] [flatten] linear (+activation) (+dropout) as one block."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: Activation | None = "relu",
        dropout: float = 0.0,
        flatten: bool = False,
        global_pool: bool = False,
    ) -> None:
        """Build the block; ``flatten`` takes (N, C, H, W) input, ``global_pool`` averages over H, W first."""
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        if global_pool:
            layers.append(nn.AdaptiveAvgPool2d(1))
        if flatten or global_pool:
            layers.append(nn.Flatten())
        layers.append(nn.Linear(in_features, out_features))
        if activation is not None:
            layers.append(make_activation(activation))
        if dropout > 0.0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class _Residual(nn.Module):
    """A ResNet block: ``relu(body(x) + shortcut(x))``; subclasses build the body."""

    body: nn.Sequential
    shortcut: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(body(x) + shortcut(x))``."""
        return torch.relu(self.body(x) + self.shortcut(x))


class BasicBlock(_Residual):
    """ResNet basic block: two 3x3 convs plus a shortcut (1x1 conv when the shape changes)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, *, batchnorm: bool = True) -> None:
        """Build the block mapping ``in_channels`` to ``channels`` with the given stride."""
        super().__init__()
        out_channels = channels * self.expansion
        self.body = nn.Sequential(
            *conv_norm_act(in_channels, channels, 3, stride=stride, batchnorm=batchnorm),
            *conv_norm_act(channels, out_channels, 3, batchnorm=batchnorm, activation=None),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride, batchnorm)


class Bottleneck(_Residual):
    """ResNet bottleneck block (1x1, 3x3 with the stride, 1x1 with 4x expansion) plus a shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, *, batchnorm: bool = True) -> None:
        """Build the block mapping ``in_channels`` to ``4 * channels`` with the given stride."""
        super().__init__()
        out_channels = channels * self.expansion
        self.body = nn.Sequential(
            *conv_norm_act(in_channels, channels, 1, batchnorm=batchnorm),
            *conv_norm_act(channels, channels, 3, stride=stride, batchnorm=batchnorm),
            *conv_norm_act(channels, out_channels, 1, batchnorm=batchnorm, activation=None),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride, batchnorm)


def _shortcut(in_channels: int, out_channels: int, stride: int, batchnorm: bool) -> nn.Module:
    """Return identity, or a strided 1x1 conv (+BatchNorm) where the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        *conv_norm_act(in_channels, out_channels, 1, stride=stride, batchnorm=batchnorm, activation=None)
    )


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below 90% of it (as in MobileNet)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation as in MobileNetV3: avg-pool, 1x1 reduce + ReLU, 1x1 expand + hard-sigmoid."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        """Build the gate for ``channels`` channels through a ``squeeze_channels`` bottleneck."""
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` scaled channel-wise by the learned gate."""
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV3 bneck: 1x1 expand, depthwise kxk, optional SE, 1x1 project, residual when shapes match."""

    def __init__(
        self,
        in_channels: int,
        kernel_size: int,
        expanded_channels: int,
        out_channels: int,
        use_se: bool,
        activation: Activation,
        stride: int,
        *,
        batchnorm: bool = True,
    ) -> None:
        """Build one row of the MobileNetV3 tables (k, exp size, #out, SE, NL, s)."""
        super().__init__()
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded_channels != in_channels:
            layers += conv_norm_act(in_channels, expanded_channels, 1, batchnorm=batchnorm, activation=activation)
        layers += conv_norm_act(
            expanded_channels,
            expanded_channels,
            kernel_size,
            stride=stride,
            groups=expanded_channels,
            batchnorm=batchnorm,
            activation=activation,
        )
        if use_se:
            layers.append(SqueezeExcite(expanded_channels, make_divisible(expanded_channels / 4)))
        layers += conv_norm_act(expanded_channels, out_channels, 1, batchnorm=batchnorm, activation=None)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``body(x)``, plus ``x`` when the block keeps the shape."""
        out = self.body(x)
        return out + x if self.use_residual else out


def check_model_args(input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, int, int]:
    """Validate a model's (C, H, W) input shape and class count; return the shape as a tuple of ints."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"input_shape must be three positive ints (C, H, W), got {input_shape!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return shape[0], shape[1], shape[2]


@torch.no_grad()
def output_shape(blocks: list[nn.Module], input_shape: tuple[int, int, int]) -> torch.Size:
    """Return the per-sample output shape of ``blocks`` for a (C, H, W) input, via one dummy forward."""
    net = nn.Sequential(*blocks)
    modes = [(m, m.training) for m in net.modules()]
    # Eval mode: a 1-sample batch must neither trip BatchNorm nor touch its running statistics.
    net.eval()
    try:
        out = net(torch.zeros(1, *input_shape))
    finally:
        for module, mode in modes:
            module.training = mode
    return out.shape[1:]
