"""Tests for the gRPC helpers and the Inbox: a real loopback round trip, deadlines, protocol and tag checks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
import torch

from pipelearn.schedule import Key, Op, Resource
from pipelearn.transport import inbox as inbox_module
from pipelearn.transport import liveness
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError, decode, encode
from pipelearn.transport.inbox import Inbox, PeerError, RunOver
from pipelearn.transport.link import Outbox
from pipelearn.transport.service import (
    PROTOCOL_VERSION,
    envelope,
    heartbeat,
    open_session,
    parse_envelope,
    start_server,
)

Handler = Callable[[Iterator[pb.Envelope], grpc.ServicerContext], Iterator[pb.Envelope]]


def _echo(requests: Iterator[pb.Envelope], context: grpc.ServicerContext) -> Iterator[pb.Envelope]:
    yield from requests


def _silent(requests: Iterator[pb.Envelope], context: grpc.ServicerContext) -> Iterator[pb.Envelope]:
    for _ in requests:
        pass
    return
    yield


def _broken(requests: Iterator[pb.Envelope], context: grpc.ServicerContext) -> Iterator[pb.Envelope]:
    next(requests)
    context.abort(grpc.StatusCode.INTERNAL, "the server fell over")
    yield


class Loopback:
    """A server on 127.0.0.1 with one handler, and sessions to it that are all closed at the end."""

    def __init__(self, handler: Handler) -> None:
        self.server, self.port = start_server(handler, "127.0.0.1:0", workers=4)
        self.channels: list[grpc.Channel] = []
        self.outboxes: list[Outbox] = []

    def session(self, timeout_s: float = 5.0) -> tuple[Outbox, Inbox]:
        outbox = Outbox()
        channel, replies = open_session(f"127.0.0.1:{self.port}", iter(outbox))
        self.channels.append(channel)
        self.outboxes.append(outbox)
        return outbox, Inbox(replies, "the echo server", timeout_s)

    def close(self) -> None:
        for outbox in self.outboxes:
            outbox.close()
        for channel in self.channels:
            channel.close()
        self.server.stop(None)


@pytest.fixture
def loopback() -> Iterator[Callable[[Handler], Loopback]]:
    made: list[Loopback] = []

    def make(handler: Handler) -> Loopback:
        made.append(Loopback(handler))
        return made[-1]

    yield make
    for lb in made:
        lb.close()


def test_round_trip_through_grpc(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_echo).session()
    act = torch.randn(3, 4)
    sent = [
        envelope(pb.HELLO, 2, text="hello", clock=12.5),
        envelope(pb.ACTIVATION, 2, round=1, iteration=7, microbatch=3, tensors=encode({"x": act})),
        envelope(pb.WEIGHTS, 2, round=1, tensors=encode({"w": torch.ones(2)})),
    ]
    for e in sent:
        outbox.control(e)
    hello = inbox.take()
    assert hello == sent[0] and hello.protocol == PROTOCOL_VERSION and hello.clock == 12.5
    got = inbox.expect(Key(Resource.UPLINK, 2, Op.ACTIVATION, 1, 7, 3))
    assert got.device == 2
    assert torch.equal(decode(got.tensors, {"x": ((3, 4), torch.float32)})["x"], act)
    weights = inbox.expect(Key(Resource.UPLINK, 2, Op.WEIGHTS, 1))
    assert weights.iteration == -1
    assert inbox.bytes_received == sum(e.ByteSize() for e in sent[1:])  # the HELLO is not a transfer
    outbox.close()
    with pytest.raises(PeerError, match="the echo server disconnected"):
        inbox.take()
    with pytest.raises(PeerError, match="disconnected"):  # and stays so
        inbox.take()


def test_sessions_are_independent(loopback: Callable[[Handler], Loopback]) -> None:
    lb = loopback(_echo)
    sessions = [lb.session() for _ in range(3)]
    for d, (outbox, _) in enumerate(sessions):
        outbox.control(envelope(pb.READY, d, text=str(d)))
    for d, (_, inbox) in enumerate(sessions):
        assert inbox.take().text == str(d)


def test_timeout_names_the_deadline(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_silent).session(timeout_s=0.2)
    outbox.control(envelope(pb.HELLO, 0))
    pattern = r"the echo server sent nothing towards its next message for \d+\.\d s, \d+\.\d s past its deadline"
    with pytest.raises(PeerError, match=pattern + r" of 0\.2 s \(timeout_s\)"):
        inbox.take()


def test_timeout_on_a_local_stream() -> None:
    release = threading.Event()

    def stream() -> Iterator[pb.Envelope]:
        release.wait(5)
        yield envelope(pb.DONE, 0)

    inbox = Inbox(stream(), "device 3", timeout_s=0.05)
    with pytest.raises(PeerError, match=r"device 3 sent nothing towards its next message .* deadline of 0\.05 s"):
        inbox.take()
    release.set()
    assert inbox.take().kind == pb.DONE  # a late message is still delivered after a timeout


def test_wrong_protocol_version_is_refused(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_echo).session()
    wrong = envelope(pb.HELLO, 0)
    wrong.protocol = PROTOCOL_VERSION + 1
    outbox.control(wrong)
    with pytest.raises(WireError, match=f"protocol {PROTOCOL_VERSION + 1}; this side speaks {PROTOCOL_VERSION}"):
        inbox.take()


def test_error_message_raises_peer_error_with_its_text(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_echo).session()
    outbox.control(envelope(pb.ERROR, 1, text="device 1 ran out of memory"))
    with pytest.raises(PeerError, match="the echo server reported: device 1 ran out of memory"):
        inbox.take()


def test_expect_with_mismatched_tag_names_both(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_echo).session()
    outbox.control(envelope(pb.GRADIENT, 0, round=0, iteration=4, microbatch=1))
    outbox.control(envelope(pb.GRADIENT, 0, round=0, iteration=4, microbatch=2))
    with pytest.raises(WireError) as info:
        inbox.expect(Key(Resource.DOWNLINK, 0, Op.GRADIENT, 0, 4, 0))
    text = str(info.value)
    assert "expected GRADIENT for device 0 round 0 iteration 4 micro-batch 0" in text
    assert "got GRADIENT for device 0 round 0 iteration 4 micro-batch 1" in text
    with pytest.raises(WireError, match=r"expected WEIGHTS for device 0 round 0 iteration -1 .*got GRADIENT"):
        inbox.expect(Key(Resource.DOWNLINK, 0, Op.WEIGHTS, 0))


def test_done_in_place_of_a_transfer_says_the_run_is_over(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_echo).session()
    outbox.control(envelope(pb.DONE, 0, text="the target accuracy was reached"))
    with pytest.raises(RunOver, match=r"ended the run before d0\.downlink\.w\.r3: the target accuracy") as info:
        inbox.expect(Key(Resource.DOWNLINK, 0, Op.WEIGHTS, 3))
    assert isinstance(info.value, PeerError)  # to a server, a device that says so is a failed device


def test_broken_stream_raises_peer_error(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_broken).session()
    outbox.control(envelope(pb.HELLO, 0))
    with pytest.raises(PeerError, match="the stream from the echo server broke: the server fell over"):
        inbox.take()


def test_taken_port_is_refused(loopback: Callable[[Handler], Loopback]) -> None:
    lb = loopback(_echo)
    with pytest.raises((OSError, RuntimeError)):
        server, _ = start_server(_echo, f"127.0.0.1:{lb.port}", workers=1)
        server.stop(None)


def test_open_session_without_a_server_raises_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        open_session(f"127.0.0.1:{port}", iter(()), connect_timeout_s=0.2)


def test_expect_refuses_a_message_tagged_for_another_device(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_echo).session()
    outbox.control(envelope(pb.ACTIVATION, 3, round=0, iteration=0, microbatch=0))
    with pytest.raises(WireError, match=r"expected ACTIVATION for device 1 .* got ACTIVATION for device 3"):
        inbox.expect(Key(Resource.UPLINK, 1, Op.ACTIVATION, 0, 0, 0))


def test_a_message_over_max_bytes_is_refused_with_both_sizes(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_echo).session()
    inbox.max_bytes = 100
    outbox.control(envelope(pb.READY, 0, text="x" * 50))
    outbox.control(envelope(pb.READY, 0, text="x" * 200))
    assert inbox.take().text == "x" * 50
    with pytest.raises(WireError, match=r"sent a message of 2\d\d bytes; the plan allows at most 100"):
        inbox.take()


def test_a_peer_that_floods_waits_behind_the_in_flight_bound() -> None:
    handed: list[int] = []

    def flood() -> Iterator[pb.Envelope]:
        for i in range(1000):
            handed.append(i)
            yield envelope(pb.READY, 0, text=str(i))

    inbox = Inbox(flood(), "a flood", timeout_s=5.0, in_flight=4)
    deadline = threading.Event()
    deadline.wait(0.3)  # the reading thread has had every chance to read on
    assert len(handed) <= 4 + 2  # the bound, plus the one in the reader's hand and the one being made
    assert [inbox.take().text for _ in range(10)] == [str(i) for i in range(10)]


def _judge(requests: Iterator[pb.Envelope], context: grpc.ServicerContext) -> Iterator[pb.Envelope]:
    inbox = Inbox(requests, "the device", 5.0)
    try:
        while True:
            yield inbox.take()
    except WireError as exc:
        yield envelope(pb.ERROR, 0, text=str(exc))


def test_a_malformed_envelope_is_refused_with_a_reason(loopback: Callable[[Handler], Loopback]) -> None:
    lb = loopback(_judge)
    channel = grpc.insecure_channel(f"127.0.0.1:{lb.port}")
    call = channel.stream_stream(
        "/pipelearn.PipeLearn/Session", request_serializer=lambda b: b, response_deserializer=parse_envelope
    )
    good = envelope(pb.HELLO, 0).SerializeToString()
    inbox = Inbox(call(iter([good, b"\xff\xff\xff\xff\x0f"])), "the server", 5.0)
    assert inbox.take().kind == pb.HELLO
    with pytest.raises(PeerError, match="the device sent a malformed message: a message of 5 bytes is not a protobuf"):
        inbox.take()
    channel.close()


def test_an_error_text_is_logged_safely(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_echo).session()
    outbox.control(envelope(pb.ERROR, 1, text="\x1b[2J" + "y" * 5000))
    with pytest.raises(PeerError) as info:
        inbox.take()
    assert "\x1b" not in str(info.value) and "\\x1b" in str(info.value) and len(str(info.value)) < 1100


class Clock:
    """The clock an inbox holds its peer to, in place of the wall clock: only a scripted peer moves it on."""

    def __init__(self) -> None:
        self.at = 1000.0
        self.taker = threading.get_ident()
        """The thread that takes from the inbox, and so checks the peer's limits while it waits."""
        self._lock = threading.Lock()
        self._read = threading.Event()

    def now(self) -> float:
        """The clock's reading."""
        with self._lock:
            if threading.get_ident() == self.taker:
                self._read.set()
            return self.at

    def advance(self, seconds: float) -> None:
        """Move on by `seconds`, then wait until the taking thread has read the clock: held the peer to its limits."""
        with self._lock:
            self._read.clear()
            self.at += seconds
        self._read.wait(10)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A Clock that the inbox and its rule of liveness read for the rest of the test."""
    made = Clock()
    monkeypatch.setattr(inbox_module, "now", made.now)
    monkeypatch.setattr(liveness, "now", made.now)
    return made


class Peer:
    """A local stream that a test scripts: heartbeats at a pace, then a message, then it stays open (or hangs)."""

    def __init__(self, pause: Callable[[float], None] = time.sleep) -> None:
        self.begin = threading.Event()
        self.end = threading.Event()
        self.pause = pause
        """How the peer spends the seconds before each heartbeat: sleeping, or moving a Clock on."""

    def stream(self, beats: list[tuple[float, int, float]], then: pb.Envelope | None = None) -> Iterator[pb.Envelope]:
        """Each beat is (seconds to wait before it, progress, backlog)."""
        self.begin.wait(10)
        for wait_s, progress, backlog in beats:
            self.pause(wait_s)
            yield heartbeat(2, progress, backlog)
        if then is not None:
            yield then
        self.end.wait(10)


@pytest.fixture
def peer() -> Iterator[Peer]:
    made = Peer()
    made.begin.set()
    yield made
    made.end.set()


@pytest.fixture
def paced_peer(clock: Clock) -> Iterator[Peer]:
    """A Peer whose pauses move the inbox's clock on: the inbox sees each pause whole, however busy the machine."""
    made = Peer(clock.advance)
    made.begin.set()
    yield made
    made.end.set()


