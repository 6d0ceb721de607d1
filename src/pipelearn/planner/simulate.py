"""A discrete-event simulator of a schedule: the runtime's twin, timing the same lanes from per-action costs.

Each lane runs its actions in order, each once the actions it waits for are available. Device compute, uplinks
and downlinks are one resource per lane; every server lane shares the one server compute, which takes the
action that became ready first (the runtime's lanes queue on one lock). A link, like transport/link.py's Outbox,
is busy for a message's bytes at its rate from when the message is handed over or the link frees, whichever is
later, and delivers it one latency later.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable
from dataclasses import dataclass

from pipelearn.metrics.events import Event, compute_track, link_track
from pipelearn.metrics.report import epoch_times
from pipelearn.schedule import Action, Key, Resource, Schedule


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

    actions: list[Action]
    """Every action of the schedule, lane after lane."""
    starts: list[float]
    ends: list[float]

    @functools.cached_property
    def start(self) -> dict[Key, float]:
        """When each action started."""
        return {a.key: t for a, t in zip(self.actions, self.starts, strict=True)}

    @functools.cached_property
    def end(self) -> dict[Key, float]:
        """When each action ended."""
        return {a.key: t for a, t in zip(self.actions, self.ends, strict=True)}

    @property
    def makespan_s(self) -> float:
        """When the last action ended."""
        return max(self.ends, default=0.0)

    @property
    def epochs(self) -> int:
        """How many epochs the schedule spans."""
        return 1 + max((a.epoch for a in self.actions), default=0)

    def events(self) -> list[Event]:
        """The predicted timeline, on the tracks the runtime records (metrics, traces and reports read it)."""
        return [
            Event(track_of(a.key.resource, a.key.device), str(a.key), s, e, {"epoch": a.epoch})
            for a, s, e in zip(self.actions, self.starts, self.ends, strict=True)
        ]

    def epoch_times_s(self) -> list[float]:
        """Each epoch's time, as the runtime's report measures it (from each epoch's last end)."""
        last = [0.0] * self.epochs
        for a, e in zip(self.actions, self.ends, strict=True):
            last[a.epoch] = max(last[a.epoch], e)
        marks = [Event("", "", 0.0, t, {"epoch": epoch}) for epoch, t in enumerate(last)]
        return epoch_times(marks, 0.0, self.makespan_s, self.epochs)

    def busy_s(self) -> dict[str, float]:
        """Busy seconds of every track (each device's compute, uplink and downlink; the server's compute)."""
        busy: dict[str, float] = {}
        for a, s, e in zip(self.actions, self.starts, self.ends, strict=True):
            track = track_of(a.key.resource, a.key.device)  # one thing at a time, so durations simply add up
            busy[track] = busy.get(track, 0.0) + e - s
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
    lanes = [lane for lane in schedule.lanes.values() if lane]
    actions = [a for lane in lanes for a in lane]
    index = {a.key: i for i, a in enumerate(actions)}
    first = [0]
    for actions_of_lane in lanes:
        first.append(first[-1] + len(actions_of_lane))
    lane_of = [n for n, actions_of_lane in enumerate(lanes) for _ in actions_of_lane]
    deps: list[list[int]] = []
    waiting: list[list[int]] = [[] for _ in actions]  # the lanes whose actions wait on each action
    for i, a in enumerate(actions):
        deps.append([])
        for dep in a.deps:
            if dep not in index:
                raise RuntimeError(f"{a.key} waits on {dep}, which no lane of the schedule holds")
            deps[i].append(index[dep])
            waiting[index[dep]].append(lane_of[i])
    shared = [actions_of_lane[0].key.resource is Resource.SERVER for actions_of_lane in lanes]
    starts, ends = [0.0] * len(actions), [0.0] * len(actions)
    available = [0.0] * len(actions)
    known = [False] * len(actions)
    position = first[:-1]
    lane_free = [0.0] * len(lanes)
    queued = [False] * len(lanes)
    ready: list[tuple[float, int, int]] = []
    server_free = 0.0
    order = 0

    def offer(lane: int) -> None:
        nonlocal order
        i = position[lane]
        if queued[lane] or i == first[lane + 1]:
            return
        if all(known[d] for d in deps[i]):
            heapq.heappush(ready, (max([lane_free[lane], *(available[d] for d in deps[i])]), order, lane))
            queued[lane] = True
            order += 1

    for lane in range(len(lanes)):
        offer(lane)
    # Every start is at or after the ready time just taken, so what it makes ready is never earlier: the queue
    # hands out ready times in order, and the shared server serves its lanes first come, first served.
    while ready:
        at, _, lane = heapq.heappop(ready)
        queued[lane] = False
        i = position[lane]
        c = cost(actions[i])
        if shared[lane]:
            at = max(at, server_free)
            server_free = at + c.busy_s
        starts[i], ends[i] = at, at + c.busy_s
        available[i], known[i] = at + c.ready_after_s, True
        lane_free[lane] = ends[i]
        position[lane] += 1
        offer(lane)
        for other in waiting[i]:
            offer(other)
    stuck = [actions[position[n]].key for n in range(len(lanes)) if position[n] < first[n + 1]]
    if stuck:
        raise RuntimeError(f"the schedule cannot finish: {stuck[0]} waits on an action that never happens")
    return Simulation(actions, starts, ends)
