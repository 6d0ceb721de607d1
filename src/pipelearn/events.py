"""Timed events on named tracks, recorded on a clock aligned to the server's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, overload


def now() -> float:
    """The local wall clock, in seconds."""
    return time.time()


@dataclass
class Event:
    """Something a resource did from start to end (server-clock seconds)."""

    track: str
    name: str
    start: float
    end: float
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds from start to end."""
        return self.end - self.start


def compute_track(device: int | None) -> str:
    """The track of a device's compute, or of the server's (device None)."""
    return "server/compute" if device is None else f"device{device}/compute"


def link_track(device: int, direction: str) -> str:
    """The track of a device's uplink or downlink."""
    return f"device{device}/{direction}"


class Recorder:
    """A thread-safe list of events; `offset` turns local clock readings into server-clock ones."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def record(self, track: str, name: str, start: float, end: float, **args: Any) -> None:
        """Add one event given in local clock readings."""
        with self._lock:
            self.events.append(Event(track, name, start + self.offset, end + self.offset, args))

    @contextmanager
    def span(self, track: str, name: str, **args: Any) -> Iterator[dict[str, Any]]:
        """Record the time the with-block takes; the block may add args to the yielded dict."""
        start = now()
        yield args
        self.record(track, name, start, now(), **args)

    def to_json(self) -> list[dict[str, Any]]:
        """The events as plain dicts."""
        with self._lock:
            return [asdict(e) for e in self.events]

    def unsent_json(self) -> list[dict[str, Any]]:
        """The events recorded since the last call, as plain dicts, forgotten here (a device sends its timeline in
        parts, and keeps none it has sent: over a long run they would add up)."""
        with self._lock:
            fresh, self.events = self.events, []
            return [asdict(e) for e in fresh]

    def extend_json(self, events: list[dict[str, Any]]) -> None:
        """Add events already in server-clock seconds (a device's, sent at the end)."""
        with self._lock:
            self.events.extend(Event(**e) for e in events)


class Timeline(Sequence[dict[str, Any]]):
    """The first `count` of a list of events as plain dicts, their times in seconds from `origin`, each made only when
    read: a checkpoint takes the ones it has not yet written, and the list itself is not copied."""

    def __init__(self, events: list[Event], count: int, origin: float) -> None:
        self._events, self._count, self._origin = events, count, origin

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self._plain(self._events[i]) for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return self._plain(self._events[index % self._count])

    def _plain(self, e: Event) -> dict[str, Any]:
        return {"track": e.track, "name": e.name, "start": e.start - self._origin, "end": e.end - self._origin,
                "args": dict(e.args)}  # fmt: skip
