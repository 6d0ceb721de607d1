"""Schedules as data: per-resource lists of actions that the runtime executes and the simulator times.

A schedule has one lane (an ordered list of actions) for each device's compute, uplink and downlink, one server
lane per device (the server work done for that device, all sharing the one server compute) and one coordinator
lane (SERVER, -1) for aggregation. Each action names what it waits for in other lanes; within a lane, actions run
in order. All four training modes are schedules of the same actions.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Resource(StrEnum):
    """Something that does one thing at a time."""

    DEVICE = "device"
    UPLINK = "uplink"
    SERVER = "server"
    DOWNLINK = "downlink"


class Op(StrEnum):
    """What an action does."""

    FORWARD = "F"
    """Device: forward of the device part on one micro-batch; the activation goes up."""
    BACKWARD = "B"
    """Device: backward of the device part from that micro-batch's returned gradient."""
    TRAIN = "T"
    """Forward and backward on one micro-batch: the server part (server) or the whole model (fl device)."""
    STEP = "S"
    """Optimizer step, once per mini-batch."""
    SEND_WEIGHTS = "W"
    """Hand the model's weights to the link."""
    LOAD_WEIGHTS = "L"
    """Take weights from the link and load them."""
    AGGREGATE = "A"
    """FedAvg of the full models over the devices."""
    ACTIVATION = "a"
    """Transfer of an activation and its labels, device to server."""
    GRADIENT = "g"
    """Transfer of an activation's gradient, server to device."""
    WEIGHTS = "w"
    """Transfer of weights."""


COORDINATOR = -1
"""Device id of the server lane that holds the aggregation actions."""


@dataclass(frozen=True)
class Key:
    """Identifies one action of a schedule."""

    resource: Resource
    device: int
    op: Op
    round: int
    iteration: int = -1
    microbatch: int = 0

    def __str__(self) -> str:
        where = "coord" if self.device == COORDINATOR else f"d{self.device}"
        when = f"r{self.round}" if self.iteration < 0 else f"i{self.iteration}m{self.microbatch}"
        return f"{where}.{self.resource}.{self.op}.{when}"


@dataclass(frozen=True)
class Action:
    """One step on one resource, and the actions of other lanes it waits for."""

    key: Key
    epoch: int
    deps: tuple[Key, ...] = ()

    def __str__(self) -> str:
        return str(self.key)


Lane = tuple[Resource, int]


@dataclass(frozen=True)
class DevicePlan:
    """What the schedule needs to know of one device."""

    samples: int
    split: int
    microbatches: int


@dataclass
class Schedule:
    """The whole run's actions, lane by lane, plus each device's mini-batch sizes."""

    mode: str
    rounds: int
    batch_sizes: list[list[int]]
    """Per device, the size of each mini-batch (iteration) of the run."""
    plans: list[list[DevicePlan]]
    """Per round, per device: its split and micro-batches per mini-batch (1 outside pipelearn; a mini-batch smaller
    than that is cut into fewer). The same every round unless the run was re-planned (`splice`)."""
    round_starts: list[list[int]]
    """Per device, the first iteration of each round."""
    staleness: int = 0
    """0: each mini-batch starts once the one before has stepped; 1: its forwards start while the one before is
    still in flight, so each side applies a mini-batch's gradient one mini-batch late (the drain comes once a
    round, before the weights are sent)."""
    lanes: dict[Lane, list[Action]] = field(default_factory=dict)
    server_order: tuple[int, ...] | None = None
    """Each device's rank at the shared server (0 first): where several devices' actions wait for it, the
    best-ranked goes first; None serves them in the order they became ready."""

    def lane(self, resource: Resource, device: int, from_round: int = 0) -> list[Action]:
        """The actions of one lane, in order; with from_round, only those of that round and later."""
        lane = self.lanes.get((resource, device), [])
        return lane if from_round <= 0 else [a for a in lane if a.key.round >= from_round]

    def actions(self) -> Iterator[Action]:
        """Every action of every lane."""
        for lane in self.lanes.values():
            yield from lane

    def round_of(self, device: int, iteration: int) -> int:
        """The round a device's iteration belongs to."""
        return bisect.bisect_right(self.round_starts[device], iteration) - 1

    def setup(self, device: int, round: int) -> DevicePlan:
        """What a device runs in a round: its split and micro-batch count."""
        return self.plans[round][device]

    def microbatch_sizes(self, device: int, iteration: int) -> list[int]:
        """The sizes of one mini-batch's micro-batches, as torch.tensor_split cuts them."""
        count = self.setup(device, self.round_of(device, iteration)).microbatches
        return microbatch_sizes(self.batch_sizes[device][iteration], count)

    def __str__(self) -> str:
        return "\n".join(
            f"{resource}[{'coord' if device == COORDINATOR else device}]: "
            + " ".join(f"{a.key.op}{_short(a.key)}" for a in lane)
            for (resource, device), lane in self.lanes.items()
        )


