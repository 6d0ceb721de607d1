"""Who takes part in which round: the server actions done, devices dropped and taken back, and a log of both.

A device takes part in the rounds of its spans: [0, the round it was dropped in), then from the round it rejoined
at. The coordinator's AGGREGATE of a round waits only for the devices that take part in that round, so a dropped
device holds nobody up, and a rejoined one is waited for from its first round on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pipelearn.events import now
from pipelearn.schedule import COORDINATOR, Key, Op


class RejoinError(RuntimeError):
    """A dropped device cannot be taken back (the run has no round left, or the mode does not allow it)."""


class Membership:
    """Server actions done and device spans, behind one condition every waiting lane watches."""

    def __init__(
        self, devices: int, dropped: Iterable[Mapping[str, Any]] = (), rejoined: Iterable[Mapping[str, Any]] = ()
    ):
        self._cond = threading.Condition()
        self._done: set[Key] = set()
        self._open_from: dict[int, int | None] = dict.fromkeys(range(devices), 0)
        """Per device, the round its current span began, or None while it is out of the run."""
        self._closed: dict[int, list[tuple[int, int]]] = {d: [] for d in range(devices)}
        self._reserved: set[int] = set()
        self._aborted = False
        self.rounds = 0
        self.rounds_done = 0
        self._first_round = 0
        self._start: float | None = None
        self.dropped: list[dict[str, Any]] = [dict(e) for e in dropped]
        """Each drop: device, round, time_s since the run's start, reason."""
        self.rejoined: list[dict[str, Any]] = [dict(e) for e in rejoined]
        """Each return: device, the round it rejoined at, time_s since the run's start."""

    def begin(self, rounds: int, first_round: int, start: float) -> None:
        """Training starts at `first_round` of `rounds` (later than 0 when resumed); times count from `start`."""
        with self._cond:
            self.rounds, self.rounds_done, self._first_round, self._start = rounds, first_round, first_round, start
            for d in self._open_from:
                self._open_from[d] = first_round

    def elapsed(self) -> float:
        """Seconds since the run's start (0 before it)."""
        return 0.0 if self._start is None else now() - self._start

    def takes_part(self, device: int, round: int) -> bool:
        """Whether a device does the work of a round (the coordinator always does)."""
        with self._cond:
            return self._takes_part(device, round)

    def _takes_part(self, device: int, round: int) -> bool:
        if device == COORDINATOR:
            return True
        first = self._open_from[device]
        return (first is not None and round >= first) or any(a <= round < b for a, b in self._closed[device])

    def is_out(self, device: int) -> bool:
        """Whether a device is out of the run now (dropped and not taken back)."""
        with self._cond:
            return self._open_from[device] is None

    def done(self, key: Key) -> None:
        """Mark one server action done (an AGGREGATE also closes its round)."""
        with self._cond:
            self._done.add(key)
            if key.op is Op.AGGREGATE:
                self.rounds_done = max(self.rounds_done, key.round + 1)
            self._cond.notify_all()

    def wait(self, key: Key, timeout_s: float | None = None) -> None:
        """Block until an action is done (those of rounds before a resumed run's first were done before it), or its
        device takes no part in its round, or the run is aborted."""
        with self._cond:
            finished = self._cond.wait_for(
                lambda: (
                    key in self._done
                    or key.round < self._first_round
                    or self._aborted
                    or not self._takes_part(key.device, key.round)
                ),
                timeout_s,
            )
            if not finished:
                raise RuntimeError(f"server action {key} did not finish within {timeout_s:g} s")

    def drop(self, device: int, round: int, reason: str) -> None:
        """Take a device out of the run from `round` on (its work of that round is left out)."""
        with self._cond:
            first = self._open_from[device]
            if first is None:
                return
            if round > first:
                self._closed[device].append((first, round))
            self._open_from[device] = None
            self.dropped.append({"device": device, "round": round, "time_s": self.elapsed(), "reason": reason})
            self._cond.notify_all()

    def reserve(self, device: int) -> bool:
        """Claim a dropped device's place for one connection that wants to rejoin; False if it cannot have it."""
        with self._cond:
            if self._start is None or self._open_from[device] is not None or device in self._reserved:
                return False
            self._reserved.add(device)
            return True

    def release(self, device: int) -> None:
        """Give up a reservation whose rejoin failed."""
        with self._cond:
            self._reserved.discard(device)

    def rejoin(self, device: int) -> int:
        """Take a reserved device back from the round after the one in progress; return that round."""
        with self._cond:
            self._reserved.discard(device)
            first = self.rounds_done + 1
            if first >= self.rounds:
                raise RejoinError(
                    f"device {device} cannot rejoin: the run is in its last round ({self.rounds_done} of "
                    f"{self.rounds} done) and a device rejoins at the next one"
                )
            self._open_from[device] = first
            self.rejoined.append({"device": device, "round": first, "time_s": self.elapsed()})
            self._cond.notify_all()
            return first

    def abort(self) -> None:
        """Release every waiting lane (the server itself failed)."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
