"""Emulated links: bytes leave at a set bit rate and arrive after a one-way latency (user-space token bucket);
heartbeats pass them by."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelearn.events import Recorder, now
from pipelearn.schedule import Action, Key
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.liveness import Progress
from pipelearn.transport.service import heartbeat, transfer

if TYPE_CHECKING:
    from pipelearn.transport.rates import RateSchedule


@dataclass(frozen=True)
class LinkSpec:
    """One direction of a link: bits per second (inf for unlimited) and one-way latency in seconds."""

    rate_bps: float
    latency_s: float
    schedule: RateSchedule | None = None
    """The rate over time, where it changes during the run; rate_bps is then its first rate."""
    kernel_paced: bool = False
    """The kernel paces the bytes (network namespaces): the message is stamped with when it left this side, and
    the receiver times the transfer."""

    @classmethod
    def from_mbps(cls, mbps: float, latency_ms: float) -> LinkSpec:
        """A link from a rate in Mbit/s and a latency in ms."""
        return cls(mbps * 1e6, latency_ms / 1e3)

    def transmit_s(self, nbytes: int) -> float:
        """Seconds to put nbytes on the wire."""
        return 0.0 if math.isinf(self.rate_bps) else nbytes * 8 / self.rate_bps

    def finish(self, start: float, nbytes: int) -> float:
        """The clock reading at which nbytes put on the wire at `start` have left, across rate changes."""
        return self.schedule.finish(start, nbytes) if self.schedule else start + self.transmit_s(nbytes)


_Leaving = tuple[Action | None, pb.Envelope, int, float, float]
"""A paced message on its way: its action (None for control), envelope, size, and busy start and end."""


class Outbox:
    """Messages to one peer, in order, paced through an emulated link; iterate it to feed a gRPC stream.

    `send` hands over a scheduled transfer: the next action of the link's lane must be the one that waits on the
    action that made the tensors, and it gives the message its tag. The link is busy for a message's bytes at its
    rate, from when it was handed over or when the previous message left, whichever is later; the message is
    delivered one latency after that. Once `beat` is called, a heartbeat goes out every so often on the same
    stream, between paced messages and never behind them: it reports `progress` and the link's backlog.
    """

    def __init__(
        self,
        spec: LinkSpec | None = None,
        track: str = "",
        recorder: Recorder | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.spec = spec or LinkSpec(math.inf, 0.0)
        self.track = track
        self.recorder = recorder
        self.progress = progress or Progress()
        """This side's count of schedule actions done, which its heartbeats report."""
        self.bytes_sent = 0
        """Bytes of the scheduled transfers sent (activations, gradients, weights), not of control messages."""
        self._lane: Iterator[Action] = iter(())
        self._queue: deque[tuple[float, Action | None, pb.Envelope, int]] = deque()
        self._pending: _Leaving | None = None
        self._closed = False
        self._free_at = 0.0
        self._due_at = 0.0
        self._beat_s = math.inf
        self._beat_at = math.inf
        self._device = 0
        self._sending = threading.Lock()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._unsent = 0
        self.drained = threading.Event()
        """Set once the stream has ended and gRPC has sent everything queued before `close`."""

    def follow(self, spec: LinkSpec, lane: list[Action], track: str, recorder: Recorder) -> None:
        """Set the link and the lane of scheduled transfers it carries from now on."""
        self.spec, self._lane, self.track, self.recorder = spec, iter(lane), track, recorder

    def replace_lane(self, lane: list[Action]) -> None:
        """Carry `lane` from now on in place of what was left of the one followed (a run re-planned)."""
        with self._sending:
            self._lane = iter(lane)

    def beat(self, every_s: float, device: int) -> None:
        """Send a heartbeat now and every `every_s` seconds from now on, tagged with `device`."""
        with self._changed:
            self._beat_s, self._beat_at, self._device = every_s, now(), device
            self._changed.notify_all()

    def send(self, made_by: Key, tensors: bytes, text: str = "") -> pb.Envelope:
        """Queue the transfer that the schedule says follows the action `made_by`, tagged as the schedule says (with
        `text` beside its tensors)."""
        with self._sending:  # not the link's lock: heartbeats go on while a big message is being built
            action = next(self._lane, None)
            if action is None or action.deps != (made_by,):
                raise RuntimeError(f"schedule violated: {made_by} produced a message but the link expects {action}")
            message = transfer(action.key, tensors, text)
            with self._changed:
                self._put(action, message)
        return message

    def control(self, envelope: pb.Envelope) -> None:
        """Queue a message outside the schedule (handshake, errors, the end)."""
        with self._changed:
            self._put(None, envelope)

    def close(self) -> None:
        """End the stream once everything queued has left."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def backlog_s(self) -> float:
        """Seconds until what is queued on the link has been delivered, at its rate and latency."""
        with self._lock:
            return self._backlog_s(now())

    def _put(self, action: Action | None, envelope: pb.Envelope) -> None:
        self._queue.append((now(), action, envelope, envelope.ByteSize()))
        self._unsent += 1
        self._changed.notify_all()

    def flush(self, timeout_s: float) -> None:
        """Wait until every message queued so far has left (and its transfer is recorded)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._unsent == 0, timeout_s):
                raise TimeoutError(f"messages still queued after {timeout_s:g} s")

    def _backlog_s(self, at: float) -> float:
        end = max(self._free_at, at)
        for handed_over, _, _, size in self._queue:
            end = self.spec.finish(max(handed_over, end), size)
        due = end + self.spec.latency_s if self._queue else self._due_at
        return max(due - at, 0.0)

    def __iter__(self) -> Iterator[pb.Envelope]:
        while (item := self._next()) is not None:
            if isinstance(item, pb.Envelope):
                yield item
                continue
            action, envelope, size, start, end = item
            if action is not None:
                self.bytes_sent += size
                if self.recorder is not None and self.spec.kernel_paced:
                    envelope.clock = now() + self.recorder.offset  # the receiver times the transfer
                elif self.recorder is not None:
                    self.recorder.record(self.track, str(action.key), start, end, bytes=size, epoch=action.epoch)
            yield envelope
            with self._changed:  # gRPC asks for the next message only once the one before has been sent
                self._unsent -= 1
                self._changed.notify_all()
        self.drained.set()

    def _next(self) -> pb.Envelope | _Leaving | None:
        """Wait for the next thing to send: a heartbeat, the paced message now due, or None at the end."""
        with self._changed:
            while True:
                at = now()
                if self._pending is None and self._queue:
                    handed_over, action, envelope, size = self._queue.popleft()
                    start = max(handed_over, self._free_at)
                    self._free_at = self.spec.finish(start, size)
                    self._due_at = self._free_at + self.spec.latency_s
                    self._pending = (action, envelope, size, start, self._free_at)
                if self._pending is not None and at >= self._due_at:
                    leaving, self._pending = self._pending, None
                    return leaving
                if at >= self._beat_at:
                    self._beat_at = at + self._beat_s
                    return heartbeat(self._device, self.progress.done, self._backlog_s(at))
                if self._pending is None and self._closed:
                    return None
                wake = min(self._due_at if self._pending is not None else math.inf, self._beat_at)
                self._changed.wait(None if math.isinf(wake) else wake - at)
