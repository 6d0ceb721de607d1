"""Liveness and progress of a peer: heartbeats say it is alive and how far along it is; deadlines come from the plan.

Two questions, answered apart:

- Is the peer alive? Each side sends the other a HEARTBEAT every `heartbeat_s`, ahead of anything paced on its
  emulated link (see `link.Outbox`). A peer from which nothing arrives, not even a heartbeat, for `liveness_s` is
  dead and dropped; gRPC keepalive pings close a connection whose far end has gone, which ends the stream at once.
- Is it making progress? `deadline` is the one rule. While a receiver waits for a peer's next scheduled message,
  the peer must show progress (a heartbeat reporting more of its schedule's actions done) within

      max(timeout_s, MARGIN x expected_s),    expected_s = remaining x per_action_s + backlog_s

  of the last progress it showed or of the start of the wait, whichever is later. `remaining` is how many of its
  actions the peer still has to finish before it hands that message to its link (from the schedule, see
  `progress_marks`); `per_action_s` is its mean time per action so far in this run, and `backlog_s` what its link
  still needs for the messages queued on it (both from its heartbeats). Past the deadline the receiver warns,
  naming the peer and how late it is; late by as much again, it drops the peer as stuck. `timeout_s` is the floor
  that covers what the run has not measured yet (the first actions, joining, loading data); users raise it for long
  first steps.

A device holds the server to liveness alone: the server sees the whole plan and every device's progress, holds
each device to its deadlines, and tells a device when it drops it, so a server that is alive is busy, not stuck.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pipelearn.events import now
from pipelearn.schedule import Key, Resource, Schedule

MARGIN = 3.0
"""How many times its expected duration a peer may take to show progress before it is late."""


class Progress:
    """A thread-safe count of the actions of this side's schedule that are done; its heartbeats report it."""

    def __init__(self) -> None:
        self._done = 0
        self._lock = threading.Lock()

    def advance(self) -> None:
        """Count one more action done."""
        with self._lock:
            self._done += 1

    @property
    def done(self) -> int:
        """Actions done so far."""
        return self._done


class PeerState:
    """What a receiver has heard from its peer, written by the thread reading the stream."""

    def __init__(self) -> None:
        self.heard_at = now()
        """When anything (a message or a heartbeat) last arrived."""
        self.beats = 0
        """Heartbeats received."""
        self.done = 0
        """Actions of its schedule the peer reported done."""
        self.progressed_at = self.heard_at
        """When `done` last rose."""
        self.backlog_s = 0.0
        """Seconds its link needed, at its last heartbeat, for what was queued on it."""
        self.started_at: float | None = None
        """When the peer began its schedule; None before."""

    def heard(self) -> None:
        """Something arrived."""
        self.heard_at = now()

    def beat(self, progress: int, backlog_s: float) -> None:
        """A heartbeat arrived, with the peer's count of actions done and its link's backlog."""
        at = now()
        if progress > self.done:
            self.done, self.progressed_at = progress, at
        self.backlog_s = backlog_s
        self.beats += 1
        self.heard_at = at

    def start(self) -> None:
        """The peer begins its schedule now: its actions are counted from here."""
        self.started_at = now()
        self.done, self.progressed_at = 0, self.started_at

    def per_action_s(self) -> float:
        """Its mean seconds per action so far in this run (waits included); 0 before it has done one."""
        if self.started_at is None or self.done == 0:
            return 0.0
        return max(self.progressed_at - self.started_at, 0.0) / self.done


@dataclass(frozen=True)
class Deadline:
    """How long a peer has to show progress, and what that comes from."""

    seconds: float
    floor_s: float
    remaining: int
    per_action_s: float
    backlog_s: float

    @property
    def expected_s(self) -> float:
        """The expected time to the message: its remaining actions at its pace so far, then its link's backlog."""
        return self.remaining * self.per_action_s + self.backlog_s

    def __str__(self) -> str:
        expected = (
            f"expected {self.expected_s:.1f} s: {self.remaining} actions to go x {self.per_action_s:.2f} s "
            f"+ {self.backlog_s:.1f} s queued on its link"
        )
        if self.seconds > self.floor_s:
            return f"{self.seconds:.1f} s ({MARGIN:g} x {expected})"
        return f"{self.seconds:g} s (timeout_s; {expected})" if self.expected_s else f"{self.seconds:g} s (timeout_s)"


def deadline(peer: PeerState, remaining: int, floor_s: float) -> Deadline:
    """The rule: the peer must show progress within max(floor_s, MARGIN x expected) (see the module's docstring)."""
    per_action_s, backlog_s = peer.per_action_s(), peer.backlog_s
    expected_s = remaining * per_action_s + backlog_s
    return Deadline(max(floor_s, MARGIN * expected_s), floor_s, remaining, per_action_s, backlog_s)


def progress_marks(schedule: Schedule, device: int, first_round: int = 0) -> dict[Key, int]:
    """For each transfer a device sends from `first_round` on, how many of its compute lane's actions from there
    precede it (the one making it too)."""
    lane = schedule.lane(Resource.DEVICE, device, first_round)
    position = {action.key: i + 1 for i, action in enumerate(lane)}
    return {action.key: position[action.deps[0]] for action in schedule.lane(Resource.UPLINK, device, first_round)}
