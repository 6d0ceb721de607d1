"""Tests for schedules as data: lane contents, dependencies, executability, mini- and micro-batch sizes."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
import torch

from pipelearn.schedule import (
    COORDINATOR,
    Action,
    DevicePlan,
    Key,
    Op,
    Resource,
    Schedule,
    build_schedule,
    iteration_sizes,
    microbatch_sizes,
    splice,
)

MODES = ("fl", "sl", "sfl", "pipelearn")
LINK_OPS = {Op.ACTIVATION, Op.GRADIENT, Op.WEIGHTS}


def _plans(*samples: int, microbatches: int = 2) -> list[DevicePlan]:
    return [DevicePlan(samples=s, split=2, microbatches=microbatches) for s in samples]


def _fmt(key: Key) -> str:
    return f"{key.op}r{key.round}" if key.iteration < 0 else f"{key.op}{key.iteration}.{key.microbatch}"


def _lane(schedule: Schedule, resource: Resource, device: int) -> str:
    return " ".join(_fmt(a.key) for a in schedule.lane(resource, device))


def _execute(schedule: Schedule) -> list[Key]:
    """Run the schedule: each lane in order, an action only once all its deps have run; return the order run."""
    heads = dict.fromkeys(schedule.lanes, 0)
    done: set[Key] = set()
    order: list[Key] = []
    progress = True
    while progress:
        progress = False
        for lane, actions in schedule.lanes.items():
            while heads[lane] < len(actions) and all(dep in done for dep in actions[heads[lane]].deps):
                key = actions[heads[lane]].key
                assert key not in done, f"{key} ran twice"
                done.add(key)
                order.append(key)
                heads[lane] += 1
                progress = True
    stuck = {lane: str(actions[heads[lane]]) for lane, actions in schedule.lanes.items() if heads[lane] < len(actions)}
    assert not stuck, f"schedule deadlocks; lanes stuck at {stuck}"
    return order


def _ancestors(schedule: Schedule, key: Key) -> set[Key]:
    """Every action that must run before `key`: its deps and the earlier actions of each lane, transitively."""
    by_key: dict[Key, Action] = {a.key: a for a in schedule.actions()}
    before: dict[Key, Key | None] = {}
    for actions in schedule.lanes.values():
        for prev, action in zip([None, *actions[:-1]], actions, strict=True):
            before[action.key] = None if prev is None else prev.key
    seen: set[Key] = set()
    todo = [key]
    while todo:
        k = todo.pop()
        for parent in (*by_key[k].deps, before[k]):
            if parent is not None and parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _check_well_formed(schedule: Schedule) -> list[Key]:
    keys = [a.key for a in schedule.actions()]
    assert len(keys) == len(set(keys)), "duplicate action keys"
    known = set(keys)
    for (resource, device), actions in schedule.lanes.items():
        for action in actions:
            assert action.key.resource == resource and action.key.device == device
            for dep in action.deps:
                assert dep in known, f"{action} waits on {dep}, which is not in the schedule"
                assert (dep.resource, dep.device) != (resource, device), f"{action} waits on its own lane"
    order = _execute(schedule)
    assert len(order) == len(keys) and set(order) == known
    return order


# --- sizes ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "n"), list(itertools.product(range(1, 23), range(1, 9))))
def test_microbatch_sizes_match_tensor_split(batch: int, n: int) -> None:
    sizes = microbatch_sizes(batch, n)
    assert sum(sizes) == batch
    assert len(sizes) == min(batch, n)
    assert all(s >= 1 for s in sizes)
    assert max(sizes) - min(sizes) <= 1
    pieces = torch.tensor_split(torch.arange(batch), min(batch, n))
    assert sizes == [len(p) for p in pieces]


def test_microbatch_sizes_examples() -> None:
    assert microbatch_sizes(10, 4) == [3, 3, 2, 2]
    assert microbatch_sizes(3, 8) == [1, 1, 1]
    assert microbatch_sizes(7, 1) == [7]


def test_iteration_sizes_with_and_without_remainder() -> None:
    assert iteration_sizes(10, 5, 1) == [5, 5]
    assert iteration_sizes(12, 5, 2) == [5, 5, 2, 5, 5, 2]
    assert iteration_sizes(3, 5, 2) == [3, 3]
    assert sum(iteration_sizes(1003, 100, 3)) == 3 * 1003


def test_schedule_batch_sizes_and_microbatch_counts() -> None:
    s = build_schedule("pipelearn", _plans(5, 3, microbatches=3), batch_size=2, epochs=2)
    assert s.batch_sizes == [[2, 2, 1, 2, 2, 1], [2, 1, 2, 1]]
    assert [s.setup(d, r).microbatches for r in range(s.rounds) for d in (0, 1)] == [3, 3, 3, 3]
    assert s.microbatch_sizes(0, 0) == [1, 1]
    assert s.microbatch_sizes(0, 2) == [1]
    for mode in ("fl", "sl", "sfl"):
        other = build_schedule(mode, _plans(5, 3, microbatches=3), 2, 2)
        assert {p.microbatches for round in other.plans for p in round} == {1}


def test_bad_mode_and_empty_device() -> None:
    with pytest.raises(ValueError, match="unknown mode 'gossip'"):
        build_schedule("gossip", _plans(4), 2, 1)
    with pytest.raises(ValueError, match="at least one training sample"):
        build_schedule("sfl", _plans(4, 0), 2, 1)


# --- lane contents -------------------------------------------------------------------------------------------------


def test_pipelearn_lanes() -> None:
    s = build_schedule("pipelearn", _plans(5, microbatches=2), batch_size=2, epochs=1)
    assert s.rounds == 1
    assert _lane(s, Resource.DEVICE, 0) == ("Lr0 F0.0 F0.1 B0.0 B0.1 S0.0 F1.0 F1.1 B1.0 B1.1 S1.0 F2.0 B2.0 S2.0 Wr0")
    assert _lane(s, Resource.UPLINK, 0) == "a0.0 a0.1 a1.0 a1.1 a2.0 wr0"
    assert _lane(s, Resource.SERVER, 0) == "Wr0 T0.0 T0.1 S0.0 T1.0 T1.1 S1.0 T2.0 S2.0 Lr0"
    assert _lane(s, Resource.DOWNLINK, 0) == "wr0 g0.0 g0.1 g1.0 g1.1 g2.0"
    assert _lane(s, Resource.SERVER, COORDINATOR) == "Ar0"


def test_pipelearn_device_lane_per_iteration_over_rounds() -> None:
    n = 3
    s = build_schedule("pipelearn", _plans(8, microbatches=n), batch_size=4, epochs=2)
    lane = _lane(s, Resource.DEVICE, 0).split()
    expected: list[str] = []
    for r, iterations in enumerate(([0, 1], [2, 3])):
        expected.append(f"Lr{r}")
        for i in iterations:
            expected += [f"F{i}.{m}" for m in range(n)] + [f"B{i}.{m}" for m in range(n)] + [f"S{i}.0"]
        expected.append(f"Wr{r}")
    assert lane == expected


@pytest.mark.parametrize("mode", ["sl", "sfl"])
def test_split_modes_use_one_microbatch(mode: str) -> None:
    s = build_schedule(mode, _plans(4, microbatches=4), batch_size=2, epochs=1)
    assert _lane(s, Resource.DEVICE, 0) == "Lr0 F0.0 B0.0 S0.0 F1.0 B1.0 S1.0 Wr0"
    assert _lane(s, Resource.UPLINK, 0) == "a0.0 a1.0 wr0"
    assert _lane(s, Resource.SERVER, 0) == "Wr0 T0.0 S0.0 T1.0 S1.0 Lr0"
    assert _lane(s, Resource.DOWNLINK, 0) == "wr0 g0.0 g1.0"


def test_fl_lanes() -> None:
    s = build_schedule("fl", _plans(4, 4, microbatches=4), batch_size=2, epochs=2)
    for d in range(2):
        assert _lane(s, Resource.DEVICE, d) == "Lr0 T0.0 S0.0 T1.0 S1.0 Wr0 Lr1 T2.0 S2.0 T3.0 S3.0 Wr1"
        assert _lane(s, Resource.SERVER, d) == "Wr0 Lr0 Wr1 Lr1"
        assert _lane(s, Resource.UPLINK, d) == "wr0 wr1"
        assert _lane(s, Resource.DOWNLINK, d) == "wr0 wr1"
    assert _lane(s, Resource.SERVER, COORDINATOR) == "Ar0 Ar1"


def test_sl_has_no_aggregation() -> None:
    s = build_schedule("sl", _plans(4, 4), batch_size=2, epochs=2, aggregate_every=1)
    assert s.lane(Resource.SERVER, COORDINATOR) == []
    assert not any(a.key.op == Op.AGGREGATE for a in s.actions())
    assert s.rounds == 2  # one round per epoch; aggregate_every means nothing without aggregation


# --- dependencies and executability --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("samples", "batch", "epochs", "every", "micro"),
    [
        ((5,), 2, 1, None, 2),
        ((10, 7, 3), 3, 2, None, 3),
        ((10, 7, 3), 3, 2, 2, 4),
        ((9, 4), 4, 3, 5, 8),
        ((1, 1), 1, 1, None, 1),
    ],
)
def test_schedule_is_executable(
    mode: str, samples: Sequence[int], batch: int, epochs: int, every: int | None, micro: int
) -> None:
    s = build_schedule(mode, _plans(*samples, microbatches=micro), batch, epochs, aggregate_every=every)
    _check_well_formed(s)
    # every mini-batch of every device is trained exactly once, in every micro-batch, on the right resource
    for d, sizes in enumerate(s.batch_sizes):
        trained = Resource.DEVICE if mode == "fl" else Resource.SERVER
        steps = [a.key.iteration for a in s.lane(Resource.DEVICE, d) if a.key.op == Op.STEP]
        assert steps == list(range(len(sizes)))
        for i in range(len(sizes)):
            micro_here = [a.key.microbatch for a in s.lane(trained, d) if a.key.op == Op.TRAIN and a.key.iteration == i]
            assert micro_here == list(range(len(s.microbatch_sizes(d, i))))
    # epochs of actions agree with the iteration they belong to
    for d, sizes in enumerate(s.batch_sizes):
        per_epoch = len(sizes) // epochs
        for a in s.lane(Resource.DEVICE, d):
            if a.key.iteration >= 0:
                assert a.epoch == a.key.iteration // per_epoch
    # every link action carries what exactly one action of the same device made (Outbox.send relies on this)
    for a in s.actions():
        if a.key.op in LINK_OPS:
            assert len(a.deps) == 1
            (dep,) = a.deps
            assert dep.device == a.key.device
            source = Resource.DEVICE if a.key.resource == Resource.UPLINK else Resource.SERVER
            assert dep.resource == source


@pytest.mark.parametrize("mode", ["fl", "sfl", "pipelearn"])
def test_aggregation_waits_on_every_device(mode: str) -> None:
    s = build_schedule(mode, _plans(6, 4, 2), batch_size=2, epochs=2)
    coordinator = s.lane(Resource.SERVER, COORDINATOR)
    assert [a.key.round for a in coordinator] == list(range(s.rounds))
    order = {k: i for i, k in enumerate(_execute(s))}
    for a in coordinator:
        r = a.key.round
        assert set(a.deps) == {Key(Resource.SERVER, d, Op.LOAD_WEIGHTS, r) for d in range(3)}
        assert len(a.deps) == 3
        for d in range(3):
            # the round's weights leave the server only after aggregation
            send = Key(Resource.SERVER, d, Op.SEND_WEIGHTS, r + 1)
            if r + 1 < s.rounds:
                assert a.key in next(x for x in s.lane(Resource.SERVER, d) if x.key == send).deps
                assert order[a.key] < order[Key(Resource.DEVICE, d, Op.LOAD_WEIGHTS, r + 1)]


@pytest.mark.parametrize("mode", ["fl", "sfl", "pipelearn"])
def test_parallel_modes_do_not_chain_devices(mode: str) -> None:
    s = build_schedule(mode, _plans(4, 4, 4), batch_size=2, epochs=2)
    for d in range(3):
        first = s.lane(Resource.DEVICE, d)[0].key
        assert first.op == Op.LOAD_WEIGHTS
        assert all(k.device == d for k in _ancestors(s, first))


def test_sl_chains_devices_in_turn() -> None:
    s = build_schedule("sl", _plans(4, 6, 2), batch_size=2, epochs=2)
    assert s.rounds == 2
    order = {k: i for i, k in enumerate(_check_well_formed(s))}
    devices = 3
    for r in range(s.rounds):
        for d in range(devices):
            load = next(a for a in s.lane(Resource.DEVICE, d) if a.key.op == Op.LOAD_WEIGHTS and a.key.round == r)
            send = next(a for a in s.lane(Resource.SERVER, d) if a.key.op == Op.SEND_WEIGHTS and a.key.round == r)
            if d == 0 and r == 0:
                assert send.deps == ()
                continue
            prev_d, prev_r = (d - 1, r) if d > 0 else (devices - 1, r - 1)
            assert send.deps == (Key(Resource.SERVER, prev_d, Op.LOAD_WEIGHTS, prev_r),)
            ancestors = _ancestors(s, load.key)
            assert Key(Resource.UPLINK, prev_d, Op.WEIGHTS, prev_r) in ancestors
            # the previous device's whole round comes first: no two devices train at once
            previous_round = [a.key for a in s.lane(Resource.DEVICE, prev_d) if a.key.round == prev_r]
            assert set(previous_round) <= ancestors
            assert all(order[k] < order[load.key] for k in previous_round)


def test_aggregate_every_makes_rounds() -> None:
    s = build_schedule("sfl", _plans(10), batch_size=2, epochs=2, aggregate_every=3)
    # 5 iterations per epoch, 10 in all: rounds of 3, 3, 3 and 1 iterations, crossing the epoch boundary
    assert s.rounds == 4
    rounds = [
        [a.key.iteration for a in s.lane(Resource.DEVICE, 0) if a.key.op == Op.STEP and a.key.round == r]
        for r in range(4)
    ]
    assert rounds == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert [a.key.round for a in s.lane(Resource.SERVER, COORDINATOR)] == [0, 1, 2, 3]
    steps = {a.key.iteration: a.epoch for a in s.lane(Resource.DEVICE, 0) if a.key.op == Op.STEP}
    assert steps[4] == 0 and steps[5] == 1
    _check_well_formed(s)


def test_aggregate_every_with_unequal_devices() -> None:
    s = build_schedule("pipelearn", _plans(10, 3, microbatches=2), batch_size=2, epochs=2, aggregate_every=3)
    assert s.batch_sizes[1] == [2, 1, 2, 1]
    assert s.rounds == 4  # the larger device sets the number of rounds
    for r in range(s.rounds):
        # every device takes part in every round's exchange of weights, even once out of data
        for d in range(2):
            ops = [a.key.op for a in s.lane(Resource.DEVICE, d) if a.key.round == r]
            assert ops[0] == Op.LOAD_WEIGHTS and ops[-1] == Op.SEND_WEIGHTS
    small = [a.key.iteration for a in s.lane(Resource.DEVICE, 1) if a.key.op == Op.STEP]
    assert small == [0, 1, 2, 3]
    assert [a.key.op for a in s.lane(Resource.DEVICE, 1) if a.key.round >= 2] == [Op.LOAD_WEIGHTS, Op.SEND_WEIGHTS] * 2
    _check_well_formed(s)


def test_unequal_devices_per_epoch_rounds() -> None:
    s = build_schedule("sfl", _plans(7, 2), batch_size=3, epochs=3)
    assert s.rounds == 3
    assert s.batch_sizes == [[3, 3, 1] * 3, [2] * 3]
    for r in range(3):
        big = [a.key.iteration for a in s.lane(Resource.DEVICE, 0) if a.key.op == Op.STEP and a.key.round == r]
        small = [a.key.iteration for a in s.lane(Resource.DEVICE, 1) if a.key.op == Op.STEP and a.key.round == r]
        assert big == [3 * r, 3 * r + 1, 3 * r + 2]
        assert small == [r]
        assert {a.epoch for a in s.lane(Resource.DEVICE, 0) if a.key.round == r} == {r}
    _check_well_formed(s)


def test_executor_detects_a_deadlock() -> None:
    s = build_schedule("pipelearn", _plans(2, microbatches=2), batch_size=2, epochs=1)
    lane = s.lanes[(Resource.DEVICE, 0)]
    # put a backward before the forward whose gradient it needs: the schedule can no longer run
    f0 = next(i for i, a in enumerate(lane) if a.key.op == Op.FORWARD)
    b0 = next(i for i, a in enumerate(lane) if a.key.op == Op.BACKWARD)
    lane[f0], lane[b0] = lane[b0], lane[f0]
    with pytest.raises(AssertionError, match="deadlocks"):
        _execute(s)


def test_str_lists_every_lane() -> None:
    s = build_schedule("pipelearn", _plans(2, microbatches=2), batch_size=2, epochs=1)
    text = str(s)
    assert "device[0]: Lr0 F0.0 F0.1 B0.0 B0.1 S0.0 Wr0" in text
    assert "server[coord]: Ar0" in text
    assert str(Key(Resource.DEVICE, 3, Op.FORWARD, 1, 4, 2)) == "d3.device.F.i4m2"
    assert str(Key(Resource.SERVER, COORDINATOR, Op.AGGREGATE, 1)) == "coord.server.A.r1"


@pytest.mark.parametrize("mode", ["sl", "sfl", "pipelearn"])
def test_a_stale_schedule_holds_the_same_actions_in_another_order(mode):
    plans = [DevicePlan(7, 2, 3), DevicePlan(5, 1, 2)]
    fresh = build_schedule(mode, plans, 2, 2, aggregate_every=3 if mode != "sl" else None)
    stale = build_schedule(mode, plans, 2, 2, aggregate_every=3 if mode != "sl" else None, staleness=1)
    assert {a.key: a.deps for a in fresh.actions()} == {a.key: a.deps for a in stale.actions()}
    for d in range(2):
        device = [str(a.key.op) + str(a.key.iteration) for a in stale.lane(Resource.DEVICE, d)]
        # the second mini-batch's forwards come before the first one's backward, and every step after its backward
        first_round = [a for a in stale.lane(Resource.DEVICE, d) if a.key.round == 0 and a.key.iteration >= 0]
        iterations = sorted({a.key.iteration for a in first_round})
        if len(iterations) > 1:
            assert device.index(f"F{iterations[1]}") < device.index(f"B{iterations[0]}")
        for i in iterations:
            assert device.index(f"S{i}") > max(j for j, name in enumerate(device) if name == f"B{i}")
        # the round drains before its weights go: its last step (if it has any work) comes right before the send
        ops = [a.key.op for a in stale.lane(Resource.DEVICE, d)]
        before_sends = {ops[i - 1] for i, op in enumerate(ops) if op is Op.SEND_WEIGHTS}
        assert before_sends <= {Op.STEP, Op.LOAD_WEIGHTS} and Op.STEP in before_sends


def test_staleness_is_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match="staleness"):
        build_schedule("fl", [DevicePlan(4, 2, 1)], 2, 1, staleness=1)
    with pytest.raises(ValueError, match="staleness"):
        build_schedule("pipelearn", [DevicePlan(4, 2, 1)], 2, 1, staleness=2)


def test_a_spliced_schedule_runs_the_new_plan_from_its_round_on():
    plans = [DevicePlan(6, 2, 2), DevicePlan(4, 1, 3)]
    before = build_schedule("pipelearn", plans, 2, 3)
    after = build_schedule("pipelearn", [DevicePlan(6, 3, 1), DevicePlan(4, 1, 2)], 2, 3)
    spliced = splice(before, after, 2)
    assert [spliced.setup(0, r).split for r in range(3)] == [2, 2, 3]
    assert spliced.microbatch_sizes(1, 1) == [1, 1] and spliced.microbatch_sizes(1, 4) == [1, 1]
    assert spliced.microbatch_sizes(0, 6) == [2]
    for lane, actions in spliced.lanes.items():
        assert actions == [a for a in before.lanes[lane] if a.key.round < 2] + [
            a for a in after.lanes[lane] if a.key.round >= 2
        ]
    with pytest.raises(ValueError, match="same run"):
        splice(before, build_schedule("pipelearn", plans, 2, 2), 1)
