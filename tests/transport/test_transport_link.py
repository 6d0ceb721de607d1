"""Tests for the emulated link: pacing at a bit rate plus latency, pipelining, schedule checks, accounting."""

from __future__ import annotations

import math
import threading
import time

import pytest

from pipelearn.events import Recorder
from pipelearn.schedule import Action, Key, Op, Resource
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.link import LinkSpec, Outbox
from pipelearn.transport.service import envelope

PAYLOAD = 500  # bytes of tensors per message; the envelope adds a few more


def _forward(m: int) -> Key:
    return Key(Resource.DEVICE, 0, Op.FORWARD, 0, 0, m)


def _uplink_lane(n: int) -> list[Action]:
    return [Action(Key(Resource.UPLINK, 0, Op.ACTIVATION, 0, 0, m), 0, (_forward(m),)) for m in range(n)]


def _message(m: int) -> pb.Envelope:
    return envelope(pb.ACTIVATION, 0, round=0, iteration=0, microbatch=m, tensors=bytes(PAYLOAD))


def _outbox(spec: LinkSpec, n: int, recorder: Recorder | None = None) -> Outbox:
    outbox = Outbox()
    outbox.follow(spec, _uplink_lane(n), "device0/uplink", recorder or Recorder())
    return outbox


def _arrivals(outbox: Outbox) -> list[tuple[float, pb.Envelope]]:
    return [(time.time(), e) for e in outbox]


def test_link_spec() -> None:
    spec = LinkSpec.from_mbps(8, 10)
    assert spec.rate_bps == 8e6 and spec.latency_s == pytest.approx(0.01)
    assert spec.transmit_s(1_000_000) == pytest.approx(1.0)
    assert LinkSpec(math.inf, 0.0).transmit_s(10**9) == 0.0


def test_one_message_waits_for_transmission_and_latency() -> None:
    spec = LinkSpec(rate_bps=80_000, latency_s=0.05)
    outbox = _outbox(spec, 1)
    message = _message(0)
    due = spec.transmit_s(message.ByteSize()) + spec.latency_s
    assert 0.09 < due < 0.12
    queued = time.time()
    outbox.send(_forward(0), message.tensors)
    outbox.close()
    [(arrived, got)] = _arrivals(outbox)
    assert got == message
    assert arrived - queued >= due - 1e-3  # never sooner than its bytes at the rate and the latency allow


def test_back_to_back_messages_are_serialised_and_pipelined() -> None:
    spec = LinkSpec(rate_bps=80_000, latency_s=0.3)
    recorder = Recorder()
    outbox = _outbox(spec, 2, recorder)
    sizes = [_message(m).ByteSize() for m in range(2)]
    tx = spec.transmit_s(sizes[0])
    assert 0.04 < tx < 0.06
    queued = time.time()
    for m in range(2):
        outbox.send(_forward(m), _message(m).tensors)
    outbox.close()
    (first, _), (second, _) = _arrivals(outbox)
    # the second message leaves only once the first has: it needs two transmission times ...
    assert first - queued >= tx + spec.latency_s - 1e-3
    assert second - queued >= 2 * tx + spec.latency_s - 1e-3
    # ... but the latency is paid once for both: the second goes on the wire as the first leaves it, not once the
    # first has arrived a latency later
    one, two = recorder.events
    assert one.start >= queued
    assert two.start == one.end  # busy back to back; the latency is not link busy time
    assert one.duration == pytest.approx(tx, abs=1e-6)
    assert two.duration == pytest.approx(spec.transmit_s(sizes[1]), abs=1e-6)


def test_idle_link_starts_at_hand_over() -> None:
    spec = LinkSpec(rate_bps=800_000, latency_s=0.0)
    recorder = Recorder()
    outbox = _outbox(spec, 2, recorder)
    stream = iter(outbox)
    outbox.send(_forward(0), _message(0).tensors)
    next(stream)
    time.sleep(0.05)
    later = time.time()
    outbox.send(_forward(1), _message(1).tensors)
    next(stream)
    one, two = recorder.events
    assert two.start >= later > one.end


def test_messages_keep_their_order_with_a_concurrent_reader() -> None:
    spec = LinkSpec(rate_bps=4_000_000, latency_s=0.001)
    outbox = _outbox(spec, 5)
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.extend(e.microbatch for e in outbox))
    reader.start()
    for m in range(5):
        outbox.send(_forward(m), _message(m).tensors)
    outbox.close()
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert got == [0, 1, 2, 3, 4]


def test_send_refuses_what_the_schedule_does_not_expect() -> None:
    outbox = _outbox(LinkSpec(math.inf, 0.0), 2)
    with pytest.raises(RuntimeError, match=r"schedule violated: d0\.device\.F\.i0m1 .* expects d0\.uplink\.a\.i0m0"):
        outbox.send(_forward(1), _message(1).tensors)


def test_send_past_the_end_of_the_lane_or_without_one() -> None:
    outbox = _outbox(LinkSpec(math.inf, 0.0), 1)
    outbox.send(_forward(0), _message(0).tensors)
    with pytest.raises(RuntimeError, match=r"schedule violated.*expects None"):
        outbox.send(_forward(1), _message(1).tensors)
    with pytest.raises(RuntimeError, match="schedule violated"):
        Outbox().send(_forward(0), _message(0).tensors)


