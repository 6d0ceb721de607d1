"""Tests for links whose rate changes during a run: transmit times across rate changes, worked by hand."""

from __future__ import annotations

import itertools
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelearn.config import DeviceOverride, RunConfig
from pipelearn.events import Recorder
from pipelearn.schedule import Action, Key, Op, Resource
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.inbox import Inbox
from pipelearn.transport.link import LinkSpec, Outbox
from pipelearn.transport.rates import RateSchedule, link_spec
from pipelearn.transport.service import envelope

MBIT = 1e6


def _drop(origin: float = 100.0) -> RateSchedule:
    """10 Mbit/s for the first second after `origin`, then 2 Mbit/s."""
    return RateSchedule(((0.0, 10 * MBIT), (1.0, 2 * MBIT)), origin)


def test_constant_rate() -> None:
    schedule = RateSchedule(((0.0, 8 * MBIT),), origin=50.0)
    assert schedule.finish(60.0, 1_000_000) == pytest.approx(61.0)  # 8 Mbit at 8 Mbit/s
    assert schedule.finish(60.0, 0) == 60.0
    assert schedule.rate_at(10.0) == schedule.rate_at(1e9) == 8 * MBIT


def test_a_message_across_a_rate_drop() -> None:
    # 2.5 MB = 20 Mbit, handed over 0.5 s after the origin: 0.5 s at 10 Mbit/s carries 5 Mbit; the other 15 Mbit
    # go at 2 Mbit/s from 1.0 s on, in 7.5 s: it has left at 8.5 s
    assert _drop().finish(100.5, 2_500_000) == pytest.approx(108.5)


def test_a_message_across_a_rate_rise() -> None:
    rise = RateSchedule(((0.0, 2 * MBIT), (1.0, 10 * MBIT)), origin=0.0)
    # 1 MB = 8 Mbit from 0.5 s: 1 Mbit by 1.0 s, the other 7 Mbit at 10 Mbit/s in 0.7 s
    assert rise.finish(0.5, 1_000_000) == pytest.approx(1.7)


def test_a_message_that_fits_before_the_change_is_not_slowed() -> None:
    assert _drop().finish(100.0, 1_000_000) == pytest.approx(100.8)  # 8 Mbit at 10 Mbit/s
    assert _drop().finish(100.0, 1_250_000) == pytest.approx(101.0)  # exactly up to the change


