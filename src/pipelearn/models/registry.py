"""Model registry: build a zoo model by name, or a plug-in by MODULE:FUNCTION, for an input shape and class count."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from pipelearn.models.mobilenet import mobilenetv3_large, mobilenetv3_small
from pipelearn.models.resnet import resnet18, resnet50
from pipelearn.models.splitting import as_blocks
from pipelearn.models.vgg import vgg5, vgg8, vgg11, vgg16
from pipelearn.plugins import PluginError, is_plugin, load

Builder = Callable[..., nn.Sequential]


class ModelFactory(Protocol):
    """A model plug-in: called with one sample's shape (C, H, W) and the class count, it returns the model's blocks.

    The blocks are an ``nn.Sequential`` (its children, in order) or a list of modules; split points are the
    boundaries between them, and the last block outputs one logit per class. Every process calls it after seeding
    torch with the run's seed, so it must build the same network each time.
    """

    def __call__(self, input_shape: tuple[int, int, int], num_classes: int, /) -> nn.Sequential | Sequence[nn.Module]:
        """Build the model."""
        ...


class ModelError(ValueError):
    """A model does not fit the data: one sample fails in a block, or the output is not one logit per class."""


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
    """Return the entry of MODEL_NAMES that ``name`` denotes (any case, '-' or '_'), a plug-in name as is, or raise."""
    if is_plugin(name):
        return name
    canonical = _BY_SQUASHED.get(_squash(name)) if isinstance(name, str) else None
    if canonical is None:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}, or a plug-in MODULE:FUNCTION")
    return canonical


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, *, batchnorm: bool = True
) -> nn.Sequential:
    """Build zoo model ``name``, or plug-in MODULE:FUNCTION, for (C, H, W) inputs and ``num_classes`` classes.

    The model comes keyed "0".."L-1", and one sample of ``input_shape`` has been probed through it: ModelError if
    it does not fit, PluginError if a plug-in cannot be imported or returns something that cannot be split.
    ``batchnorm`` applies to the zoo only.
    """
    if is_plugin(name):
        model = _build_plugin(name, input_shape, num_classes)
    else:
        model = _BUILDERS[canonical_model_name(name)](input_shape, num_classes, batchnorm=batchnorm)
    check_fits(model, input_shape, num_classes, name)
    return model


def _build_plugin(spec: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    factory = load(spec, "model")
    try:
        built = factory(input_shape, num_classes)
    except Exception as exc:
        raise PluginError(
            f"model plug-in {spec!r} raised {type(exc).__name__} when called with input shape {input_shape} and "
            f"{num_classes} classes: {exc}"
        ) from exc
    try:
        model = as_blocks(built)
    except TypeError as exc:
        raise PluginError(
            f"model plug-in {spec!r} returned {_describe(built)}, which cannot be split into blocks ({exc}); "
            "return an nn.Sequential or a list of nn.Module blocks (split points are the boundaries between them)"
        ) from None
    if len(model) == 0:
        raise PluginError(f"model plug-in {spec!r} returned no blocks; return at least one nn.Module")
    return model


def _describe(value: object) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def check_fits(model: nn.Sequential, input_shape: tuple[int, ...], num_classes: int, name: str = "model") -> None:
    """Probe one zero sample of ``input_shape`` through ``model``, block by block; ModelError names what fails."""
    was_training = model.training
    model.eval()  # BatchNorm statistics stay untouched
    x: object = torch.zeros(1, *input_shape)
    try:
        with torch.no_grad():
            for i, block in enumerate(model):
                try:
                    x = block(x)
                except Exception as exc:
                    shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else x
                    raise ModelError(
                        f"model {name!r} does not fit the data set's samples of shape {tuple(input_shape)}: block {i} "
                        f"({type(block).__name__}) fails on its input of shape {shape}: {exc}"
                    ) from None
                if not isinstance(x, torch.Tensor):
                    raise ModelError(f"model {name!r}: block {i} returns {_describe(x)}, not a tensor")
    finally:
        model.train(was_training)
    assert isinstance(x, torch.Tensor)
    if tuple(x.shape) != (1, num_classes):
        raise ModelError(
            f"model {name!r} outputs shape {tuple(x.shape[1:])} for one sample of shape {tuple(input_shape)}; the "
            f"data set has {num_classes} classes, so the last block must output {num_classes} logits"
        )
