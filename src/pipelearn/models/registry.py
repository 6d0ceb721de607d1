"""Model registry: build any zoo model by name for a given input shape and class count."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pipelearn.models.mobilenet import mobilenetv3_large, mobilenetv3_small
from pipelearn.models.resnet import resnet18, resnet50
from pipelearn.models.vgg import vgg5, vgg8, vgg11, vgg16

Builder = Callable[..., nn.Sequential]

MODEL_NAMES: tuple[str, ...] = (
    "vgg5",
    "vgg8",
    "vgg11",
    "vgg16",
    "resnet18",
    "resnet50",
    "mobilenetv3-small",
    "mobilenetv3-large",
)

_BUILDERS: dict[str, Builder] = dict(
    zip(
        MODEL_NAMES,
        (vgg5, vgg8, vgg11, vgg16, resnet18, resnet50, mobilenetv3_small, mobilenetv3_large),
        strict=True,
    )
)


def _squash(name: str) -> str:
    """Return ``name`` lower-cased without '-', '_' and spaces, for lenient matching."""
    return "".join(c for c in name.lower() if c not in "-_ ")


_BY_SQUASHED = {_squash(name): name for name in MODEL_NAMES}


def canonical_model_name(name: str) -> str:
    """Return the entry of MODEL_NAMES that ``name`` denotes (any case, '-' or '_'), or raise ValueError."""
    canonical = _BY_SQUASHED.get(_squash(name)) if isinstance(name, str) else None
    if canonical is None:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    return canonical


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, *, batchnorm: bool = True
) -> nn.Sequential:
    """Build zoo model ``name`` for (C, H, W) inputs and ``num_classes`` classes, keyed "0".."L-1"."""
    return _BUILDERS[canonical_model_name(name)](input_shape, num_classes, batchnorm=batchnorm)
