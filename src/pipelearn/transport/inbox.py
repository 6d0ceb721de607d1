"""Messages from one peer, read off a gRPC stream by a thread and taken in order, while the peer is held to its
liveness and to its progress deadlines (the rule is in `liveness`)."""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator, Mapping

from pipelearn.events import Recorder, now
from pipelearn.schedule import Action, Key
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError
from pipelearn.transport.liveness import PeerState, deadline
from pipelearn.transport.service import KIND_OF_TRANSFER, PROTOCOL_VERSION, kind_name, printable


class PeerError(RuntimeError):
    """The peer failed, went silent, disconnected or reported an error."""


class RunOver(PeerError):
    """The peer said the run is over (DONE) where the schedule expected a transfer: it ended early."""


_CLOSED = object()
_POLL_S = 0.05
"""How often a waiting `take` checks the peer's liveness and deadline."""


def _warn(text: str) -> None:
    logging.getLogger("pipelearn.transport").warning("%s", text)


class Inbox:
    """The stream of one peer's messages; `take` and `expect` wait for the next one while the peer keeps its limits.

    Heartbeats are taken off the stream as they arrive and only update what is known of the peer (`state`).
    A peer from which nothing arrives for `liveness_s` is dead. Unless the inbox is `patient`, a peer must also show
    progress within its deadline: `timeout_s` at least, more where the schedule (`follow`) and the peer's measured
    pace say the message takes longer; late, it is warned about, and late by as much again, it has failed.

    At most `in_flight` messages wait here: past that, the reading thread stops reading, gRPC's flow control holds
    the peer back, and the memory a peer can fill is bounded. `max_bytes`, when set, is the largest message taken.
    """

    def __init__(
        self,
        stream: Iterator[pb.Envelope | WireError],
        peer: str,
        timeout_s: float,
        in_flight: int = 64,
        max_bytes: int | None = None,
        *,
        liveness_s: float = math.inf,
        patient: bool = False,
    ) -> None:
        self.peer = peer
        self.timeout_s = timeout_s
        """The floor of every progress deadline."""
        self.liveness_s = liveness_s
        """The longest the peer may send nothing at all, not even a heartbeat (inf: no limit)."""
        self.patient = patient
        """Wait as long as the peer is alive, without a progress deadline (a device waiting on the server)."""
        self.max_bytes = max_bytes
        self.bytes_received = 0
        """Bytes of the scheduled transfers taken with `expect`, not of control messages or heartbeats."""
        self.state = PeerState()
        self.warn: Callable[[str], None] = _warn
        self._marks: dict[Key, int] = {}
        self._queue: queue.Queue[object] = queue.Queue(maxsize=in_flight)
        self._arrived = 0.0
        """When the message last taken arrived (read off the stream)."""
        self._timed: tuple[dict[Key, int], str, Recorder] | None = None
        self._link_free_at = 0.0
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True, name=f"inbox-{peer}")
        self._thread.start()

    def _read(self, stream: Iterator[pb.Envelope | WireError]) -> None:
        try:
            for envelope in stream:
                if isinstance(envelope, WireError):
                    self.state.heard()
                    self._queue.put(envelope)
                elif envelope.kind == pb.HEARTBEAT and envelope.protocol == PROTOCOL_VERSION:
                    self.state.beat(envelope.progress, envelope.backlog)
                else:
                    self.state.heard()
                    self._queue.put((now(), envelope))  # the arrival time times kernel-paced transfers
        except Exception as exc:  # gRPC raises RpcError subclasses when the stream breaks
            self._queue.put(exc)
        self._queue.put(_CLOSED)

    def follow(self, marks: Mapping[Key, int]) -> None:
        """The peer starts its schedule now; `marks` says how many of its actions precede each message it sends."""
        self._marks = dict(marks)
        self.state.start()

    def remark(self, marks: Mapping[Key, int]) -> None:
        """The peer's schedule changed (a run re-planned): `marks` as in `follow`, with its progress so far kept."""
        self._marks = dict(marks)

    def take(self) -> pb.Envelope:
        """The next message; PeerError when the peer dies, misses its deadline, disconnects or sends ERROR."""
        return self._next("its next message", None)

    def expect(self, key: Key) -> pb.Envelope:
        """The next message, which must be the transfer `key` names (kind and round/iteration/micro-batch tag)."""
        kind = KIND_OF_TRANSFER[key.op]
        envelope = self._next(
            f"{pb.Kind.Name(kind)} round {key.round} iteration {key.iteration} micro-batch {key.microbatch}",
            self._marks.get(key),
        )
        if envelope.kind == pb.DONE:
            raise RunOver(f"{self.peer} ended the run before {key}: {printable(envelope.text)}")
        got = (envelope.kind, envelope.device, envelope.round, envelope.iteration, envelope.microbatch)
        want = (kind, key.device, key.round, key.iteration, key.microbatch)
        if got != want:
            raise WireError(
                f"expected {pb.Kind.Name(kind)} for device {key.device} round {key.round} iteration {key.iteration} "
                f"micro-batch {key.microbatch} from {self.peer}, got {kind_name(envelope.kind)} for device "
                f"{envelope.device} round {envelope.round} iteration {envelope.iteration} micro-batch "
                f"{envelope.microbatch}"
            )
        self.bytes_received += envelope.ByteSize()
        if self._timed is not None and envelope.clock:
            self._record_transfer(key, envelope)
        return envelope

    def _next(self, what: str, mark: int | None) -> pb.Envelope:
        began = now()
        warned_since: float | None = None
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                warned_since = self._hold_to_limits(what, mark, began, warned_since)
        if item is _CLOSED:
            self._queue.put(_CLOSED)
            raise PeerError(f"{self.peer} disconnected")
        if isinstance(item, WireError):
            raise WireError(f"{self.peer} sent a malformed message: {item}")
        if isinstance(item, Exception):
            raise PeerError(f"the stream from {self.peer} broke: {_describe(item)}")
        assert isinstance(item, tuple)
        self._arrived, item = item
        assert isinstance(item, pb.Envelope)
        if item.protocol != PROTOCOL_VERSION:
            raise WireError(f"{self.peer} speaks protocol {item.protocol}; this side speaks {PROTOCOL_VERSION}")
        if item.kind == pb.ERROR:
            raise PeerError(f"{self.peer} reported: {printable(item.text)}")
        if self.max_bytes is not None and (size := item.ByteSize()) > self.max_bytes:
            raise WireError(f"{self.peer} sent a message of {size} bytes; the plan allows at most {self.max_bytes}")
        return item

    def _hold_to_limits(self, what: str, mark: int | None, began: float, warned_since: float | None) -> float | None:
        """Raise PeerError if the peer is dead or stuck; warn once per stall when it is late; return that stall."""
        state, at = self.state, now()
        silent = at - state.heard_at
        if silent > self.liveness_s:
            raise PeerError(
                f"{self.peer} is unreachable: nothing heard from it, not even a heartbeat, for {silent:.1f} s "
                f"(liveness_s {self.liveness_s:g})"
            )
        if self.patient:
            return warned_since
        limit = deadline(state, 0 if mark is None else max(mark - state.done, 0), self.timeout_s)
        since = max(began, state.progressed_at)
        idle = at - since
        late = idle - limit.seconds
        alive = state.beats > 0
        if late > limit.seconds:
            if alive:
                raise PeerError(
                    f"{self.peer} is alive but stuck: no progress towards {what} for {idle:.1f} s, "
                    f"{late:.1f} s past its deadline of {limit}"
                )
            raise PeerError(
                f"{self.peer} sent nothing towards {what} for {idle:.1f} s, {late:.1f} s past its deadline of {limit}"
            )
        if late > 0 and warned_since != since:
            self.warn(
                f"{self.peer} is {late:.1f} s late: no progress towards {what} for {idle:.1f} s, past its deadline "
                f"of {limit}; {'alive' if alive else 'silent'}, it is dropped if it shows none within "
                f"another {limit.seconds - late:.1f} s"
            )
            return since
        return warned_since

    def time_transfers(self, lane: list[Action], track: str, recorder: Recorder) -> None:
        """Record each transfer of `lane` taken from now on, for links paced outside this program (the kernel).

        A transfer's event runs from when the sender handed it to the network (its envelope's clock, server
        time), or when the one before it arrived if that is later, to when it arrived here.
        """
        self._timed = ({a.key: a.epoch for a in lane}, track, recorder)

    def _record_transfer(self, key: Key, envelope: pb.Envelope) -> None:
        assert self._timed is not None
        epochs, track, recorder = self._timed
        start = max(envelope.clock - recorder.offset, self._link_free_at)
        self._link_free_at = self._arrived
        recorder.record(track, str(key), start, self._arrived, bytes=envelope.ByteSize(), epoch=epochs.get(key))


def _describe(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    text = str(details()) if callable(details) else str(exc)
    return text or "gRPC ended the call without a reason: the peer went away, or sent a message over the size limit"
