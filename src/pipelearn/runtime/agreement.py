"""Device and server agree on what they train, without either importing code because the other said so.

A device builds only the model and data set its own command line names: where the plan names a plug-in, the device
must have been started with the same one. Before training, the server holds each device's fingerprint (sent with
READY: the tensor names, shapes and dtypes of its part, its samples' shape and class count) against its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from pipelearn.config import RunConfig
from pipelearn.data import canonical_name
from pipelearn.models import canonical_model_name
from pipelearn.plugins import PluginError, is_plugin, same

Fingerprint = dict[str, Any]
"""JSON: {"tensors": {name: [shape, dtype]}, "input_shape": [C, H, W], "num_classes": K}."""

MAX_LISTED = 6
"""Differences named in one refusal; the rest are counted."""


def adopt(config: RunConfig, model: str | None, dataset: str | None) -> RunConfig:
    """The plan's configuration with this device's own model and data set; PluginError if they disagree with it."""
    return dataclasses.replace(
        config,
        model=_agree("model", config.model, model, canonical_model_name),
        dataset=_agree("dataset", config.dataset, dataset, canonical_name),
    )


def _agree(key: str, planned: str, own: str | None, canonical: Callable[[str], str]) -> str:
    if own is None:
        if is_plugin(planned):
            raise PluginError(
                f"the server's run uses the {key} plug-in {planned!r}, and a device imports only code that its own "
                f"command line names: start this device with --{key} {planned}"
            )
        return planned
    if is_plugin(planned) and is_plugin(own):
        agree = same(planned, own)
    else:
        agree = not is_plugin(planned) and not is_plugin(own) and canonical(planned) == canonical(own)
    if not agree:
        raise PluginError(
            f"the server's run uses {key} {planned!r} but this device was started with --{key} {own}: start it "
            f"with the server's {key}"
        )
    return own


def fingerprint(part: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> Fingerprint:
    """What a device declares about what it trains: its part's tensors, its samples' shape and the class count."""
    return {
        "tensors": {
            name: [list(t.shape), str(t.dtype).removeprefix("torch.")] for name, t in part.state_dict().items()
        },
        "input_shape": list(input_shape),
        "num_classes": num_classes,
    }


def differences(expected: Fingerprint, got: object) -> list[str]:
    """How a device's fingerprint differs from the server's, in words (empty when they match)."""
    if not isinstance(got, dict) or not isinstance(got.get("tensors"), dict):
        return ["it sent no fingerprint of its model part with READY"]
    found: list[str] = []
    for key, what in (("input_shape", "samples of shape"), ("num_classes", "classes")):
        if got.get(key) != expected[key]:
            found.append(f"{what}: the server's {expected[key]}, the device's {got.get(key)}")
    mine, theirs = expected["tensors"], got["tensors"]
    missing = [name for name in mine if name not in theirs]
    extra = [name for name in theirs if name not in mine]
    if missing:
        found.append(f"tensors the device lacks: {', '.join(missing)}")
    if extra:
        found.append(f"tensors only the device has: {', '.join(map(str, extra))}")
    for name, spec in mine.items():
        if name in theirs and theirs[name] != spec:
            found.append(f"tensor {name!r}: the server's {_spec(spec)}, the device's {_spec(theirs[name])}")
    if len(found) > MAX_LISTED:
        found = [*found[:MAX_LISTED], f"and {len(found) - MAX_LISTED} more"]
    return found


def _spec(spec: object) -> str:
    if isinstance(spec, list) and len(spec) == 2:
        return f"{spec[1]} {spec[0]}"
    return repr(spec)


def refusal(device: int, found: list[str]) -> str:
    """The reason given to a device whose fingerprint differs from the server's."""
    return (
        f"device {device} does not train what the server expects ({'; '.join(found)}): start it with the server's "
        "--model and --dataset, and the same version of their code"
    )
