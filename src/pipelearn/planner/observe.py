"""What a round of a run measured, read from the timeline the runtime records: each device's speed against the
profile, each link's delivered rate, the server's speed and the round's time. The adaptive planner fits its costs
to these (planner/adapt.py), by the median of the last few rounds so that one noisy round does not move them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipelearn.events import Event, compute_track, link_track
from pipelearn.plan import RunPlan
from pipelearn.planner.simulate import Cost
from pipelearn.schedule import COORDINATOR, Action, Op, Resource, Schedule


@dataclass(frozen=True)
class RoundMeasure:
    """One round as measured; None where the round held nothing to measure it by."""

    round: int
    seconds: float | None
    """From its first device action's start to its aggregation's end."""
    device_cpu: list[float | None]
    """Per device: the CPU seconds its actions took over those the profile predicts (the host's speed for it)."""
    slowdown: list[float | None]
    """Per device: its actions' seconds over their CPU seconds (its emulated or real slowdown)."""
    server_cpu: float | None
    """The server's CPU seconds over those the profile predicts."""
    mbps: dict[str, list[float | None]]
    """Per direction ("up", "down"), per device: the bits its messages carried over their seconds on the link."""


def measure_round(
    round: int,
    events: Sequence[Event],
    schedule: Schedule,
    plan: RunPlan,
    costs: Callable[[Action], Cost],
    netns: bool = False,
) -> RoundMeasure:
    """Measure `round` from the run's events, against the profile's `costs` of its actions (`netns`: the kernel
    paced the links, and their events end on arrival)."""
    by_name = {(e.track, e.name): e for e in events}
    devices = len(plan.devices)

    def spans(resource: Resource, device: int, track: str) -> list[tuple[Action, Event]]:
        lane = [a for a in schedule.lane(resource, device) if a.key.round == round]
        return [(a, by_name[(track, str(a.key))]) for a in lane if (track, str(a.key)) in by_name]

    def computed(resource: Resource, device: int, track: str) -> list[tuple[Action, Event]]:
        return [(a, e) for a, e in spans(resource, device, track) if "cpu_s" in e.args and costs(a).cpu_s > 0]

    device_cpu: list[float | None] = []
    slowdown: list[float | None] = []
    for d in range(devices):
        done = computed(Resource.DEVICE, d, compute_track(d))
        cpu = sum(float(e.args["cpu_s"]) for _, e in done)
        device_cpu.append(_ratio(cpu, sum(costs(a).cpu_s for a, _ in done)))
        slowdown.append(_ratio(sum(e.duration for _, e in done), cpu))
    served = [s for d in range(devices) for s in computed(Resource.SERVER, d, compute_track(None))]
    server_cpu = _ratio(sum(float(e.args["cpu_s"]) for _, e in served), sum(costs(a).cpu_s for a, _ in served))
    mbps: dict[str, list[float | None]] = {"up": [], "down": []}
    for direction, resource in (("up", Resource.UPLINK), ("down", Resource.DOWNLINK)):
        for d in range(devices):
            # a user-space link times its messages' bytes on the wire; one the kernel paces, their arrival
            latency = plan.devices[d].link.latency_ms / 1e3 if netns else 0.0
            sent = [e for _, e in spans(resource, d, link_track(d, f"{direction}link")) if "bytes" in e.args]
            on_link = sum(max(e.duration - latency, 0.0) for e in sent)
            mbps[direction].append(_ratio(8e-6 * sum(float(e.args["bytes"]) for e in sent), on_link))
    return RoundMeasure(round, round_seconds(round, events, schedule), device_cpu, slowdown, server_cpu, mbps)


def aggregated_at(events: Sequence[Event], schedule: Schedule) -> dict[int, float]:
    """When each round's aggregation ended, by round, as far as the events go."""
    by_name = {e.name: e for e in events if e.track == compute_track(None)}
    lane = schedule.lane(Resource.SERVER, COORDINATOR)
    return {a.key.round: by_name[str(a.key)].end for a in lane if a.key.op is Op.AGGREGATE and str(a.key) in by_name}


def round_seconds(round: int, events: Sequence[Event], schedule: Schedule) -> float | None:
    """A round's seconds: from the aggregation before it (the first action of the run, for round 0) to its own."""
    ends = aggregated_at(events, schedule)
    if round not in ends:
        return None
    if round == 0:
        return ends[0] - min(e.start for e in events if e.track == compute_track(None))
    return ends[round] - ends[round - 1] if round - 1 in ends else None


def _ratio(top: float, bottom: float) -> float | None:
    return top / bottom if bottom > 0 and top > 0 and math.isfinite(top / bottom) else None


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values measured; None where none was."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


@dataclass(frozen=True)
class Measured:
    """The last few rounds' measurements, each the median over those rounds."""

    rounds: tuple[RoundMeasure, ...]

    @property
    def seconds(self) -> float | None:
        """A round's seconds."""
        return median([r.seconds for r in self.rounds])

    @property
    def server_cpu(self) -> float | None:
        """The server's CPU seconds over the profile's."""
        return median([r.server_cpu for r in self.rounds])

    def device_cpu(self, device: int) -> float | None:
        """A device's CPU seconds over the profile's."""
        return median([r.device_cpu[device] for r in self.rounds])

    def slowdown(self, device: int) -> float | None:
        """A device's seconds over its CPU seconds."""
        return median([r.slowdown[device] for r in self.rounds])

    def mbps(self, direction: str, device: int) -> float | None:
        """A device's delivered rate one way."""
        return median([r.mbps[direction][device] for r in self.rounds])

    def summary(self) -> tuple[float, ...]:
        """The measured speeds and rates as one tuple (0 where unmeasured), to tell whether the costs moved."""
        devices = range(len(self.rounds[-1].slowdown))
        values = [self.server_cpu]  # not the round's time, which any load on the host moves
        values += [f(d) for d in devices for f in (self.device_cpu, self.slowdown)]
        values += [self.mbps(direction, d) for direction in ("up", "down") for d in devices]
        return tuple(v or 0.0 for v in values)
