"""Tests for the channel: none is today's bytes, error feedback carries what top-k drops, bytes are counted."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pipelearn.config import RunConfig
from pipelearn.schedule import Op
from pipelearn.transport.channel import Channel, Stream, channel_for
from pipelearn.transport.codec import WireError, decode, encode, spec_of
from pipelearn.transport.compress import payload_bytes

WEIGHTS = {"0.weight": ((40, 25), torch.float32), "0.bias": ((40,), torch.float32), "1.count": ((), torch.int64)}


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "0.weight": torch.randn(40, 25, generator=g),
        "0.bias": torch.randn(40, generator=g),
        "1.count": torch.tensor(seed),
    }


def test_none_sends_todays_bytes_and_counts_them() -> None:
    tensors = {"activation": torch.randn(5, 8, requires_grad=True), "labels": torch.arange(5)}
    stream = Stream("none")
    data = stream.encode(tensors, feedback=False)
    assert data == encode(tensors)
    weights = _weights(1)
    assert stream.encode(weights, feedback=True) == encode(weights)
    got = Stream("none").decode(encode(weights), WEIGHTS, feedback=True)
    assert all(torch.equal(got[k], weights[k]) for k in weights)
    assert stream.raw_bytes == stream.wire_bytes == len(data) + len(encode(weights))
    assert stream.references == {}


@pytest.mark.parametrize("codec", ["fp16", "bf16", "int8", "topk:0.1"])
def test_bytes_before_and_after_compression_are_counted(codec: str) -> None:
    tensors = {"activation": torch.randn(25, 64, 7, 7), "labels": torch.arange(25)}
    sender, receiver = Stream(codec), Stream(codec)
    data = sender.encode(tensors)
    receiver.decode(data, spec_of(tensors))
    raw = len(encode(tensors))
    for stream in (sender, receiver):
        assert stream.raw_bytes == payload_bytes(spec_of(tensors)) == raw
        assert stream.wire_bytes == len(data) < raw
        assert stream.usage() == {"codec": codec, "raw_bytes": raw, "wire_bytes": len(data)}


def test_activations_keep_no_state_between_messages() -> None:
    sender, receiver = Stream("topk:0.1"), Stream("topk:0.1")
    first = {"activation": torch.randn(4, 100)}
    data = sender.encode(first)
    again = sender.encode(first)
    assert data == again  # what the first message dropped is not carried into the second
    assert sender.references == {} and receiver.references == {}
    a = receiver.decode(data, spec_of(first))["activation"]
    b = receiver.decode(data, spec_of(first))["activation"]
    assert torch.equal(a, b) and int((a != 0).sum()) == 40


def _stream_weights(codec: str, steps: list[dict[str, torch.Tensor]]) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """Send each state over a weight stream; return each message's size and what the receiver rebuilt."""
    sender, receiver = Stream(codec), Stream(codec)
    out = []
    for state in steps:
        data = sender.encode(state, feedback=True)
        got = receiver.decode(data, WEIGHTS, feedback=True)
        for name in ("0.weight", "0.bias"):  # both ends hold the same reference, bit for bit
            assert torch.equal(sender.references[name], receiver.references[name])
            assert torch.equal(got[name], receiver.references[name])
        assert torch.equal(got["1.count"], state["1.count"])
        out.append((len(data), got))
    return out


def test_topk_weights_first_go_whole_then_as_sparse_changes() -> None:
    base = _weights(0)
    moved = {**base, "0.weight": base["0.weight"] + 0.01 * torch.randn(40, 25)}
    (size0, got0), (size1, got1) = _stream_weights("topk:0.1", [base, moved])
    assert all(torch.equal(got0[k], base[k]) for k in base)
    assert size1 < size0 / 3
    sent = got1["0.weight"] != got0["0.weight"]
    assert int(sent.sum()) == 100  # a tenth of the 1000 changed entries
    assert torch.allclose(got1["0.weight"][sent], moved["0.weight"][sent])