def _inbox(stream: Iterator[pb.Envelope], **limits: float | bool) -> tuple[Inbox, list[str]]:
    inbox = Inbox(stream, "device 2", **limits)  # type: ignore[arg-type]
    warnings: list[str] = []
    inbox.warn = warnings.append
    return inbox, warnings


def test_heartbeats_are_taken_off_the_stream_and_update_what_is_known(peer: Peer) -> None:
    beats = [(0.0, 1, 0.5), (0.0, 2, 0.5), (0.0, 3, 0.25)]
    inbox, _ = _inbox(peer.stream(beats, envelope(pb.DONE, 2)), timeout_s=5.0)
    assert inbox.take().kind == pb.DONE
    assert (inbox.state.beats, inbox.state.done, inbox.state.backlog_s) == (3, 3, 0.25)


def test_a_peer_that_goes_silent_is_dropped_within_the_liveness_limit(peer: Peer) -> None:
    inbox, _ = _inbox(peer.stream([(0.0, 1, 0.0), (0.05, 2, 0.0)]), timeout_s=30.0, liveness_s=0.3)
    pattern = r"device 2 is unreachable: nothing heard .* not even a heartbeat, .*liveness_s 0\.3"
    with pytest.raises(PeerError, match=pattern):  # the message says silence, not the progress deadline, dropped it
        inbox.take()


