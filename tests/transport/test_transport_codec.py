"""Tests for the tensor codec: safetensors bytes checked against what the receiver expects, never pickle."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from pipelearn.transport.codec import TensorSpec, WireError, check, decode, encode, header, spec_of

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


def _payload(meta: object, body: bytes = b"") -> bytes:
    text = json.dumps(meta).encode()
    return struct.pack("<Q", len(text)) + text + body


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (struct.pack("<Q", (1 << 20) + 1) + b"{}", "more than the 1048576 allowed"),
        (struct.pack("<Q", 2**64 - 1) + b"{}", "more than"),
        (_payload([1, 2]), "JSON list, not an object"),
        (_payload({"x": [1]}), "'x' is not an object"),
        (_payload({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}), "shape"),
        (_payload({"x": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, bytes(4)), "shape"),
        (_payload({"x": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, bytes(8)), "shape"),
        (_payload({"x": {"dtype": "F32", "shape": [2]}}, bytes(8)), "data_offsets"),
        (_payload({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)), "span 4"),
        (_payload({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)), "starts at byte 4"),
        (_payload({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(8)), "8 bytes of data"),
        (
            _payload(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
                },
                bytes(8),
            ),
            "starts at byte 4",
        ),
        (_payload({"x": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}, bytes(4)), "needs"),
        (struct.pack("<Q", 20_000) + b"[" * 20_000, "not valid JSON"),
    ],
)
def test_a_header_that_does_not_describe_the_payload_exactly_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        header(data)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_non_finite_values_are_refused_unless_asked_for(value: float, dtype: torch.dtype) -> None:
    tensor = torch.ones(3, 4, dtype=dtype)
    tensor[1, 2] = value
    data = encode({"w": tensor, "n": torch.tensor([1, 2])})
    with pytest.raises(WireError, match="'w' holds NaN or Inf"):
        decode(data, spec_of({"w": tensor, "n": torch.tensor([1, 2])}))
    got = decode(data, finite=False)["w"]
    assert torch.equal(got.isnan(), tensor.isnan()) and torch.equal(got.isinf(), tensor.isinf())


# Property-based tests: any tensors round-trip; any change to valid bytes is refused with WireError or decodes to
# exactly what was expected; nothing else ever comes out of decode.

_HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda n: n != "__metadata__"
)
_shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)


@st.composite
def _tensors(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    names = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    return {name: _tensor(draw(_shapes), draw(st.sampled_from(DTYPES))) for name in names}


@_HYPOTHESIS
@given(_tensors())
def test_property_any_tensors_round_trip(tensors: dict[str, torch.Tensor]) -> None:
    data = encode(tensors)
    assert header(data) == spec_of(tensors)
    got = decode(data, spec_of(tensors))
    assert all(torch.equal(got[n], t) for n, t in tensors.items())


def _decodes_as_expected_or_refuses(data: bytes, expected: dict[str, TensorSpec]) -> None:
    try:
        got = decode(data, expected)
    except WireError:
        return
    assert spec_of(got) == expected
    assert all(bool(torch.isfinite(t).all()) for t in got.values() if t.is_floating_point())


@_HYPOTHESIS
@given(_tensors(), st.data())
def test_property_changed_bytes_decode_as_expected_or_are_refused(tensors: dict, data: st.DataObject) -> None:
    payload = bytearray(encode(tensors))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(payload) - 1))
        payload[at] = data.draw(st.integers(0, 255))
    _decodes_as_expected_or_refuses(bytes(payload), spec_of(tensors))


@_HYPOTHESIS
@given(_tensors(), st.data())
def test_property_cut_or_padded_bytes_are_refused(tensors: dict, data: st.DataObject) -> None:
    payload = encode(tensors)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(WireError):
        decode(payload[:cut], spec_of(tensors))
    with pytest.raises(WireError):
        decode(payload + data.draw(st.binary(min_size=1, max_size=16)), spec_of(tensors))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_entries = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(["F32", "F64", "I64", "U8", "BOOL", "C64", "", "f32"]) | _json,
        "shape": st.lists(st.integers(-2, 2**33) | _json, max_size=4) | _json,
        "data_offsets": st.lists(st.integers(-2, 2**33), min_size=0, max_size=3) | _json,
    },
)


@_HYPOTHESIS
@given(st.dictionaries(_names, _entries | _json, max_size=4) | _json, st.binary(max_size=64))
def test_property_any_header_is_read_or_refused_with_wire_error(meta: object, body: bytes) -> None:
    data = _payload(meta, body)
    try:
        specs = header(data)
    except WireError:
        return
    assert isinstance(meta, dict)
    try:
        got = decode(data, specs)
    except WireError:
        return
    assert spec_of(got) == specs
