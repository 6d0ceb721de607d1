"""Tests for the tensor codec: safetensors bytes checked against what the receiver expects, never pickle."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save

from pipelearn.transport.codec import WireError, check, decode, encode, header, spec_of

DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]


def _tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    values = torch.arange(max(1, torch.Size(shape).numel()), dtype=torch.float64)[: torch.Size(shape).numel()]
    return (values % 7).reshape(shape).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3), (2, 1, 4, 3)], ids=str)
def test_round_trip(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    original = {"x": _tensor(shape, dtype), "labels": torch.tensor([3, 1, 4], dtype=torch.int64)}
    data = encode(original)
    assert header(data) == spec_of(original)
    for expected in (None, spec_of(original)):
        got = decode(data, expected)
        assert set(got) == set(original)
        for name, tensor in original.items():
            assert got[name].dtype == tensor.dtype
            assert got[name].shape == tensor.shape
            assert torch.equal(got[name], tensor)


def test_encode_takes_views_gradients_and_non_contiguous() -> None:
    base = torch.randn(4, 6, requires_grad=True)
    view = base.t()[1:3]  # non-contiguous, part of a graph
    assert not view.is_contiguous()
    got = decode(encode({"v": view}))["v"]
    assert not got.requires_grad
    assert torch.equal(got, view.detach())


def test_bytes_are_safetensors_not_pickle() -> None:
    data = encode({"a": torch.ones(2, 3), "b": torch.zeros(4, dtype=torch.int32)})
    (size,) = struct.unpack("<Q", data[:8])
    assert 0 < size <= len(data) - 8
    meta = json.loads(data[8 : 8 + size])
    assert meta["a"]["dtype"] == "F32" and meta["a"]["shape"] == [2, 3]
    assert meta["b"]["dtype"] == "I32" and meta["b"]["shape"] == [4]
    assert not data.startswith(b"\x80")  # the pickle protocol opcode
    assert b"PK" not in data[:4]  # not a torch.save zip archive either
    assert len(data) == 8 + size + 2 * 3 * 4 + 4 * 4


def test_decode_refuses_wrong_shape() -> None:
    data = encode({"act": torch.zeros(8, 16)})
    with pytest.raises(WireError, match=r"'act' has shape \[8, 16\].*expected shape \[8, 32\]"):
        decode(data, {"act": ((8, 32), torch.float32)})


def test_decode_refuses_wrong_dtype() -> None:
    data = encode({"act": torch.zeros(8, 16, dtype=torch.float16)})
    with pytest.raises(WireError, match=r"'act'.*torch\.float16.*expected.*torch\.float32"):
        decode(data, {"act": ((8, 16), torch.float32)})


def test_decode_refuses_wrong_names() -> None:
    data = encode({"act": torch.zeros(2), "labels": torch.zeros(2, dtype=torch.int64)})
    with pytest.raises(WireError, match=r"expected tensors \['act', 'grad'\], got \['act', 'labels'\]"):
        decode(data, {"act": ((2,), torch.float32), "grad": ((2,), torch.float32)})
    with pytest.raises(WireError, match="labels"):
        decode(data, {"act": ((2,), torch.float32)})


def test_check_accepts_list_shapes() -> None:
    check({"x": ((2, 3), torch.float32)}, {"x": ([2, 3], torch.float32)})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "too short"),
        (b"\x01\x02\x03", "too short"),
        (struct.pack("<Q", 1000) + b"{}", "claims 1000 bytes"),
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "not valid JSON"),
        (struct.pack("<Q", 5) + b"{oops", "not valid JSON"),
    ],
)
def test_garbage_header_raises_wire_error(data: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        header(data)
    with pytest.raises(WireError):
        decode(data, {"x": ((1,), torch.float32)})


def test_unsupported_dtype_is_named() -> None:
    meta = json.dumps({"odd": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    with pytest.raises(WireError, match="'odd' has unsupported dtype 'C64'"):
        header(struct.pack("<Q", len(meta)) + meta + bytes(8))


def test_truncated_payload_raises_wire_error() -> None:
    data = encode({"x": torch.ones(64)})
    for cut in (len(data) - 1, 20, 9, 3):
        with pytest.raises(WireError):
            decode(data[:cut])
    with pytest.raises(WireError):
        decode(b"\x00" * 8 + b"garbage")


def test_metadata_entry_is_ignored() -> None:
    data = save({"x": torch.ones(2)}, metadata={"note": "hi"})
    assert header(data) == {"x": ((2,), torch.float32)}
