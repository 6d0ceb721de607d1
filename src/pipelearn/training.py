"""The arithmetic every trainer shares: the loss, the optimizer, warm-up, FedAvg and test accuracy."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipelearn.config import RunConfig
from pipelearn.data import Dataset, iterate_batches, select_subset


def scaled_loss(logits: torch.Tensor, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cross-entropy summed over a micro-batch and divided by its mini-batch's size.

    Summed over the micro-batches of a mini-batch, these give the mini-batch's mean loss, so accumulated gradients
    equal the mini-batch's whatever the micro-batch sizes.
    """
    return F.cross_entropy(logits, labels, reduction="sum") / batch_size


def make_optimizer(module: nn.Module, config: RunConfig) -> torch.optim.Optimizer | None:
    """SGD with the run's learning rate and momentum, or None for a part without parameters."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum) if params else None


def on_new_weights(optimizer: torch.optim.Optimizer | None, config: RunConfig) -> None:
    """Apply the run's `optimizer_state` after the weights of the optimizer's part were replaced from the network."""
    if optimizer is not None and config.optimizer_state == "reset":
        optimizer.state.clear()


def warm_up(part: nn.Module, config: RunConfig, input_shape: tuple[int, ...], microbatches: int) -> None:
    """Pay one-off costs (lazy imports, first-call allocation) on a throw-away copy of `part`, leaving it untouched.

    A forward, backward and optimizer step of the copy on zeros at the sizes training will use: a whole mini-batch
    and a micro-batch (each at least 2 samples, for BatchNorm).
    """
    twin = copy.deepcopy(part).train()
    optimizer = make_optimizer(twin, config)
    where = next((t.device for t in twin.state_dict().values()), torch.device("cpu"))
    for batch in sorted({config.batch_size, -(-config.batch_size // max(microbatches, 1))}):
        out = twin(torch.zeros(max(batch, 2), *input_shape, device=where, requires_grad=True))
        out.backward(torch.ones_like(out))
        if optimizer is not None:
            optimizer.step()


def carry_momentum(
    old: torch.optim.Optimizer | None, old_part: nn.Module, new: torch.optim.Optimizer | None, new_part: nn.Module
) -> None:
    """After a re-plan moved blocks between a device and the server: the state of each parameter that stayed on this
    side goes over to the new part's optimizer; a block that moved here starts without any (on either side alike)."""
    if old is None or new is None:
        return
    before = dict(old_part.named_parameters())
    for name, p in new_part.named_parameters():
        if name in before and before[name] in old.state:
            new.state[p] = {
                k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in old.state[before[name]].items()
            }


def optimizer_tensors(optimizer: torch.optim.Optimizer | None, part: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of an optimizer's state tensors on the CPU, each named 'PARAMETER/KEY' after its part's parameter (SGD:
    each parameter's momentum buffer, once it has one)."""
    if optimizer is None:
        return {}
    tensors = {}
    for name, p in part.named_parameters():
        for key, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{key}"] = value.detach().to("cpu", copy=True).contiguous()
    return tensors


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer | None, part: nn.Module, tensors: Mapping[str, torch.Tensor]
) -> None:
    """Replace an optimizer's state with `tensors` (as `optimizer_tensors` names them). State of a parameter this part
    does not have is left out, and a parameter without any starts afresh, as `carry_momentum` does after a re-plan;
    ValueError, leaving the state as it was, where a tensor does not fit its parameter."""
    parameters = dict(part.named_parameters())
    state: dict[nn.Parameter, dict[str, torch.Tensor]] = {}
    for label, value in tensors.items():
        name, _, key = label.rpartition("/")
        p = parameters.get(name)
        if p is None or not key:
            continue
        if value.shape != p.shape or not value.is_floating_point():
            raise ValueError(
                f"optimizer state {label!r} has shape {list(value.shape)}; its parameter has {list(p.shape)}"
            )
        state.setdefault(p, {})[key] = value.to(device=p.device, dtype=p.dtype, copy=True)
    if optimizer is None:
        return
    optimizer.state.clear()
    for p, entry in state.items():
        optimizer.state[p] = entry


def fedavg(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Average state dicts weighted by `weights` (sample counts); integer buffers are taken from the first."""
    if not states or len(states) != len(weights):
        raise ValueError(f"fedavg needs one weight per state dict; got {len(states)} states, {len(weights)} weights")
    keys = set(states[0])
    for state in states[1:]:
        if set(state) != keys:
            raise ValueError(f"state dicts differ in keys: {sorted(keys ^ set(state))}")
    total = float(sum(weights))
    averaged: dict[str, torch.Tensor] = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = torch.zeros_like(first, dtype=torch.float64)
            for state, w in zip(states, weights, strict=True):
                acc += state[key].to(torch.float64) * (w / total)
            averaged[key] = acc.to(first.dtype)
        else:
            averaged[key] = first.clone()
    return averaged


def evaluate(
    model: nn.Module, test: Dataset, samples: int | None = None, seed: int = 0, batch_size: int = 500
) -> float:
    """The fraction of (a seeded subset of) the test split that the model classifies right."""
    indices = (
        np.arange(len(test)) if samples is None or samples >= len(test) else select_subset(len(test), samples, seed)
    )
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in iterate_batches(test, indices, batch_size, seed=seed, epoch=0, train=False, shuffle=False):
            correct += int((model(x).argmax(dim=1) == y).sum())
    return correct / len(indices)
