"""A discrete-event simulator of a schedule: the runtime's twin, timing the same lanes from per-action costs.

Each lane runs its actions in order, each once the actions it waits for are available. Device compute, uplinks
and downlinks are one resource per lane; every server lane shares the one server compute, which takes the
action that became ready first (the runtime's lanes queue on one lock). A link, like transport/link.py's Outbox,
is busy for a message's bytes at its rate from when the message is handed over or the link frees, whichever is
later, and delivers it one latency later.

Where the server and devices share one host's CPU cores (`host_cores`: `pipelearn run` starts them all on one
machine), the compute of every action in progress shares those cores: each runs at full speed while no more
actions compute than there are cores, else at cores / computing (processor sharing, as the OS shares the cores
among the processes' one-thread computations). Only an action's CPU part (Cost.cpu_s) stretches; a device's
emulated slowdown pads its compute with a wait, which absorbs a stretch up to the slowdown.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable
from dataclasses import dataclass

from pipelearn.events import Event, compute_track, link_track
from pipelearn.metrics.accounting import epoch_times
from pipelearn.schedule import COORDINATOR, Action, Key, Resource, Schedule


@dataclass(frozen=True)
class Cost:
    """What one action costs."""

    busy_s: float
    """Seconds it occupies its resource."""
    ready_after_s: float
    """Seconds after it starts that the actions waiting on it may use it: a transfer's delivery, the hand-over of
    a device's message (before the emulated slowdown), or simply its end."""
    cpu_s: float = 0.0
    """Seconds of it that compute on the host's CPU, from its start (the rest waits: a device's slowdown, a
    link). Where they share the host's cores, this part stretches to the time the cores give it: the action then
    ends when both busy_s has passed and its compute is done, and is ready that stretch later."""


@dataclass
class Simulation:
    """When every action of a schedule started and ended, and what that makes of epochs and resources."""

    actions: list[Action]
    """Every action of the schedule, lane after lane."""
    starts: list[float]
    ends: list[float]
    host_cores: float | None = None
    """The cores the actions' compute shared; None where each computed on hardware of its own."""
    cpu_s: float = 0.0
    """Seconds of compute of every action together (counted where they share host_cores)."""

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

    def busy_by_kind(self) -> dict[str, float]:
        """Busy seconds per epoch of the server, and the mean over devices of their compute, uplinks and downlinks."""
        kinds: dict[str, list[float]] = {"server": [], "device": [], "uplink": [], "downlink": []}
        for track, seconds in self.busy_s().items():
            owner, what = track.split("/")
            kinds["server" if owner == "server" else "device" if what == "compute" else what].append(seconds)
        return {k: (sum(v) / len(v) if v else 0.0) / self.epochs for k, v in kinds.items()}

    def bound_s(self) -> float:
        """Busy seconds of the busiest resource, the shared cores among them (their compute over their count): no
        schedule of these costs finishes sooner."""
        host = self.cpu_s / self.host_cores if self.host_cores else 0.0
        return max([host, *self.busy_s().values()])


def track_of(resource: Resource, device: int) -> str:
    """The metrics track of a lane's resource (every server lane is the one server compute)."""
    if resource is Resource.SERVER:
        return compute_track(None)
    if resource is Resource.DEVICE:
        return compute_track(device)
    return link_track(device, str(resource))


