"""Where a process computes (cpu, a CUDA GPU, Apple's mps) and mixed precision; tensors cross to the CPU at the edges.

Everything that leaves a process (the wire, FedAvg, results) is on the CPU; only training runs on the accelerator.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

import torch

from pipelearn.config import COMPUTE_SETTING, ConfigError

COMPUTE_PATTERN = re.compile(COMPUTE_SETTING)
"""What a compute setting may say."""


def resolve_device(spec: str, setting: str = "server_device") -> torch.device:
    """The torch device that `spec` (auto, cpu, cuda, cuda:N or mps) names here; ConfigError if it is not here."""
    if not isinstance(spec, str) or not COMPUTE_PATTERN.fullmatch(spec):
        raise ConfigError(f"{setting} is {spec!r}; expected auto, cpu, cuda, cuda:N or mps")
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise ConfigError(f"{setting} is 'mps' but torch sees no Apple GPU (mps) here; use cpu or auto")
        return torch.device("mps")
    if not torch.cuda.is_available():
        built = torch.version.cuda
        why = f"this torch is built for CUDA {built} but sees no GPU" if built else "this torch is a CPU-only build"
        raise ConfigError(f"{setting} is {spec!r} but torch sees no CUDA GPU ({why}); use cpu or auto")
    device = torch.device(spec)
    index = device.index if device.index is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"{setting} is {spec!r} but torch sees {count} CUDA GPU(s), numbered 0..{count - 1}")
    return torch.device("cuda", index)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def check_amp(device: torch.device, amp: str) -> None:
    """Refuse mixed precision `amp` ("off" or "bf16") where `device` cannot run it, saying why."""
    if amp == "off":
        return
    if amp != "bf16":
        raise ConfigError(f"server_amp is {amp!r}; expected off or bf16")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise ConfigError(f"server_amp bf16: the GPU {name} does not support bfloat16; use server_amp off")
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        raise ConfigError(f"server_amp bf16: torch has no mixed precision on {device.type}; use server_amp off")


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """A context in which forward passes run in bfloat16 where `amp` is "bf16", else one that changes nothing."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_device(tensors: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Named tensors moved onto `device` (after decoding what arrived)."""
    return {name: t.to(device) for name, t in tensors.items()}


def to_cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Named tensors detached and moved to the CPU (before encoding, averaging or saving them)."""
    return {name: t.detach().cpu() for name, t in tensors.items()}


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (CUDA runs asynchronously), so that timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
