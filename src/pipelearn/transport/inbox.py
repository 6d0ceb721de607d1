"""Messages from one peer, read off a gRPC stream by a thread and taken in order, with a deadline."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from pipelearn.schedule import Key
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError
from pipelearn.transport.service import KIND_OF_TRANSFER, PROTOCOL_VERSION, kind_name, printable


class PeerError(RuntimeError):
    """The peer failed, went silent, disconnected or reported an error."""


class RunOver(PeerError):
    """The peer said the run is over (DONE) where the schedule expected a transfer: it ended early."""


_CLOSED = object()


class Inbox:
    """The stream of one peer's messages; `take` and `expect` wait at most `timeout_s` for the next one.

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
    ) -> None:
        self.peer = peer
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.bytes_received = 0
        """Bytes of the scheduled transfers taken with `expect`, not of control messages."""
        self._queue: queue.Queue[object] = queue.Queue(maxsize=in_flight)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True, name=f"inbox-{peer}")
        self._thread.start()

    def _read(self, stream: Iterator[pb.Envelope | WireError]) -> None:
        try:
            for envelope in stream:
                self._queue.put(envelope)
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
        if isinstance(item, WireError):
            raise WireError(f"{self.peer} sent a malformed message: {item}")
        if isinstance(item, Exception):
            raise PeerError(f"the stream from {self.peer} broke: {_describe(item)}")
        assert isinstance(item, pb.Envelope)
        if item.protocol != PROTOCOL_VERSION:
            raise WireError(f"{self.peer} speaks protocol {item.protocol}; this side speaks {PROTOCOL_VERSION}")
        if item.kind == pb.ERROR:
            raise PeerError(f"{self.peer} reported: {printable(item.text)}")
        if self.max_bytes is not None and (size := item.ByteSize()) > self.max_bytes:
            raise WireError(f"{self.peer} sent a message of {size} bytes; the plan allows at most {self.max_bytes}")
        return item

    def expect(self, key: Key) -> pb.Envelope:
        """The next message, which must be the transfer `key` names (kind and round/iteration/micro-batch tag)."""
        envelope = self.take()
        if envelope.kind == pb.DONE:
            raise RunOver(f"{self.peer} ended the run before {key}: {envelope.text}")
        kind = KIND_OF_TRANSFER[key.op]
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
        return envelope


def _describe(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    text = str(details()) if callable(details) else str(exc)
    return text or "gRPC ended the call without a reason: the peer went away, or sent a message over the size limit"