def test_events_and_bytes_are_recorded() -> None:
    recorder = Recorder(offset=100.0)
    outbox = Outbox()
    lane = [
        Action(Key(Resource.UPLINK, 0, Op.ACTIVATION, 0, 4, 0), 2, (_forward(0),)),
        Action(Key(Resource.UPLINK, 0, Op.WEIGHTS, 0), 3, (Key(Resource.DEVICE, 0, Op.SEND_WEIGHTS, 0),)),
    ]
    outbox.follow(LinkSpec(8_000_000, 0.0), lane, "device0/uplink", recorder)
    hello = envelope(pb.HELLO, 0, text="hi")
    first = envelope(pb.ACTIVATION, 0, round=0, iteration=4, microbatch=0, tensors=bytes(PAYLOAD))
    second = envelope(pb.WEIGHTS, 0, tensors=bytes(123))
    before = time.time()
    outbox.control(hello)
    outbox.send(_forward(0), first.tensors)
    outbox.send(Key(Resource.DEVICE, 0, Op.SEND_WEIGHTS, 0), second.tensors)
    outbox.close()
    assert list(outbox) == [hello, first, second]
    assert outbox.bytes_sent == first.ByteSize() + second.ByteSize()  # control messages are not counted
    # control messages are not scheduled transfers and leave no event
    assert [(e.track, e.name, e.args) for e in recorder.events] == [
        ("device0/uplink", str(lane[0].key), {"bytes": first.ByteSize(), "epoch": 2}),
        ("device0/uplink", str(lane[1].key), {"bytes": second.ByteSize(), "epoch": 3}),
    ]
    for event in recorder.events:
        assert event.start >= before + 100.0  # the recorder's offset is applied
        assert event.duration == pytest.approx(event.args["bytes"] * 8 / 8_000_000, abs=1e-6)


def test_unlimited_link_is_immediate() -> None:
    recorder = Recorder()
    outbox = Outbox()
    assert math.isinf(outbox.spec.rate_bps) and outbox.spec.latency_s == 0
    outbox.follow(LinkSpec(math.inf, 0.0), _uplink_lane(3), "device0/uplink", recorder)
    big = envelope(pb.ACTIVATION, 0, iteration=0, tensors=bytes(1_000_000))
    for m in range(3):
        outbox.send(_forward(m), big.tensors)
    outbox.close()
    assert len(list(outbox)) == 3
    assert all(e.duration == 0 for e in recorder.events)  # nothing paced: no time on the link
    assert outbox.bytes_sent == sum(e.args["bytes"] for e in recorder.events) >= 3 * big.ByteSize()


def test_flush_waits_until_every_transfer_has_left_and_is_recorded() -> None:
    recorder = Recorder()
    outbox = _outbox(LinkSpec(rate_bps=80_000, latency_s=0.01), 2, recorder)
    for m in range(2):
        outbox.send(_forward(m), _message(m).tensors)
    with pytest.raises(TimeoutError, match="still queued"):
        outbox.flush(0.05)  # nobody is reading the stream yet
    reader = threading.Thread(target=lambda: list(outbox), daemon=True)
    reader.start()
    outbox.flush(5.0)
    assert [e.name for e in recorder.events] == [str(a.key) for a in _uplink_lane(2)]
    outbox.close()
    reader.join(5.0)


def test_heartbeats_pass_a_message_the_link_is_still_pacing() -> None:
    spec = LinkSpec(rate_bps=80_000, latency_s=0.05)  # 10 kB/s: half a second for the message below
    recorder = Recorder()
    outbox = _outbox(spec, 1, recorder)
    outbox.progress.advance()
    outbox.progress.advance()
    outbox.beat(0.05, device=3)
    big = envelope(pb.ACTIVATION, 0, round=0, iteration=0, microbatch=0, tensors=bytes(5000))
    due = spec.transmit_s(big.ByteSize()) + spec.latency_s
    queued = time.time()
    outbox.send(_forward(0), big.tensors)
    outbox.close()
    arrivals = _arrivals(outbox)
    kinds = [e.kind for _, e in arrivals]
    transfer_at = kinds.index(pb.ACTIVATION)
    beats = [(t, e) for t, e in arrivals[:transfer_at]]
    # not queued behind it: several heartbeats went out while the message was still on the link, each with its backlog
    assert len(beats) >= 2 and all(e.kind == pb.HEARTBEAT for _, e in beats)
    assert all(e.device == 3 and e.progress == 2 for _, e in beats)
    backlogs = [e.backlog for _, e in beats]
    assert all(0 < b <= due + 1e-3 for b in backlogs)  # what the link still needs, falling as it goes
    assert backlogs == sorted(backlogs, reverse=True) and len(set(backlogs)) == len(backlogs)
    arrived, got = arrivals[transfer_at]
    assert got.tensors == big.tensors and arrived - queued >= due - 1e-3  # paced as before
    assert outbox.bytes_sent == big.ByteSize()  # heartbeats are not training traffic ...
    assert [e.name for e in recorder.events] == [str(_uplink_lane(1)[0].key)]  # ... nor link busy time


def test_backlog_counts_every_queued_message_once_plus_the_latency() -> None:
    spec = LinkSpec(rate_bps=80_000, latency_s=0.2)
    outbox = _outbox(spec, 2)
    assert outbox.backlog_s() == 0.0
    for m in range(2):
        outbox.send(_forward(m), _message(m).tensors)
    tx = spec.transmit_s(_message(0).ByteSize())
    assert outbox.backlog_s() == pytest.approx(2 * tx + spec.latency_s, abs=0.02)
    outbox.close()
    assert len(list(outbox)) == 2
    assert outbox.backlog_s() == 0.0
