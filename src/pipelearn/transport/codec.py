"""Tensors to and from safetensors bytes, checked against what the receiver expects (never pickle)."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

TensorSpec = tuple[tuple[int, ...], torch.dtype]
"""The shape and dtype a received tensor must have."""


class WireError(ValueError):
    """A message does not match what the receiver expects; the text says what and why."""


_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def encode(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Safetensors bytes of named tensors (made contiguous, moved to the CPU, detached)."""
    return st_save({name: t.detach().cpu().contiguous() for name, t in tensors.items()})


def header(data: bytes) -> dict[str, TensorSpec]:
    """Names, shapes and dtypes from safetensors bytes, without reading the tensors."""
    if len(data) < 8:
        raise WireError(f"tensor payload of {len(data)} bytes is too short for a safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise WireError(f"safetensors header claims {size} bytes but only {len(data) - 8} follow")
    try:
        meta = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"safetensors header is not valid JSON: {exc}") from exc
    specs: dict[str, TensorSpec] = {}
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise WireError(f"tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        specs[name] = (tuple(int(x) for x in info["shape"]), dtype)
    return specs


def decode(data: bytes, expected: Mapping[str, TensorSpec] | None = None) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes; with `expected`, names, shapes and dtypes must match exactly."""
    if expected is not None:
        check(header(data), expected)
    try:
        return st_load(data)
    except Exception as exc:  # safetensors raises its own error types for malformed data
        raise WireError(f"tensor payload is not valid safetensors: {exc}") from exc


def check(got: Mapping[str, TensorSpec], expected: Mapping[str, TensorSpec]) -> None:
    """Raise WireError naming the first tensor whose name, shape or dtype differs from what is expected."""
    if set(got) != set(expected):
        raise WireError(f"expected tensors {sorted(expected)}, got {sorted(got)}")
    for name, (shape, dtype) in expected.items():
        got_shape, got_dtype = got[name]
        if got_shape != tuple(shape) or got_dtype != dtype:
            raise WireError(
                f"tensor {name!r} has shape {list(got_shape)} and dtype {got_dtype}; "
                f"expected shape {list(shape)} and dtype {dtype}"
            )


def spec_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """The shapes and dtypes of named tensors."""
    return {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
