"""The adaptive planner on timelines made by the simulator: it measures what the timeline says, keeps the plan
when noise predicts no real gain, and re-plans a fleet whose device became slower."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from torch import nn

from pipelearn.config import RunConfig
from pipelearn.events import Event, compute_track, link_track
from pipelearn.plan import RunPlan, schedule_for
from pipelearn.planner.adapt import RunAdapter, adapter_for
from pipelearn.planner.costs import CostModel, action_costs
from pipelearn.planner.profile import Profile
from pipelearn.planner.search import Planned, plan_run
from pipelearn.planner.simulate import Cost, simulate
from pipelearn.schedule import Action, Resource, Schedule

CONFIG = RunConfig(
    devices=2,
    batch_size=8,
    samples_per_device=16,
    epochs=3,
    network="wifi",
    device_slowdown=2.0,
    host_cores="off",
    split="auto",
    microbatches="auto",
).validate()
SHAPE = (1, 2, 2)


@pytest.fixture
def planned(model: nn.Sequential, profile: Callable[..., Profile]) -> tuple[Planned, nn.Sequential]:
    """The hand-made profile's plan of the tiny model for CONFIG."""
    return plan_run(CONFIG, model, SHAPE, profile()), model


def timeline(
    schedule: Schedule, plan: RunPlan, planned: Planned, slower: dict[int, float], noise: float
) -> list[Event]:
    """The events a run of `schedule` would record if each action took its profiled cost times a random factor
    within `noise` either way, and each device of `slower` computed that many times slower."""
    base = action_costs(CostModel.for_run(planned.profile, CONFIG), schedule, plan.devices)
    rng = random.Random(0)
    factor: dict[Any, float] = {}

    def cost(action: Action) -> Cost:
        c = base(action)
        k = factor.setdefault(action.key, rng.uniform(1 - noise, 1 + noise))
        if action.key.resource is Resource.DEVICE:
            k *= slower.get(action.key.device, 1.0)
            return Cost(c.busy_s * k, c.ready_after_s * k / slower.get(action.key.device, 1.0), c.cpu_s * k)
        return Cost(c.busy_s * k, c.ready_after_s * k, c.cpu_s * k)

    sim = simulate(schedule, cost)
    events = []
    for action, start, end in zip(sim.actions, sim.starts, sim.ends, strict=True):
        key, c = action.key, cost(action)
        if key.resource is Resource.DEVICE:
            cpu = c.cpu_s / slower.get(key.device, 1.0)
            events.append(Event(compute_track(key.device), str(key), start, end, {"cpu_s": cpu}))
        elif key.resource is Resource.SERVER:
            events.append(Event(compute_track(None), str(key), start, end, {"cpu_s": c.cpu_s}))
        else:
            direction = "uplink" if key.resource is Resource.UPLINK else "downlink"
            link = plan.devices[key.device].link
            mbps = link.up_mbps if direction == "uplink" else link.down_mbps
            nbytes = base(action).busy_s * mbps * 1e6 / 8
            events.append(Event(link_track(key.device, direction), str(key), start, end, {"bytes": nbytes}))
    return events


def test_noise_that_predicts_no_real_gain_keeps_the_plan(planned: tuple[Planned, nn.Sequential]) -> None:
    made, model = planned
    schedule = schedule_for(CONFIG, made.plan, made.samples)
    adapter = RunAdapter(CONFIG, model, SHAPE, made.profile, made.samples)
    events = timeline(schedule, made.plan, made, {}, noise=0.2)
    for round in range(schedule.rounds - 1):
        assert adapter.after_round(round, events, schedule, made.plan) is None
    measured = adapter.measures[-1]
    assert measured.slowdown == pytest.approx([CONFIG.device_slowdown] * 2, rel=0.05)
    assert measured.device_cpu == pytest.approx([1.0, 1.0], rel=0.1)
    assert measured.mbps["up"] == pytest.approx([50.0, 50.0], rel=0.1)  # wifi


def test_a_device_that_became_slower_gets_a_new_plan(planned: tuple[Planned, nn.Sequential]) -> None:
    made, model = planned
    schedule = schedule_for(CONFIG, made.plan, made.samples)
    adapter = RunAdapter(CONFIG, model, SHAPE, made.profile, made.samples)
    events = timeline(schedule, made.plan, made, {1: 8.0}, noise=0.05)
    replan = adapter.after_round(0, events, schedule, made.plan)
    assert replan is not None and replan.round == 0 and replan.gain > 0.05
    assert replan.measured["slowdown"][1] == pytest.approx(8 * replan.measured["slowdown"][0], rel=0.1)
    assert replan.new.splits[1] < made.plan.splits[1] or replan.new.microbatches[1] != made.plan.microbatches[1]
    assert [d.slowdown for d in replan.new.devices] == [d.slowdown for d in made.plan.devices]  # emulation as asked


def test_only_a_run_with_something_to_choose_adapts(planned: tuple[Planned, nn.Sequential]) -> None:
    made, model = planned
    args = (model, SHAPE, made.profile, made.samples)
    assert isinstance(adapter_for(CONFIG, *args), RunAdapter)
    assert adapter_for(RunConfig(**{**vars(CONFIG), "adapt": "off"}), *args) is None
    assert adapter_for(RunConfig(**{**vars(CONFIG), "split": 2, "microbatches": 4}), *args) is None
    assert adapter_for(CONFIG, model, SHAPE, None, made.samples) is None