def test_a_peer_alive_without_progress_is_warned_about_then_dropped(peer: Peer) -> None:
    beats = [(0.02, 1, 0.0)] * 250
    inbox, warnings = _inbox(peer.stream(beats), timeout_s=0.3, liveness_s=1.0)
    inbox.follow({Key(Resource.UPLINK, 2, Op.ACTIVATION, 0, 3, 1): 7})
    with pytest.raises(PeerError) as info:
        inbox.expect(Key(Resource.UPLINK, 2, Op.ACTIVATION, 0, 3, 1))
    text = str(info.value)
    assert text.startswith("device 2 is alive but stuck: no progress towards ACTIVATION round 0 iteration 3 micro")
    assert "s past its deadline of" in text and "6 actions to go" in text  # 7 from the schedule, 1 done
    [warning] = warnings
    assert warning.startswith("device 2 is ") and "late: no progress towards ACTIVATION round 0 iteration 3" in warning
    assert "alive, it is dropped if it shows none within another" in warning


@pytest.mark.slow
def test_a_peer_that_keeps_progressing_is_waited_for_past_its_timeout(paced_peer: Peer) -> None:
    beats = [(0.05, i + 1, 0.0) for i in range(40)]  # two seconds of progress, four times the timeout
    inbox, warnings = _inbox(paced_peer.stream(beats, envelope(pb.DONE, 2)), timeout_s=0.5, liveness_s=1.0)
    assert inbox.take().kind == pb.DONE
    assert warnings == []