def test_a_message_across_several_steps() -> None:
    steps = ((0.0, 10 * MBIT), (30.0, 2 * MBIT), (60.0, 10 * MBIT))
    schedule = RateSchedule(steps, origin=0.0)
    # from 25 s: 5 s at 10 (50 Mbit), 30 s at 2 (60 Mbit), then 10 Mbit more at 10 Mbit/s in 1 s: 120 Mbit, 61 s
    assert schedule.finish(25.0, 120_000_000 // 8) == pytest.approx(61.0)
    assert [schedule.rate_at(t) for t in (0.0, 29.9, 30.0, 59.0, 60.0, 1e6)] == [10e6, 10e6, 2e6, 2e6, 10e6, 10e6]


def test_before_the_origin_the_first_rate_applies() -> None:
    # control messages before training starts: the first step stretches back in time
    assert _drop().finish(99.0, 1_250_000) == pytest.approx(100.0)
    assert _drop().finish(99.0, 3_000_000) == pytest.approx(103.0)  # 20 Mbit by the change, 4 more at 2 Mbit/s


def test_an_unlimited_step_sends_at_once() -> None:
    schedule = RateSchedule(((0.0, 1 * MBIT), (1.0, math.inf)), origin=0.0)
    assert schedule.finish(0.5, 10**9) == pytest.approx(1.0)  # 0.5 Mbit until 1 s, the rest at once


@pytest.mark.parametrize(
    "steps",
    [(), ((1.0, 5.0),), ((0.0, 5.0), (0.0, 2.0)), ((0.0, 5.0), (3.0, 2.0), (2.0, 1.0)), ((0.0, 0.0),)],
)
def test_bad_steps_are_refused(steps: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ValueError, match="rate"):
        RateSchedule(steps)


@given(
    rates=st.lists(st.floats(1e3, 1e9), min_size=1, max_size=5),
    gaps=st.lists(st.floats(0.01, 100.0), min_size=4, max_size=4),
    start=st.floats(-10.0, 300.0),
    nbytes=st.integers(0, 10**9),
)
def test_the_bits_sent_are_the_rate_integrated_over_the_transfer(
    rates: list[float], gaps: list[float], start: float, nbytes: int
) -> None:
    times = [0.0]
    for gap in gaps[: len(rates) - 1]:
        times.append(times[-1] + gap)
    schedule = RateSchedule(tuple(zip(times, rates, strict=True)))
    end = schedule.finish(start, nbytes)
    assert end >= start
    edges = sorted({start, end, *(t for t in times if start < t < end)})
    sent = sum(schedule.rate_at(a) * (b - a) for a, b in itertools.pairwise(edges))
    assert sent == pytest.approx(nbytes * 8, rel=1e-6, abs=1e-3)


def test_link_spec_from_config() -> None:
    config = RunConfig(
        devices=3,
        network="4g",
        up_schedule=[[0, 10], [30, 2]],
        device_overrides={1: DeviceOverride(up_mbps=5), 2: DeviceOverride(down_schedule=[[0, 8], [1, 1]])},
    ).validate()
    up = link_spec(config, 0, "up", origin=7.0)
    assert up.rate_bps == 10e6 and up.latency_s == pytest.approx(0.03) and not up.kernel_paced
    assert up.schedule == RateSchedule(((0.0, 10e6), (30.0, 2e6)), origin=7.0)
    assert link_spec(config, 1, "up", 7.0) == LinkSpec(5e6, 0.03)  # the device's fixed rate beats the run's schedule
    assert link_spec(config, 0, "down", 7.0) == LinkSpec(25e6, 0.03)  # one step: no schedule needed
    assert link_spec(config, 2, "down", 7.0).finish(7.0, 1_000_000) == pytest.approx(8.0)  # 8 Mbit at 8 Mbit/s
    # with network namespaces the kernel applies the rates: the user-space link keeps only the latency
    config.netns = True
    kernel = link_spec(config, 0, "up", 7.0)
    assert kernel == LinkSpec(math.inf, 0.03, kernel_paced=True)
    assert kernel.finish(7.5, 10**9) == 7.5


# --- the outbox and inbox around a schedule ------------------------------------------------------------------------


def _lane(n: int, resource: Resource = Resource.UPLINK) -> list[Action]:
    return [
        Action(Key(resource, 0, Op.ACTIVATION, 0, 0, m), 1, (Key(Resource.DEVICE, 0, Op.FORWARD, 0, 0, m),))
        for m in range(n)
    ]


def test_outbox_paces_messages_by_the_schedule() -> None:
    # 1.6 kbit/s up to the change, then 160 kbit/s. The change comes as the messages are handed over: a 1.5 kB
    # message (12 kbit) needs 7.5 s at the first rate, so it is still leaving when the rate rises, and its remaining
    # bits go at the second; the next one goes at the second rate alone. The schedule is set once the messages are
    # queued, as the link reads it only when it paces them.
    recorder = Recorder()
    outbox = Outbox()
    outbox.follow(LinkSpec(1.6e3, 0.0), _lane(2), "device0/uplink", recorder)
    for m in range(2):
        outbox.send(Key(Resource.DEVICE, 0, Op.FORWARD, 0, 0, m), bytes(1500 - 20))
    change = time.time()  # after both were handed over
    schedule = RateSchedule(((0.0, 1.6e3), (1.0, 160e3)), origin=change - 1.0)
    outbox.spec = LinkSpec(1.6e3, 0.0, schedule=schedule)
    outbox.close()
    assert len(list(outbox)) == 2
    first, second = recorder.events
    bits = first.args["bytes"] * 8
    assert first.start <= change  # handed over before the change ...
    sent_before = 1.6e3 * (change - first.start)
    assert sent_before < bits  # ... with most of it still to go
    assert first.end == pytest.approx(change + (bits - sent_before) / 160e3)
    assert second.start == first.end
    assert second.duration == pytest.approx(second.args["bytes"] * 8 / 160e3)
    assert time.time() >= second.end  # delivered only once it has left


def test_kernel_paced_transfers_are_timed_by_the_receiver() -> None:
    # the sender stamps when it hands a message to the network and records nothing; the receiver records the
    # transfer from that stamp (or the previous arrival, if later) to the arrival
    sender = Recorder()
    outbox = Outbox()
    outbox.follow(LinkSpec(math.inf, 0.0, kernel_paced=True), _lane(2), "device0/uplink", sender)
    before = time.time()
    for m in range(2):
        outbox.send(Key(Resource.DEVICE, 0, Op.FORWARD, 0, 0, m), b"x" * 100)
    outbox.close()
    sent = list(outbox)
    assert sender.events == [] and outbox.bytes_sent > 0
    assert all(before <= e.clock <= time.time() for e in sent)

    def slow_network():  # the first message takes 0.1 s to arrive, the second is right behind it
        time.sleep(0.1)
        yield sent[0]
        yield sent[1]

    receiver = Recorder()
    inbox = Inbox(slow_network(), "device 0", timeout_s=5)
    lane = _lane(2)
    inbox.time_transfers(lane, "device0/uplink", receiver)
    for action in lane:
        inbox.expect(action.key)
    first, second = receiver.events
    assert [e.name for e in receiver.events] == [str(a.key) for a in lane]
    assert first.start == sent[0].clock and first.duration >= 0.1
    assert second.start == first.end  # it waited behind the first: the link was busy until then
    assert first.args == {"bytes": sent[0].ByteSize(), "epoch": 1}


def test_an_untimed_inbox_records_nothing_and_leaves_the_timing_alone() -> None:
    # two stamped messages; the inbox is asked to time transfers only after taking the first: the second's event
    # runs from its own stamp, not from the first's arrival, so taking the first left nothing behind
    lane = _lane(2)
    sent = [
        envelope(pb.ACTIVATION, 0, round=0, iteration=0, microbatch=m, tensors=b"x", clock=5.0 + m) for m in range(2)
    ]
    inbox = Inbox(iter(sent), "device 0", timeout_s=5)
    assert inbox.expect(lane[0].key) == sent[0]
    recorder = Recorder()
    inbox.time_transfers(lane, "device0/uplink", recorder)
    assert inbox.expect(lane[1].key) == sent[1]
    [event] = recorder.events
    assert (event.name, event.start) == (str(lane[1].key), 6.0)