def simulate(schedule: Schedule, cost: Callable[[Action], Cost], host_cores: float | None = None) -> Simulation:
    """Time every action of `schedule`; RuntimeError if it cannot finish (an action waits on one never done).

    With `host_cores`, the actions' CPU parts share that many cores; without, every action computes at full speed.
    """
    if host_cores is not None and not host_cores > 0:
        raise ValueError(f"host_cores must be a positive number of cores, not {host_cores!r}")
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
    rank = [_rank(schedule, actions_of_lane[0].key) for actions_of_lane in lanes]
    starts, ends = [0.0] * len(actions), [0.0] * len(actions)
    available = [0.0] * len(actions)
    known = [False] * len(actions)
    position = first[:-1]
    lane_free = [0.0] * len(lanes)
    queued = [False] * len(lanes)  # a lane's next action is waiting in `ready` or `held`, or in progress
    # (ready time, rank, tie, order, lane); tie is the ready time, but a server lane put off until the server frees
    # keeps its own, so that the server still serves its lanes in the order they became ready (or of their rank
    # where the schedule ranks devices at the server)
    ready: list[tuple[float, int, float, int, int]] = []
    server_free: float | None = 0.0  # None while the server computes an action whose end is not yet known
    held: list[tuple[float, int, int]] = []  # server lanes waiting for that end: (ready time, order, lane)
    cores = _Cores(host_cores) if host_cores is not None else None
    computing: dict[int, Cost] = {}
    cpu_s = 0.0
    order = 0

    def push(at: float, tie: float, lane: int) -> None:
        nonlocal order
        heapq.heappush(ready, (at, rank[lane], tie, order, lane))
        order += 1

    def offer(lane: int) -> None:
        i = position[lane]
        if queued[lane] or i == first[lane + 1]:
            return
        if all(known[d] for d in deps[i]):
            at = max([lane_free[lane], *(available[d] for d in deps[i])])
            push(at, at, lane)
            queued[lane] = True

    def done(i: int, end: float, ready_at: float) -> None:
        """Action i ends at `end`, and what waits on it may go on at `ready_at`."""
        nonlocal server_free
        lane = lane_of[i]
        ends[i], available[i], known[i] = end, ready_at, True
        lane_free[lane] = end
        position[lane] += 1
        queued[lane] = False
        if shared[lane]:
            server_free = end
            while held:
                tie, _, other = heapq.heappop(held)
                push(max(tie, end), tie, other)
        offer(lane)
        for other in waiting[i]:
            offer(other)

    for lane in range(len(lanes)):
        offer(lane)
    # Every start is at or after the ready time just taken, and every compute ends at or after it too, so what
    # either makes ready is never earlier: the queue hands out ready times in order, and the shared server
    # serves its lanes first come, first served.
    while ready or computing:
        if cores is not None and computing and (not ready or cores.next_end() <= ready[0][0]):
            t, i = cores.finish()
            c = computing.pop(i)
            stretch = t - starts[i] - c.cpu_s
            done(i, max(starts[i] + c.busy_s, t), starts[i] + c.ready_after_s + stretch)
            continue
        at, _, tie, _, lane = heapq.heappop(ready)
        if shared[lane]:
            if server_free is None:
                heapq.heappush(held, (tie, order, lane))
                order += 1
                continue
            if cores is not None and server_free > at:  # the cores start nothing in the future: wait till then
                push(server_free, tie, lane)
                continue
            at = max(at, server_free)
        i = position[lane]
        c = cost(actions[i])
        sharing = cores is not None and c.cpu_s > 0
        starts[i] = at  # the lane stays queued, offered nothing more, until this action is done
        if sharing:
            assert cores is not None
            cpu_s += c.cpu_s
            cores.start(at, i, c.cpu_s)
            computing[i] = c
            if shared[lane]:
                server_free = None
        else:
            if shared[lane]:
                server_free = at + c.busy_s
            done(i, at + c.busy_s, at + c.ready_after_s)
    stuck = [actions[position[n]].key for n in range(len(lanes)) if position[n] < first[n + 1]]
    if stuck:
        raise RuntimeError(f"the schedule cannot finish: {stuck[0]} waits on an action that never happens")
    return Simulation(actions, starts, ends, host_cores, cpu_s)


class _Cores:
    """Processor sharing: the computations in progress share `cores` cores, each using at most one.

    Every computation in progress advances at the same rate, so one clock of work done per computation (`work`)
    orders them all: each ends when that clock reaches its start reading plus its CPU seconds.
    """

    def __init__(self, cores: float) -> None:
        self.cores = cores
        self.time = 0.0
        self.work = 0.0
        self.jobs: list[tuple[float, int]] = []  # (work-clock reading at which it ends, action)

    def _rate(self) -> float:
        return min(1.0, self.cores / len(self.jobs)) if self.jobs else 1.0

    def _advance(self, t: float) -> None:
        self.work += (t - self.time) * self._rate()
        self.time = t

    def start(self, t: float, action: int, cpu_s: float) -> None:
        """Action `action` starts computing cpu_s seconds of work at time t."""
        self._advance(t)
        heapq.heappush(self.jobs, (self.work + cpu_s, action))

    def next_end(self) -> float:
        """When the next computation in progress ends, at the present sharing."""
        return self.time + max(self.jobs[0][0] - self.work, 0.0) / self._rate()

    def finish(self) -> tuple[float, int]:
        """End the next computation: its time and action."""
        t = self.next_end()
        self._advance(t)
        return t, heapq.heappop(self.jobs)[1]


def _rank(schedule: Schedule, key: Key) -> int:
    """A lane's place among those ready at once: by the schedule's server order for the server's device lanes (the
    coordinator first), else all alike."""
    if schedule.server_order is None or key.resource is not Resource.SERVER:
        return 0
    return -1 if key.device == COORDINATOR else schedule.server_order[key.device]
