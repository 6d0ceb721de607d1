"""Emulated links: bytes leave at a set bit rate and arrive after a one-way latency (user-space token bucket)."""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelearn.metrics.events import Recorder, now
from pipelearn.schedule import Action, Key
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.service import transfer

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


class Outbox:
    """Messages to one peer, in order, paced through an emulated link; iterate it to feed a gRPC stream.

    `send` hands over a scheduled transfer: the next action of the link's lane must be the one that waits on the
    action that made the tensors, and it gives the message its tag. The link is busy for a message's bytes at its
    rate, from when it was handed over or when the previous message left, whichever is later; the message is
    delivered one latency after that.
    """

    def __init__(self, spec: LinkSpec | None = None, track: str = "", recorder: Recorder | None = None) -> None:
        self.spec = spec or LinkSpec(math.inf, 0.0)
        self.track = track
        self.recorder = recorder
        self.bytes_sent = 0
        """Bytes of the scheduled transfers sent (activations, gradients, weights), not of control messages."""
        self._lane: Iterator[Action] = iter(())
        self._queue: queue.Queue[tuple[float, Action | None, pb.Envelope] | None] = queue.Queue()
        self._free_at = 0.0
        self._lock = threading.Lock()

    def follow(self, spec: LinkSpec, lane: list[Action], track: str, recorder: Recorder) -> None:
        """Set the link and the lane of scheduled transfers it carries from now on."""
        self.spec, self._lane, self.track, self.recorder = spec, iter(lane), track, recorder

    def send(self, made_by: Key, tensors: bytes) -> pb.Envelope:
        """Queue the transfer that the schedule says follows the action `made_by`, tagged as the schedule says."""
        with self._lock:
            action = next(self._lane, None)
            if action is None or action.deps != (made_by,):
                raise RuntimeError(f"schedule violated: {made_by} produced a message but the link expects {action}")
            message = transfer(action.key, tensors)
            self._queue.put((now(), action, message))
        return message

    def control(self, envelope: pb.Envelope) -> None:
        """Queue a message outside the schedule (handshake, errors, the end)."""
        self._queue.put((now(), None, envelope))

    def close(self) -> None:
        """End the stream once everything queued has left."""
        self._queue.put(None)

    def __iter__(self) -> Iterator[pb.Envelope]:
        while (item := self._queue.get()) is not None:
            handed_over, action, envelope = item
            size = envelope.ByteSize()
            start = max(handed_over, self._free_at)
            end = self.spec.finish(start, size)
            self._free_at = end
            delay = end + self.spec.latency_s - now()
            if delay > 0:
                time.sleep(delay)
            if action is not None:
                self.bytes_sent += size
            if action is not None and self.recorder is not None:
                if self.spec.kernel_paced:
                    envelope.clock = now() + self.recorder.offset
                else:
                    self.recorder.record(self.track, str(action.key), start, end, bytes=size, epoch=action.epoch)
            yield envelope
