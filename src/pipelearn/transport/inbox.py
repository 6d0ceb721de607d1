"""Messages from one peer, read off a gRPC stream by a thread and taken in order, with a deadline."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from pipelearn.metrics.events import Recorder, now
from pipelearn.schedule import Action, Key
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError
from pipelearn.transport.service import KIND_OF_TRANSFER, PROTOCOL_VERSION


class PeerError(RuntimeError):
    """The peer failed, went silent, disconnected or reported an error."""


_CLOSED = object()


class Inbox:
    """The stream of one peer's messages; `take` and `expect` wait at most `timeout_s` for the next one."""

    def __init__(self, stream: Iterator[pb.Envelope], peer: str, timeout_s: float) -> None:
        self.peer = peer
        self.timeout_s = timeout_s
        self.bytes_received = 0
        """Bytes of the scheduled transfers taken with `expect`, not of control messages."""
        self._queue: queue.Queue[object] = queue.Queue()
        self._arrived = 0.0
        self._timed: tuple[dict[Key, int], str, Recorder] | None = None
        self._link_free_at = 0.0
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True, name=f"inbox-{peer}")
        self._thread.start()

    def _read(self, stream: Iterator[pb.Envelope]) -> None:
        try:
            for envelope in stream:
                self._queue.put((now(), envelope))
        except Exception as exc:  # gRPC raises RpcError subclasses when the stream breaks
            self._queue.put(exc)
        self._queue.put(_CLOSED)

    def take(self) -> pb.Envelope:
        """The next message; PeerError on silence past the deadline, a broken stream or an ERROR message."""
        try:
            item = self._queue.get(timeout=self.timeout_s)
        except queue.Empty:
            raise PeerError(f"{self.peer} sent nothing for {self.timeout_s:g} s (timeout_s)") from None
        if item is _CLOSED:
            self._queue.put(_CLOSED)
            raise PeerError(f"{self.peer} disconnected")
        if isinstance(item, Exception):
            raise PeerError(f"the stream from {self.peer} broke: {_describe(item)}")
        assert isinstance(item, tuple)
        self._arrived, item = item
        assert isinstance(item, pb.Envelope)
        if item.protocol != PROTOCOL_VERSION:
            raise WireError(f"{self.peer} speaks protocol {item.protocol}; this side speaks {PROTOCOL_VERSION}")
        if item.kind == pb.ERROR:
            raise PeerError(f"{self.peer} reported: {item.text}")
        return item

    def expect(self, key: Key) -> pb.Envelope:
        """The next message, which must be the transfer `key` names (kind and round/iteration/micro-batch tag)."""
        envelope = self.take()
        kind = KIND_OF_TRANSFER[key.op]
        got = (envelope.kind, envelope.round, envelope.iteration, envelope.microbatch)
        want = (kind, key.round, key.iteration, key.microbatch)
        if got != want:
            raise WireError(
                f"expected {pb.Kind.Name(kind)} round {key.round} iteration {key.iteration} micro-batch "
                f"{key.microbatch} from {self.peer}, got {pb.Kind.Name(envelope.kind)} round {envelope.round} "
                f"iteration {envelope.iteration} micro-batch {envelope.microbatch}"
            )
        self.bytes_received += envelope.ByteSize()
        if self._timed is not None and envelope.clock:
            self._record_transfer(key, envelope)
        return envelope

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
    return str(details()) if callable(details) else str(exc)
