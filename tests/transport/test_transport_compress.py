"""Tests for the compressed forms: each codec within its error bound, exact sizes, and refusal of bad forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipelearn.transport.channel import Stream
from pipelearn.transport.codec import WireError, encode, spec_of
from pipelearn.transport.compress import (
    INT8_BLOCK,
    Codec,
    compress,
    compressed_bytes,
    decompress,
    kept,
    payload_bytes,
    time_codec,
    wire_form,
)

CODECS = ["none", "fp16", "bf16", "int8", "topk:0.1", "topk:0.5"]

shapes = st.lists(st.integers(0, 40), min_size=0, max_size=3).map(tuple)


def _float_arrays(limit: float) -> st.SearchStrategy[np.ndarray]:
    return shapes.flatmap(
        lambda shape: arrays(
            np.float32, shape, elements=st.floats(-limit, limit, allow_nan=False, allow_subnormal=False, width=32)
        )
    )


def _round_trip(codec: str, x: torch.Tensor) -> torch.Tensor:
    c = Codec.parse(codec)
    return decompress(c, "x", compress(c, "x", x), x.shape, x.dtype)


@settings(max_examples=60, deadline=None)
@given(_float_arrays(6e4))
def test_fp16_error_is_within_half_an_ulp(values: np.ndarray) -> None:
    x = torch.from_numpy(values)
    y = _round_trip("fp16", x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    bound = torch.maximum(x.abs() * 2**-11, torch.full_like(x, 2**-25))
    assert ((x - y).abs() <= bound).all()


def test_fp16_saturates_rather_than_overflowing() -> None:
    y = _round_trip("fp16", torch.tensor([1e6, -1e6, 3.0]))
    assert y.tolist() == [65504.0, -65504.0, 3.0]


@settings(max_examples=60, deadline=None)
@given(_float_arrays(2.0**100))
def test_bf16_error_is_within_half_an_ulp(values: np.ndarray) -> None:
    x = torch.from_numpy(values)
    y = _round_trip("bf16", x)
    assert ((x - y).abs() <= x.abs() * 2**-8 + 1e-37).all()


@settings(max_examples=80, deadline=None)
@given(_float_arrays(1e6))
def test_int8_error_is_within_half_a_step_of_its_block(values: np.ndarray) -> None:
    x = torch.from_numpy(values)
    c = Codec.parse("int8")
    parts = compress(c, "x", x)
    y = decompress(c, "x", parts, x.shape, x.dtype)
    scale = parts["x@scale"]
    assert scale.shape == (math.ceil(x.numel() / INT8_BLOCK),)
    step = scale.repeat_interleave(INT8_BLOCK)[: x.numel()].reshape(x.shape)
    magnitude = x.abs().max() if x.numel() else torch.tensor(0.0)
    assert ((x - y).abs() <= step / 2 * 1.001 + magnitude * 1e-6).all()


def test_int8_is_exact_on_constant_blocks_and_keeps_the_zeros_of_relu_blocks() -> None:
    x = torch.cat([torch.full((INT8_BLOCK,), 0.3), torch.relu(torch.randn(INT8_BLOCK))])
    y = _round_trip("int8", x)
    assert torch.equal(y[:INT8_BLOCK], x[:INT8_BLOCK])
    relu = x[INT8_BLOCK:]
    assert (y[INT8_BLOCK:][relu == 0] == 0).all()


@settings(max_examples=80, deadline=None)
@given(_float_arrays(1e6), st.sampled_from([0.01, 0.1, 0.3, 0.9]))
def test_topk_keeps_the_largest_entries_exactly_and_drops_the_rest(values: np.ndarray, ratio: float) -> None:
    x = torch.from_numpy(values)
    c = Codec("topk", ratio)
    parts = compress(c, "x", x)
    y = decompress(c, "x", parts, x.shape, x.dtype)
    k = parts["x@idx"].numel()
    assert k == kept(x.numel(), ratio)
    if x.numel():
        assert ratio * x.numel() - 1e-6 <= k < ratio * x.numel() + 1
    sent = torch.zeros(x.numel(), dtype=torch.bool)
    sent[parts["x@idx"].long()] = True
    sent = sent.reshape(x.shape)
    assert int(sent.sum()) == k
    assert torch.equal(y[sent], x[sent])
    assert (y[~sent] == 0).all()
    if 0 < k < x.numel():
        assert x[sent].abs().min() >= x[~sent].abs().max()


def test_none_is_the_tensor_itself() -> None:
    x = torch.randn(3, 4)
    assert torch.equal(_round_trip("none", x), x)


@pytest.mark.parametrize("codec", CODECS)
def test_integer_tensors_travel_as_they_are(codec: str) -> None:
    labels = torch.tensor([3, 1, 4, 1, 5], dtype=torch.int64)
    c = Codec.parse(codec)
    assert wire_form(c, "labels", (5,), torch.int64) == {"labels": ((5,), torch.int64)}
    assert torch.equal(_round_trip(codec, labels), labels)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("shape", [(), (0,), (7,), (25, 64, 7, 7), (3, 300)], ids=str)
def test_sizes_are_exact(codec: str, shape: tuple[int, ...]) -> None:
    c = Codec.parse(codec)
    x = torch.randn(shape)
    parts = compress(c, "act", x)
    assert spec_of(parts) == wire_form(c, "act", shape, torch.float32)
    assert compressed_bytes(codec, shape) == sum(t.numel() * t.element_size() for t in parts.values())
    assert payload_bytes(spec_of(parts)) == len(encode(parts))


def test_compressed_sizes_per_codec() -> None:
    shape, n = (100, 64, 7, 7), 100 * 64 * 7 * 7
    assert compressed_bytes("none", shape) == 4 * n
    assert compressed_bytes("fp16", shape) == compressed_bytes("bf16", shape) == 2 * n
    assert compressed_bytes("int8", shape) == n + 8 * math.ceil(n / INT8_BLOCK)
    assert compressed_bytes("topk:0.1", shape) == 8 * math.ceil(0.1 * n)
    assert compressed_bytes("int8", (10,), torch.int64) == 80


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
dtypes = st.sampled_from(
    [
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
)


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(st.dictionaries(names, st.tuples(st.lists(st.integers(0, 300), max_size=3), dtypes), max_size=6))
def test_payload_bytes_matches_safetensors(specs: dict) -> None:
    tensors = {name: torch.zeros(shape, dtype=dtype) for name, (shape, dtype) in specs.items()}
    assert payload_bytes(spec_of(tensors)) == len(encode(tensors))


@pytest.mark.parametrize("text", ["topk", "topk:", "topk:0", "topk:1", "topk:-0.1", "topk:x", "int4", "fp16:0.5", ""])
def test_bad_codec_settings_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="topk"):
        Codec.parse(text)


def test_codec_text_round_trips() -> None:
    for text in ["none", "fp16", "bf16", "int8", "topk:0.1", "topk:0.005"]:
        assert str(Codec.parse(text)) == text


def test_time_codec_measures_both_ways_and_takes_the_median() -> None:
    # a clock that reads 0, 1, 3 in the first repeat, then on from 10 and 20: each repeat reads it three times,
    # before compressing, between, and after decompressing
    readings = iter([0.0, 1.0, 3.0, 10.0, 15.0, 16.0, 20.0, 22.0, 26.0])
    timing = time_codec("int8", (25, 64, 7, 7), repeats=3, clock=lambda: next(readings))
    assert (timing.compress_s, timing.decompress_s) == (2.0, 2.0)  # medians of 1, 5, 2 and of 2, 1, 4
    assert next(readings, None) is None


# --- malformed compressed tensors are refused like any bad tensor ---------------------------------------------------

EXPECTED = {"activation": ((4, 100), torch.float32), "labels": ((4,), torch.int64)}


def _message(codec: str) -> dict[str, torch.Tensor]:
    tensors = {"activation": torch.randn(4, 100), "labels": torch.tensor([0, 1, 2, 3])}
    c = Codec.parse(codec)
    return {**compress(c, "activation", tensors["activation"]), "labels": tensors["labels"]}


def _refused(codec: str, parts: dict[str, torch.Tensor], match: str) -> None:
    with pytest.raises(WireError, match=match):
        Stream(codec).decode(encode(parts), EXPECTED)


def test_a_good_message_is_accepted() -> None:
    for codec in CODECS:
        got = Stream(codec).decode(encode(_message(codec)), EXPECTED)
        assert got["activation"].shape == (4, 100) and got["activation"].dtype == torch.float32


def test_topk_index_out_of_range_is_refused() -> None:
    parts = _message("topk:0.1")
    parts["activation@idx"][-1] = 400
    _refused("topk:0.1", parts, r"'activation' \(topk\): index 400 is outside 0..399")
    parts = _message("topk:0.1")
    parts["activation@idx"][0] = -1
    _refused("topk:0.1", parts, "index -1 is outside")


def test_topk_repeated_or_unsorted_indices_are_refused() -> None:
    parts = _message("topk:0.1")
    parts["activation@idx"][3] = parts["activation@idx"][2]
    _refused("topk:0.1", parts, r"'activation' \(topk\): indices must be strictly increasing")
    parts = _message("topk:0.1")
    parts["activation@idx"] = parts["activation@idx"].flip(0)
    _refused("topk:0.1", parts, "strictly increasing")


def test_topk_wrong_count_or_index_dtype_is_refused() -> None:
    parts = _message("topk:0.1")
    parts["activation@idx"], parts["activation@val"] = parts["activation@idx"][:-1], parts["activation@val"][:-1]
    _refused("topk:0.1", parts, r"'activation@idx' has shape \[39\].*expected shape \[40\]")
    parts = _message("topk:0.1")
    parts["activation@idx"] = parts["activation@idx"].long()
    _refused("topk:0.1", parts, r"topk:0.1-compressed tensors: tensor 'activation@idx'.*int64.*expected.*int32")


def test_int8_wrong_scale_shape_is_refused() -> None:
    parts = _message("int8")
    parts["activation@scale"] = torch.cat([parts["activation@scale"], torch.ones(1)])
    _refused("int8", parts, r"'activation@scale' has shape \[3\].*expected shape \[2\]")


@pytest.mark.parametrize(
    ("part", "value", "match"),
    [
        ("scale", math.nan, r"'activation@scale' holds NaN or Inf"),
        ("scale", math.inf, r"'activation@scale' holds NaN or Inf"),
        ("scale", -0.5, "the scale of block 1 is -0.5"),
        ("zero", math.nan, r"'activation@zero' holds NaN or Inf"),
        ("zero", -math.inf, r"'activation@zero' holds NaN or Inf"),
    ],
)
def test_int8_bad_scales_are_refused(part: str, value: float, match: str) -> None:
    parts = _message("int8")
    parts[f"activation@{part}"][1] = value
    _refused("int8", parts, match)


def test_int8_codes_of_the_wrong_dtype_are_refused() -> None:
    parts = _message("int8")
    parts["activation@int8"] = parts["activation@int8"].to(torch.uint8)
    _refused("int8", parts, r"'activation@int8'.*torch\.uint8.*expected.*torch\.int8")


def test_a_missing_part_or_the_wrong_codec_is_refused() -> None:
    parts = _message("int8")
    del parts["activation@zero"]
    _refused("int8", parts, "expected tensors")
    _refused("fp16", _message("none"), r"'activation'.*torch\.float32.*expected.*torch\.float16")
    _refused("int8", _message("fp16"), "expected tensors")
    _refused("none", _message("bf16"), r"'activation'.*bfloat16.*expected.*float32")


def test_a_mislabelled_labels_tensor_is_still_refused() -> None:
    parts = _message("int8")
    parts["labels"] = parts["labels"].to(torch.int32)
    _refused("int8", parts, "'labels'")
