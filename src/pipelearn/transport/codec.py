"""Tensors to and from safetensors bytes, checked against what the receiver expects (never pickle)."""

from __future__ import annotations

import json
import math
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


MAX_HEADER_BYTES = 1 << 20
"""The longest safetensors header accepted: ample for the state dict of any zoo model (hundreds of tensors)."""

_ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "F16": 2, "BF16": 2, "I32": 4, "F32": 4, "I64": 8, "F64": 8}


def header(data: bytes) -> dict[str, TensorSpec]:
    """Names, shapes and dtypes from safetensors bytes, without reading the tensors.

    The header must describe the payload exactly: every tensor's bytes lie where its offsets say, in order,
    without gaps or overlaps, and fill the payload; anything else is a WireError that says what is wrong.
    """
    if len(data) < 8:
        raise WireError(f"tensor payload of {len(data)} bytes is too short for a safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER_BYTES:
        raise WireError(f"safetensors header claims {size} bytes, more than the {MAX_HEADER_BYTES} allowed")
    if size > len(data) - 8:
        raise WireError(f"safetensors header claims {size} bytes but only {len(data) - 8} follow (truncated)")
    try:
        meta = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WireError(f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise WireError(f"safetensors header is a JSON {type(meta).__name__}, not an object")
    specs: dict[str, TensorSpec] = {}
    extents: list[tuple[int, int, str]] = []
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        shape, dtype, begin, end = _entry(name, info)
        specs[name] = (shape, _DTYPES[dtype])
        extents.append((begin, end, name))
    reach = 0
    for begin, end, name in sorted(extents):
        if begin != reach:
            raise WireError(f"tensor {name!r} starts at byte {begin} of the data, but the data before ends at {reach}")
        reach = end
    if reach != len(data) - 8 - size:
        raise WireError(f"the header's tensors fill {reach} bytes but {len(data) - 8 - size} bytes of data follow it")
    return specs


def _entry(name: str, info: object) -> tuple[tuple[int, ...], str, int, int]:
    if not isinstance(info, dict):
        raise WireError(f"safetensors header entry {name!r} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise WireError(f"tensor {name!r} has unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_natural(x) for x in shape):
        raise WireError(f"tensor {name!r} has shape {shape!r}; expected a list of whole numbers of 0 or more")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_natural(x) for x in offsets)):
        raise WireError(f"tensor {name!r} has data_offsets {offsets!r}; expected [begin, end]")
    begin, end = offsets
    elements = math.prod(shape)
    if end - begin != elements * _ITEM_BYTES[dtype]:
        raise WireError(
            f"tensor {name!r} of shape {shape} and dtype {dtype} needs {elements * _ITEM_BYTES[dtype]} bytes, "
            f"but its data_offsets span {end - begin}"
        )
    return tuple(shape), dtype, begin, end


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def decode(
    data: bytes, expected: Mapping[str, TensorSpec] | None = None, *, finite: bool = True
) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes, the header checked first; with `expected`, names, shapes and dtypes must
    match exactly; with `finite` (the default), a floating-point tensor holding NaN or Inf is refused."""
    specs = header(data)
    if expected is not None:
        check(specs, expected)
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error types for malformed data
        raise WireError(f"tensor payload is not valid safetensors: {exc}") from exc
    if finite:
        check_finite(tensors)
    return tensors


def check_finite(tensors: Mapping[str, torch.Tensor], what: str = "tensor") -> None:
    """Raise WireError naming the first floating-point tensor that holds NaN or Inf."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WireError(f"{what} {name!r} holds NaN or Inf values")


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