def test_the_deadline_stretches_with_the_actions_left_at_the_peers_pace(clock: Clock) -> None:
    peer = Peer(clock.advance)
    key = Key(Resource.UPLINK, 2, Op.WEIGHTS, 0)
    # two actions at 0.15 s each, inside the floor of 0.2 s, then a pause of 0.8 s: 8 actions to go x 0.15 s x MARGIN
    # allows it, the floor (dropped past twice 0.2 s) not
    beats = [(0.15, 1, 0.0), (0.15, 2, 0.0)] + [(0.1, 2, 0.0)] * 8
    inbox, warnings = _inbox(peer.stream(beats, envelope(pb.WEIGHTS, 2, round=0)), timeout_s=0.2, liveness_s=1.0)
    inbox.follow({key: 10})
    peer.begin.set()
    assert inbox.expect(key).kind == pb.WEIGHTS
    assert warnings == []
    peer.end.set()


def test_a_transfer_queued_on_a_slow_link_is_waited_for_by_its_backlog(paced_peer: Peer) -> None:
    beats = [(0.1, 1, 0.5)] * 6  # no new action for 0.6 s, but half a second of transfer still queued
    inbox, warnings = _inbox(paced_peer.stream(beats, envelope(pb.DONE, 2)), timeout_s=0.1, liveness_s=1.0)
    assert inbox.take().kind == pb.DONE
    assert warnings == []


def test_a_patient_inbox_waits_as_long_as_the_peer_is_alive(paced_peer: Peer) -> None:
    beats = [(0.05, 0, 0.0)] * 12
    stream = paced_peer.stream(beats, envelope(pb.DONE, 2))
    inbox, warnings = _inbox(stream, timeout_s=0.05, liveness_s=1.0, patient=True)
    assert inbox.take().kind == pb.DONE
    assert warnings == []


def test_heartbeats_cross_grpc_beside_messages(loopback: Callable[[Handler], Loopback]) -> None:
    outbox, inbox = loopback(_echo).session()
    outbox.progress.advance()
    outbox.beat(0.02, 4)
    give_up = time.time() + 10
    while inbox.state.beats < 3:
        assert time.time() < give_up
        time.sleep(0.01)
    outbox.control(envelope(pb.HELLO, 4))
    assert inbox.take().kind == pb.HELLO  # the echoed heartbeats never come out of take
    assert inbox.state.done == 1
    assert inbox.bytes_received == 0
