"""Compressed forms of float tensors for the wire (fp16, bf16, int8, top-k), their exact sizes and their checks.

A codec replaces each floating-point tensor of a message by the tensors of its compressed form; other tensors
(labels, counters) travel as they are. Everything is still safetensors. The receiver derives, from the logical
shape and dtype it expects, the exact form it must receive, and refuses anything else by name (WireError).

| codec  | what carries a float tensor `n`                                   | error of an element             |
|--------|-------------------------------------------------------------------|---------------------------------|
| none   | `n` as it is                                                      | none                            |
| fp16   | `n` as float16 (saturated at +-65504)                             | at most |x| * 2^-11, or 2^-25   |
| bf16   | `n` as bfloat16                                                   | at most |x| * 2^-8              |
| int8   | `n@int8`: codes q in -128..127, shaped like `n`; `n@scale` and    | at most half its block's scale  |
|        | `n@zero`: float32, one per block of 256 elements of the flattened |                                 |
|        | tensor; x = zero + scale * (q + 128) (zero is the block's minimum)|                                 |
| topk:R | `n@idx`: the flat indices of the ceil(R * size) entries largest   | the dropped entries, in full    |
|        | in magnitude, strictly increasing; `n@val`: their values          |                                 |

(fp16's bound is relative in its normal range, 6.1e-5 to 65504, and absolute below it.) What a codec does over a
stream of messages (error feedback for weights) is `pipelearn.transport.channel`'s part.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from pipelearn.config import parse_codec
from pipelearn.transport.codec import TensorSpec, WireError, decode, encode

INT8_BLOCK = 256
"""Elements per int8 block: each block of the flattened tensor has its own scale and zero point."""

_FP16_MAX = 65504.0


@dataclass(frozen=True)
class Codec:
    """A compression: its name (none, fp16, bf16, int8, topk) and, for topk, the fraction of entries kept."""

    name: str = "none"
    ratio: float = 1.0

    @classmethod
    def parse(cls, text: str | Codec) -> Codec:
        """A codec from its setting ('none', 'fp16', 'bf16', 'int8', 'topk:R'); ValueError says what is wrong."""
        if isinstance(text, Codec):
            return text
        return cls(*parse_codec(text))

    def __str__(self) -> str:
        return f"topk:{self.ratio}" if self.name == "topk" else self.name


def kept(numel: int, ratio: float) -> int:
    """How many entries top-k keeps of `numel`: ceil(ratio * numel), at least one of a non-empty tensor."""
    return min(numel, max(1, math.ceil(round(ratio * numel, 6)))) if numel else 0


def wire_form(codec: Codec, name: str, shape: Sequence[int], dtype: torch.dtype) -> dict[str, TensorSpec]:
    """The names, shapes and dtypes of the tensors that carry one logical tensor under a codec."""
    shape = tuple(shape)
    if codec.name == "none" or not dtype.is_floating_point:
        return {name: (shape, dtype)}
    if codec.name == "fp16":
        return {name: (shape, torch.float16)}
    if codec.name == "bf16":
        return {name: (shape, torch.bfloat16)}
    numel = math.prod(shape)
    if codec.name == "int8":
        blocks = -(-numel // INT8_BLOCK)
        return {
            f"{name}@int8": (shape, torch.int8),
            f"{name}@scale": ((blocks,), torch.float32),
            f"{name}@zero": ((blocks,), torch.float32),
        }
    if codec.name == "topk":
        k = kept(numel, codec.ratio)
        return {f"{name}@idx": ((k,), _index_dtype(numel)), f"{name}@val": ((k,), dtype)}
    raise ValueError(f"unknown codec {codec.name!r}")


def compress(codec: Codec, name: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors that carry `x` (named `name`) under a codec, as `wire_form` describes them."""
    x = x.detach().cpu()
    if codec.name == "none" or not x.is_floating_point():
        return {name: x}
    if codec.name == "fp16":
        return {name: x.clamp(-_FP16_MAX, _FP16_MAX).to(torch.float16)}
    if codec.name == "bf16":
        return {name: x.to(torch.bfloat16)}
    if codec.name == "int8":
        q, scale, zero = _quantise(x)
        return {f"{name}@int8": q, f"{name}@scale": scale, f"{name}@zero": zero}
    if codec.name == "topk":
        flat = x.reshape(-1)
        k = kept(flat.numel(), codec.ratio)
        index = torch.topk(flat.abs(), k, sorted=False).indices.sort().values
        return {f"{name}@idx": index.to(_index_dtype(flat.numel())), f"{name}@val": flat[index].clone()}
    raise ValueError(f"unknown codec {codec.name!r}")


