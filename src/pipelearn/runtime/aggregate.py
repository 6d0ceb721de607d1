"""FedAvg: the sample-weighted average of full models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


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