def test_error_feedback_carries_what_topk_drops() -> None:
    """The sum of what was sent follows the sum of the changes made: what is dropped is sent later, not lost."""
    g = torch.Generator().manual_seed(3)
    start = _weights(0)
    states, w = [start], start["0.weight"]
    for t in range(1, 31):
        w = w + 0.05 * torch.randn(40, 25, generator=g)
        states.append({**start, "0.weight": w, "1.count": torch.tensor(t)})
    still = [states[-1]] * 10  # then the weights stop changing for 1 / R messages
    rebuilt = [got for _, got in _stream_weights("topk:0.1", states + still)]
    # the sum over messages of what was sent (the receiver's changes) against the sum of the inputs (the changes)
    sent_total = rebuilt[len(states) - 1]["0.weight"] - rebuilt[0]["0.weight"]
    input_total = states[-1]["0.weight"] - states[0]["0.weight"]
    residual = (input_total - sent_total).norm() / input_total.norm()
    # without feedback each change would lose 90% of its entries for good, and the losses would pile up
    no_feedback = torch.zeros(40, 25)
    for before, after in itertools.pairwise(states):
        no_feedback += _topk_only(after["0.weight"] - before["0.weight"], 0.1)
    lost_without = (input_total - no_feedback).norm() / input_total.norm()
    assert residual < 0.5 * lost_without, (residual, lost_without)
    # once the weights stop changing, what was dropped arrives within 1 / R messages: the error goes to zero
    torch.testing.assert_close(rebuilt[-1]["0.weight"], states[-1]["0.weight"], atol=1e-6, rtol=0)
    assert (rebuilt[-2]["0.weight"] != states[-1]["0.weight"]).any()


def _topk_only(x: torch.Tensor, ratio: float) -> torch.Tensor:
    flat = x.reshape(-1)
    k = math.ceil(ratio * flat.numel())
    out = torch.zeros_like(flat)
    index = flat.abs().topk(k).indices
    out[index] = flat[index]
    return out.reshape(x.shape)


@pytest.mark.parametrize(("codec", "shrink"), [("int8", 20), ("fp16", 20), ("bf16", 20)])
def test_dense_codecs_refine_weights_that_stay_put(codec: str, shrink: float) -> None:
    """Closed loop: the second message codes the first one's rounding error, so the receiver gets closer."""
    w = _weights(5)
    (_, first), (_, second) = _stream_weights(codec, [w, w])
    err1 = (first["0.weight"] - w["0.weight"]).abs().max()
    err2 = (second["0.weight"] - w["0.weight"]).abs().max()
    assert err1 > 0 and err2 < err1 / shrink


def test_receiver_results_are_its_own_copies() -> None:
    sender, receiver = Stream("int8"), Stream("int8")
    got = receiver.decode(sender.encode(_weights(0), feedback=True), WEIGHTS, feedback=True)
    before = receiver.references["0.weight"].clone()
    got["0.weight"].zero_()
    assert torch.equal(receiver.references["0.weight"], before)


def test_a_refused_weight_message_names_the_tensor() -> None:
    sender, receiver = Stream("topk:0.1"), Stream("topk:0.1")
    receiver.decode(sender.encode(_weights(0), feedback=True), WEIGHTS, feedback=True)
    parts = decode(sender.encode(_weights(1), feedback=True))
    parts["0.bias@idx"][-1] = 99
    with pytest.raises(WireError, match=r"'0.bias' \(topk\): index 99 is outside 0..39"):
        receiver.decode(encode(parts), WEIGHTS, feedback=True)


def test_channels_send_and_receive_with_the_codec_of_each_direction() -> None:
    config = RunConfig(compress="int8", compress_down="fp16").validate()
    server, device = channel_for(config, "server"), channel_for(config, "device")
    assert str(server.sent.codec) == str(device.received.codec) == "fp16"
    assert str(server.received.codec) == str(device.sent.codec) == "int8"
    activation = {"activation": torch.randn(4, 300), "labels": torch.arange(4)}
    up = device.encode(Op.ACTIVATION, activation)
    got = server.decode(Op.ACTIVATION, up, spec_of(activation))["activation"]
    assert 0 < (got - activation["activation"]).abs().max() < 0.05
    gradient = {"gradient": torch.randn(4, 300)}
    down = server.encode(Op.GRADIENT, gradient)
    assert len(down) < len(encode(gradient)) / 1.9
    device.decode(Op.GRADIENT, down, spec_of(gradient))
    server.encode(Op.WEIGHTS, _weights(0))
    assert set(server.sent.references) == {"0.weight", "0.bias"} and not server.received.references
    usage = server.usage()
    assert usage["up"]["codec"] == "int8" and usage["down"]["codec"] == "fp16"
    assert usage["up"] == device.usage()["up"]  # both ends count the one activation alike


def test_channel_without_compression_counts_raw_equal_to_wire() -> None:
    channel = Channel("device", "none", "none")
    data = channel.encode(Op.ACTIVATION, {"activation": torch.ones(3)})
    assert channel.usage()["up"] == {"codec": "none", "raw_bytes": len(data), "wire_bytes": len(data)}
    assert channel.usage()["down"]["raw_bytes"] == 0