def splice(before: Schedule, after: Schedule, from_round: int) -> Schedule:
    """The run's schedule with `before`'s rounds up to `from_round` and `after`'s from it on: a run re-planned at
    that round (both must be of the same run: its mode, devices, mini-batches and rounds)."""
    same = (before.mode, before.batch_sizes, before.round_starts, before.staleness)
    if same != (after.mode, after.batch_sizes, after.round_starts, after.staleness):
        raise ValueError("only schedules of the same run, cut into the same mini-batches and rounds, splice")
    lanes = {
        lane: [a for a in before.lanes.get(lane, []) if a.key.round < from_round]
        + [a for a in after.lanes.get(lane, []) if a.key.round >= from_round]
        for lane in {**before.lanes, **after.lanes}
    }
    plans = before.plans[:from_round] + after.plans[from_round:]
    return Schedule(
        before.mode,
        before.rounds,
        before.batch_sizes,
        plans,
        before.round_starts,
        before.staleness,
        lanes,
        after.server_order,
    )


def _short(key: Key) -> str:
    return f"r{key.round}" if key.iteration < 0 else f"{key.iteration}.{key.microbatch}"


def microbatch_sizes(batch: int, microbatches: int) -> list[int]:
    """Sizes of the pieces torch.tensor_split(batch, n) makes, with n capped at the batch size."""
    n = min(batch, microbatches)
    return [batch // n + (1 if i < batch % n else 0) for i in range(n)]


def epoch_batches(samples: int, batch_size: int) -> dict[int, int]:
    """How many mini-batches of each size one epoch of `samples` holds: full ones, then one of the rest if any."""
    full, rest = divmod(samples, batch_size)
    return {batch_size: full} | ({rest: 1} if rest else {})


def iteration_sizes(samples: int, batch_size: int, epochs: int) -> list[int]:
    """Mini-batch sizes over a run: full batches, the last of each epoch holding the rest."""
    return [size for size, n in epoch_batches(samples, batch_size).items() for _ in range(n)] * epochs


def round_count(mode: str, per_epoch: Sequence[int], epochs: int, aggregate_every: int | None) -> int:
    """Rounds of a run whose devices hold `per_epoch` iterations an epoch: enough for the device with most."""
    return max(-(-n * epochs // _round_length(mode, n, aggregate_every)) for n in per_epoch)


def _round_length(mode: str, per_epoch: int, aggregate_every: int | None) -> int:
    """Iterations a device's round holds: an epoch's in sl or without aggregate_every, else aggregate_every (its
    last round then holds the rest, and a device whose iterations run out sooner has empty rounds)."""
    return per_epoch if mode == "sl" or aggregate_every is None else aggregate_every


def build_schedule(
    mode: str,
    plans: Sequence[DevicePlan],
    batch_size: int,
    epochs: int,
    aggregate_every: int | None = None,
    staleness: int = 0,
    server_order: Sequence[int] | None = None,
) -> Schedule:
    """The schedule of a whole run in one of the four modes, with mini-batches `staleness` steps apart (0 or 1),
    the shared server serving devices in `server_order` (each device's rank; None: as they become ready)."""
    if mode not in ("fl", "sl", "sfl", "pipelearn"):
        raise ValueError(f"unknown mode {mode!r}; expected fl, sl, sfl or pipelearn")
    if staleness not in (0, 1) or (staleness and mode == "fl"):
        raise ValueError(f"staleness is 0 or 1 (not {staleness!r}), and 0 in fl, whose devices train alone")
    if any(p.samples < 1 for p in plans):
        raise ValueError("every device needs at least one training sample")
    if server_order is not None and sorted(server_order) != list(range(len(plans))):
        raise ValueError(f"a server order ranks each of the {len(plans)} devices once, 0 first; not {server_order}")
    sizes = [iteration_sizes(p.samples, batch_size, epochs) for p in plans]
    per_epoch = [len(s) // epochs for s in sizes]
    rounds = round_count(mode, per_epoch, epochs, aggregate_every)
    lengths = [_round_length(mode, n, aggregate_every) for n in per_epoch]
    round_ranges = [
        [range(min(r * w, len(s)), min((r + 1) * w, len(s))) for r in range(rounds)]
        for s, w in zip(sizes, lengths, strict=True)
    ]
    run = [DevicePlan(p.samples, p.split, p.microbatches if mode == "pipelearn" else 1) for p in plans]
    starts = [[r.start for r in ranges] for ranges in round_ranges]
    order = tuple(server_order) if server_order is not None else None
    schedule = Schedule(mode, rounds, sizes, [run] * rounds, starts, staleness, server_order=order)
    builder = _Builder(schedule, per_epoch)
    for r in range(schedule.rounds):
        for d in range(len(plans)):
            builder.round(d, r, round_ranges[d][r])
        if mode != "sl":
            builder.aggregate(r, len(plans))
    return schedule


class _Builder:
    """Appends the actions of one device's round to the lanes of a schedule."""

    def __init__(self, schedule: Schedule, per_epoch: list[int]) -> None:
        self.s = schedule
        self.per_epoch = per_epoch

    def add(self, key: Key, epoch: int, *deps: Key) -> Key:
        self.s.lanes.setdefault((key.resource, key.device), []).append(Action(key, epoch, deps))
        return key

    def epoch(self, d: int, iteration: int) -> int:
        return iteration // self.per_epoch[d]

    def round(self, d: int, r: int, iterations: range) -> None:
        first = self.epoch(d, iterations.start) if iterations else self.epoch(d, max(iterations.start - 1, 0))
        last = self.epoch(d, iterations.stop - 1) if iterations else first
        self.receive_weights(d, r, first)
        if self.s.mode == "fl":
            for i in iterations:
                self.local_iteration(d, r, i)
        elif self.s.staleness == 0:
            for i in iterations:
                self.forwards(d, r, i)
                self.server_iteration(d, r, i)
                self.backwards(d, r, i)
        elif iterations:  # each lane runs the next mini-batch's work before the step of the one in flight
            self.forwards(d, r, iterations[0])
            self.trains(d, r, iterations[0])
            for i in iterations:
                if i + 1 in iterations:
                    self.forwards(d, r, i + 1)
                    self.trains(d, r, i + 1)
                self.add(Key(Resource.SERVER, d, Op.STEP, r, i), self.epoch(d, i))
                self.backwards(d, r, i)
        sent = self.add(Key(Resource.DEVICE, d, Op.SEND_WEIGHTS, r), last)
        up = self.add(Key(Resource.UPLINK, d, Op.WEIGHTS, r), last, sent)
        self.add(Key(Resource.SERVER, d, Op.LOAD_WEIGHTS, r), last, up)

    def receive_weights(self, d: int, r: int, epoch: int) -> None:
        """Weights to the device at a round's start: after aggregation, or (sl) from the device before it."""
        deps: tuple[Key, ...] = ()
        if self.s.mode == "sl":
            n = len(self.s.batch_sizes)
            if d > 0 or r > 0:
                prev_d, prev_r = (d - 1, r) if d > 0 else (n - 1, r - 1)
                deps = (Key(Resource.SERVER, prev_d, Op.LOAD_WEIGHTS, prev_r),)
        elif r > 0:
            deps = (Key(Resource.SERVER, COORDINATOR, Op.AGGREGATE, r - 1),)
        sent = self.add(Key(Resource.SERVER, d, Op.SEND_WEIGHTS, r), epoch, *deps)
        down = self.add(Key(Resource.DOWNLINK, d, Op.WEIGHTS, r), epoch, sent)
        self.add(Key(Resource.DEVICE, d, Op.LOAD_WEIGHTS, r), epoch, down)

    def local_iteration(self, d: int, r: int, i: int) -> None:
        e = self.epoch(d, i)
        for m in range(len(self.s.microbatch_sizes(d, i))):
            self.add(Key(Resource.DEVICE, d, Op.TRAIN, r, i, m), e)
        self.add(Key(Resource.DEVICE, d, Op.STEP, r, i), e)

    def forwards(self, d: int, r: int, i: int) -> None:
        """The device's forward of each micro-batch of iteration i, each activation sent up as it is made."""
        e = self.epoch(d, i)
        for m in range(len(self.s.microbatch_sizes(d, i))):
            fwd = self.add(Key(Resource.DEVICE, d, Op.FORWARD, r, i, m), e)
            self.add(Key(Resource.UPLINK, d, Op.ACTIVATION, r, i, m), e, fwd)

    def trains(self, d: int, r: int, i: int) -> None:
        """The server's training on each activation as it arrives, each gradient sent down as it is made."""
        e = self.epoch(d, i)
        for m in range(len(self.s.microbatch_sizes(d, i))):
            up = Key(Resource.UPLINK, d, Op.ACTIVATION, r, i, m)
            train = self.add(Key(Resource.SERVER, d, Op.TRAIN, r, i, m), e, up)
            self.add(Key(Resource.DOWNLINK, d, Op.GRADIENT, r, i, m), e, train)

    def server_iteration(self, d: int, r: int, i: int) -> None:
        self.trains(d, r, i)
        self.add(Key(Resource.SERVER, d, Op.STEP, r, i), self.epoch(d, i))

    def backwards(self, d: int, r: int, i: int) -> None:
        """The device's backward of each micro-batch as its gradient arrives, then its step."""
        e = self.epoch(d, i)
        for m in range(len(self.s.microbatch_sizes(d, i))):
            self.add(
                Key(Resource.DEVICE, d, Op.BACKWARD, r, i, m),
                e,
                Key(Resource.DOWNLINK, d, Op.GRADIENT, r, i, m),
            )
        self.add(Key(Resource.DEVICE, d, Op.STEP, r, i), e)

    def aggregate(self, r: int, devices: int) -> None:
        loads = [Key(Resource.SERVER, d, Op.LOAD_WEIGHTS, r) for d in range(devices)]
        epoch = max(self.s.lanes[(Resource.SERVER, d)][-1].epoch for d in range(devices))
        self.add(Key(Resource.SERVER, COORDINATOR, Op.AGGREGATE, r), epoch, *loads)
