"""A discrete-event simulator of a schedule: the runtime's twin, timing the same lanes from per-action costs.

Each lane runs its actions in order, each once the actions it waits for are available. Device compute, uplinks
and downlinks are one resource per lane; every server lane shares the one server compute, which takes the
action that became ready first (the runtime's lanes queue on one lock). A link, like transport/link.py's Outbox,
is busy for a message's bytes at its rate from when the message is handed over or the link frees, whichever is
later, and delivers it one latency later.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelearn.metrics.events import Event, compute_track, link_track
from pipelearn.metrics.report import epoch_times
from pipelearn.schedule import Action, Key, Lane, Resource, Schedule


@dataclass(frozen=True)
class Cost:
    """What one action costs."""

    busy_s: float
    """Seconds it occupies its resource."""
    ready_after_s: float
    """Seconds after it starts that the actions waiting on it may use it: a transfer's delivery, the hand-over of
    a device's message (before the emulated slowdown), or simply its end."""


@dataclass
class Simulation:
    """When every action of a schedule started and ended, and what that makes of epochs and resources."""

    schedule: Schedule
    start: dict[Key, float] = field(default_factory=dict)
    end: dict[Key, float] = field(default_factory=dict)

    @property
    def makespan_s(self) -> float:
        """When the last action ended."""
        return max(self.end.values(), default=0.0)

    @property
    def epochs(self) -> int:
        """How many epochs the schedule spans."""
        return 1 + max((a.epoch for a in self.schedule.actions()), default=0)

    def events(self) -> list[Event]:
        """The predicted timeline, on the tracks the runtime records (metrics, traces and reports read it)."""
        return [
            Event(track_of(a.key.resource, a.key.device), str(a.key), self.start[a.key], self.end[a.key],
                  {"epoch": a.epoch})
            for a in self.schedule.actions()
        ]  # fmt: skip

    def epoch_times_s(self) -> list[float]:
        """Each epoch's time, as the runtime's report measures it."""
        return epoch_times(self.events(), 0.0, self.makespan_s, self.epochs)

    def busy_s(self) -> dict[str, float]:
        """Busy seconds of every track (each device's compute, uplink and downlink; the server's compute)."""
        busy: dict[str, float] = {}
        for a in self.schedule.actions():  # a resource does one thing at a time, so durations simply add up
            track = track_of(a.key.resource, a.key.device)
            busy[track] = busy.get(track, 0.0) + self.end[a.key] - self.start[a.key]
        return dict(sorted(busy.items()))

    def bound_s(self) -> float:
        """Busy seconds of the busiest resource: no schedule of these costs finishes sooner."""
        return max(self.busy_s().values(), default=0.0)


def track_of(resource: Resource, device: int) -> str:
    """The metrics track of a lane's resource (every server lane is the one server compute)."""
    if resource is Resource.SERVER:
        return compute_track(None)
    if resource is Resource.DEVICE:
        return compute_track(device)
    return link_track(device, str(resource))


def simulate(schedule: Schedule, cost: Callable[[Action], Cost]) -> Simulation:
    """Time every action of `schedule`; RuntimeError if it cannot finish (an action waits on one never done)."""
    sim = Simulation(schedule)
    lanes: dict[Lane, list[Action]] = {lane: actions for lane, actions in schedule.lanes.items() if actions}
    lane_of = {a.key: lane for lane, actions in lanes.items() for a in actions}
    waiting: dict[Key, list[Lane]] = {}
    for lane, actions in lanes.items():
        for a in actions:
            for dep in a.deps:
                if dep not in lane_of:
                    raise RuntimeError(f"{a.key} waits on {dep}, which no lane of the schedule holds")
                waiting.setdefault(dep, []).append(lane)
    available: dict[Key, float] = {}
    position = dict.fromkeys(lanes, 0)
    lane_free = dict.fromkeys(lanes, 0.0)
    server_free = 0.0
    queued: set[Lane] = set()
    ready: list[tuple[float, int, Lane]] = []
    order = 0

    def offer(lane: Lane) -> None:
        nonlocal order
        if lane in queued or position[lane] >= len(lanes[lane]):
            return
        action = lanes[lane][position[lane]]
        if all(dep in available for dep in action.deps):
            at = max([lane_free[lane], *(available[dep] for dep in action.deps)])
            heapq.heappush(ready, (at, order, lane))
            queued.add(lane)
            order += 1

    for lane in lanes:
        offer(lane)
    # Every start is at or after the ready time just taken, so what it makes ready is never earlier: the queue
    # hands out ready times in order, and the shared server serves its lanes first come, first served.
    while ready:
        at, _, lane = heapq.heappop(ready)
        queued.discard(lane)
        action = lanes[lane][position[lane]]
        c = cost(action)
        start = at
        if lane[0] is Resource.SERVER:
            start = max(at, server_free)
            server_free = start + c.busy_s
        sim.start[action.key], sim.end[action.key] = start, start + c.busy_s
        available[action.key] = start + c.ready_after_s
        lane_free[lane] = start + c.busy_s
        position[lane] += 1
        offer(lane)
        for other in waiting.get(action.key, ()):
            offer(other)
    stuck = [lanes[lane][i].key for lane, i in position.items() if i < len(lanes[lane])]
    if stuck:
        raise RuntimeError(f"the schedule cannot finish: {stuck[0]} waits on an action that never happens")
    return sim