def decompress(
    codec: Codec, name: str, parts: Mapping[str, torch.Tensor], shape: Sequence[int], dtype: torch.dtype
) -> torch.Tensor:
    """The logical tensor from its compressed form (whose shapes and dtypes are already checked); WireError if bad."""
    shape = tuple(shape)
    if codec.name == "none" or not dtype.is_floating_point:
        return parts[name]
    if codec.name in ("fp16", "bf16"):
        return parts[name].to(dtype)
    if codec.name == "int8":
        scale, zero = parts[f"{name}@scale"], parts[f"{name}@zero"]
        _check_finite(name, "scale", scale, at_least_zero=True)
        _check_finite(name, "zero point", zero, at_least_zero=False)
        return _dequantise(parts[f"{name}@int8"], scale, zero, shape, dtype)
    if codec.name == "topk":
        index, values = parts[f"{name}@idx"], parts[f"{name}@val"]
        numel = math.prod(shape)
        _check_indices(name, index, numel)
        out = torch.zeros(numel, dtype=dtype)
        out[index.long()] = values
        return out.reshape(shape)
    raise ValueError(f"unknown codec {codec.name!r}")


def compress_all(codecs: Mapping[str, Codec], tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The compressed forms of named tensors, each under its own codec, in one mapping."""
    parts: dict[str, torch.Tensor] = {}
    for name, x in tensors.items():
        _merge(parts, compress(codecs[name], name, x))
    return parts


def wire_forms(codecs: Mapping[str, Codec], expected: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
    """What a message of the expected logical tensors must hold, each under its own codec."""
    forms: dict[str, TensorSpec] = {}
    for name, (shape, dtype) in expected.items():
        _merge(forms, wire_form(codecs[name], name, shape, dtype))
    return forms


def decompress_all(
    codecs: Mapping[str, Codec], parts: Mapping[str, torch.Tensor], expected: Mapping[str, TensorSpec]
) -> dict[str, torch.Tensor]:
    """The logical tensors from the checked compressed forms of a whole message."""
    return {name: decompress(codecs[name], name, parts, shape, dtype) for name, (shape, dtype) in expected.items()}


def compressed_bytes(codec: Codec | str, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one tensor's data once compressed, indices, scales and zero points included (headers not)."""
    form = wire_form(Codec.parse(codec), "x", shape, dtype)
    return sum(math.prod(s) * d.itemsize for s, d in form.values())


def payload_bytes(specs: Mapping[str, TensorSpec]) -> int:
    """The exact size of the safetensors bytes of tensors with these names, shapes and dtypes."""
    # safetensors lays tensors out by descending dtype (its own order), then by name; offsets follow that order
    order = sorted(specs.items(), key=lambda item: (_LAYOUT.index(item[1][1]), item[0]))
    entries, offset = [], 0
    for name, (shape, dtype) in order:
        end = offset + math.prod(shape) * dtype.itemsize
        entries.append(
            f'{json.dumps(name, ensure_ascii=False)}:{{"dtype":"{_CODES[dtype]}","shape":'
            f'[{",".join(str(int(n)) for n in shape)}],"data_offsets":[{offset},{end}]}}'
        )
        offset = end
    header = len(("{" + ",".join(entries) + "}").encode())
    return 8 + header + (-header % 8) + offset


@dataclass(frozen=True)
class CodecTiming:
    """Median seconds to compress and to decompress one tensor, safetensors encoding and checks included."""

    compress_s: float
    decompress_s: float


def time_codec(
    codec: Codec | str,
    shape: Sequence[int],
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> CodecTiming:
    """Time compressing and decompressing a random tensor of this shape on this machine (for the profile)."""
    c = Codec.parse(codec)
    x = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(0)).to(dtype)
    expected = {"x": (tuple(shape), dtype)}
    up, down = [], []
    for _ in range(max(1, repeats)):
        start = clock()
        data = encode(compress(c, "x", x))
        middle = clock()
        decompress(c, "x", decode(data, wire_form(c, "x", shape, dtype)), *expected["x"])
        up.append(middle - start)
        down.append(clock() - middle)
    return CodecTiming(statistics.median(up), statistics.median(down))


_LAYOUT = [
    torch.int64,
    torch.float64,
    torch.float32,
    torch.int32,
    torch.bfloat16,
    torch.float16,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]
_CODES = {
    torch.int64: "I64",
    torch.float64: "F64",
    torch.float32: "F32",
    torch.int32: "I32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _index_dtype(numel: int) -> torch.dtype:
    return torch.int32 if numel <= torch.iinfo(torch.int32).max else torch.int64


def _merge(into: dict, more: dict) -> None:
    clash = sorted(set(into) & set(more))
    if clash:
        raise ValueError(f"compressed tensor names collide: {clash}; rename the tensors so that none ends in '@...'")
    into.update(more)


def _quantise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    flat = x.reshape(-1).float()
    numel = flat.numel()
    blocks = -(-numel // INT8_BLOCK)
    if numel == 0:
        empty = torch.zeros(0, dtype=torch.float32)
        return torch.zeros(x.shape, dtype=torch.int8), empty, empty.clone()
    pad = blocks * INT8_BLOCK - numel
    if pad:  # repeating the last element leaves the last block's range as it is
        flat = torch.cat([flat, flat[-1:].expand(pad)])
    grid = flat.view(blocks, INT8_BLOCK)
    lo, hi = grid.aminmax(dim=1)
    scale = hi / 255 - lo / 255  # divided first, so that a range near the float32 limit does not overflow
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round((grid - lo[:, None]) / safe[:, None]).clamp_(0, 255) - 128
    q = codes.to(torch.int8).reshape(-1)[:numel].reshape(x.shape)
    return q, scale, lo


def _dequantise(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    numel = math.prod(shape)
    blocks = scale.numel()
    codes = q.reshape(-1).float() + 128
    pad = blocks * INT8_BLOCK - numel
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad)])
    values = zero[:, None] + scale[:, None] * codes.view(blocks, INT8_BLOCK)
    return values.reshape(-1)[:numel].reshape(shape).to(dtype)


def _check_finite(name: str, what: str, values: torch.Tensor, at_least_zero: bool) -> None:
    bad = ~torch.isfinite(values)
    if at_least_zero:
        bad |= values < 0
    if bad.any():
        block = int(bad.nonzero()[0, 0])
        rule = "finite and not negative" if at_least_zero else "finite"
        raise WireError(
            f"tensor {name!r} (int8): the {what} of block {block} is {values[block].item()}; it must be {rule}"
        )


def _check_indices(name: str, index: torch.Tensor, numel: int) -> None:
    if not index.numel():
        return
    first, last = int(index[0]), int(index[-1])
    if first < 0 or last >= numel:
        wrong = first if first < 0 else last
        raise WireError(f"tensor {name!r} (topk): index {wrong} is outside 0..{numel - 1}")
    steps = index[1:] <= index[:-1]
    if steps.any():
        at = int(steps.nonzero()[0, 0]) + 1
        raise WireError(
            f"tensor {name!r} (topk): indices must be strictly increasing, but index {int(index[at])} "
            f"at position {at} follows {int(index[at - 1])}"
        )
