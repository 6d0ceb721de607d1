"""Split a sequence of blocks into a device part and a server part that share the model's modules."""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TypeAlias

from torch import nn

ModelLike: TypeAlias = nn.Sequential | nn.ModuleList | Sequence[nn.Module]


def as_blocks(model: ModelLike) -> nn.Sequential:
    """Return ``model`` as an ``nn.Sequential`` whose children are keyed "0".."L-1", sharing the modules.

    A zoo model (already keyed "0".."L-1") is returned as is. Any other ``nn.Sequential``,
    ``nn.ModuleList`` or list of modules is wrapped in a new ``nn.Sequential`` whose i-th child is
    the i-th module, re-keyed ``str(i)``: state_dict keys then read "0.weight" rather than, say,
    "conv1.weight". The children are applied in order, so a container whose ``forward`` does
    anything else than chaining its children cannot be split this way.
    """
    if isinstance(model, nn.Sequential):
        if list(model._modules) == [str(i) for i in range(len(model))]:
            return model
        blocks = _keyed(list(model), range(len(model)))
        blocks.training = model.training
        return blocks
    if isinstance(model, nn.Module) and not isinstance(model, nn.ModuleList):
        raise TypeError(
            f"cannot split a {type(model).__name__}: pass an nn.Sequential, nn.ModuleList or list of modules"
        )
    modules = list(model)
    for i, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            raise TypeError(f"block {i} is a {type(module).__name__}, not an nn.Module")
    return _keyed(modules, range(len(modules)))


def num_blocks(model: ModelLike) -> int:
    """Return the number of blocks L of ``model``, so that valid split points are 0..L."""
    return len(as_blocks(model))


def split(model: ModelLike, p: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Split ``model`` after its first ``p`` blocks into ``(device_part, server_part)``.

    The device part holds blocks 0..p-1 keyed "0".."p-1", the server part blocks p..L-1 keyed
    "p".."L-1": both share the model's modules (nothing is copied), so training either part
    trains the model, and the union of the parts' ``state_dict()`` is the model's, key for key.
    ``p = 0`` puts everything on the server, ``p = L`` everything on the device; an empty part
    is an empty ``nn.Sequential``, which returns its input. ``model`` is a zoo model, any
    ``nn.Sequential`` (children re-keyed "0".."L-1", see :func:`as_blocks`), an ``nn.ModuleList``
    or a list of modules.

    Example, with a user's own model::

        >>> from collections import OrderedDict
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(OrderedDict(
        ...     conv=nn.Conv2d(1, 8, 3), act=nn.ReLU(), flat=nn.Flatten(), fc=nn.Linear(8 * 26 * 26, 10)))
        >>> device, server = split(net, 2)
        >>> list(device.state_dict()), list(server.state_dict())
        (['0.weight', '0.bias'], ['3.weight', '3.bias'])
        >>> x = torch.randn(4, 1, 28, 28)
        >>> torch.equal(server(device(x)), net(x))
        True
    """
    blocks = as_blocks(model)
    count = len(blocks)
    if isinstance(p, bool):
        raise TypeError("split point p must be an int, got bool")
    p = operator.index(p)
    if not 0 <= p <= count:
        raise ValueError(f"split point p={p} is out of range: valid range is 0..{count} for {count} blocks")
    modules = list(blocks)
    device, server = _keyed(modules, range(p)), _keyed(modules, range(p, count))
    device.training = server.training = blocks.training
    return device, server


def _keyed(blocks: Sequence[nn.Module], indices: Iterable[int]) -> nn.Sequential:
    """Return an ``nn.Sequential`` of ``blocks[i]`` keyed ``str(i)`` for i in ``indices``."""
    return nn.Sequential(OrderedDict((str(i), blocks[i]) for i in indices))
