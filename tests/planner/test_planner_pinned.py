"""Plans and predictions pinned before the house was rearranged: the same inputs must give the same outputs."""

from __future__ import annotations

import pytest

from pipelearn.config import DeviceOverride, RunConfig
from pipelearn.plan import RunPlan, fixed_setups
from pipelearn.planner.costs import CostModel
from pipelearn.planner.predict import run_simulation
from pipelearn.planner.search import plan_run

_LARGE = {d: DeviceOverride(device_slowdown=float(1 + d % 7), up_mbps=float(5 + d % 11)) for d in range(40)}
_LARGE_SPLITS = [4, 4, 4, 4, 4, 3, 3] * 5 + [4, 4, 4, 4, 4]
_LARGE_COUNTS = [int(c) for c in "1111112111112211111121111122111112211111"]

CASES: dict[str, tuple[dict[str, object], list[int], list[int], float, float]] = {
    "pipelearn, wifi, one device": ({}, [1], [4], 0.349397708, 0.299314584),
    "pipelearn, 4g, two": ({"devices": 2, "network": "4g"}, [4, 4], [2, 2], 0.665106856, 0.604804552),
    "sfl, 4g, two": ({"devices": 2, "network": "4g", "mode": "sfl"}, [4, 4], [1, 1], 0.688922528, 0.604803592),
    "sl, wifi, two": ({"devices": 2, "mode": "sl"}, [1, 1], [1, 1], 0.830822568, 0.598625216),
    "fl, wifi, two": ({"devices": 2, "mode": "fl"}, [4, 4], [1, 1], 0.618089512, 0.608001608),
    "heterogeneous": (
        {
            "devices": 3,
            "device_overrides": {
                1: DeviceOverride(device_slowdown=20.0),
                2: DeviceOverride(network="4g", microbatches=2),
            },
        },
        [4, 1, 4],
        [1, 4, 2],
        0.665107392,
        0.604804552,
    ),
    "two shared cores": (
        {"devices": 3, "host_cores": 2.0, "network": "4g+"},
        [2, 2, 2],
        [4, 4, 4],
        0.60301316,
        0.459080148,
    ),
    "aggregate every iteration": (
        {"devices": 2, "aggregate_every": 1, "epochs": 2},
        [2, 2],
        [4, 4],
        0.42055984,
        0.400454016,
    ),
    "40 devices, estimated": (
        {"devices": 40, "samples_per_device": 800, "device_overrides": _LARGE},
        _LARGE_SPLITS,
        _LARGE_COUNTS,
        75.61074514,
        75.60025202,
    ),
}


def _config(**values: object) -> RunConfig:
    base: dict[str, object] = {
        "devices": 1,
        "batch_size": 8,
        "samples_per_device": 16,
        "epochs": 1,
        "network": "wifi",
        "device_slowdown": 2.0,
        "host_cores": "off",
        "split": "auto",
        "microbatches": "auto",
    }
    return RunConfig(**{**base, **values}).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize("case", list(CASES))
def test_the_planner_chooses_and_predicts_as_before(case, model, profile):
    values, splits, counts, predicted, bound = CASES[case]
    plan = plan_run(_config(**values), model, (1, 2, 2), profile()).plan
    assert (plan.splits, plan.microbatches) == (splits, counts)
    assert plan.predicted_epoch_s == pytest.approx(predicted, rel=1e-9)
    assert plan.bound_s == pytest.approx(bound, rel=1e-9)


def test_the_simulator_times_a_fixed_plan_as_before(profile):
    config = RunConfig(
        devices=2, batch_size=8, samples_per_device=16, epochs=2, network="4g", device_slowdown=3.0, host_cores="off"
    ).validate()
    plan = RunPlan(fixed_setups(config, [2, 3], [4, 2]))
    sim = run_simulation(config, plan, CostModel.for_run(profile(), config), [16, 16])
    assert sim.epoch_times_s() == pytest.approx([0.98066447, 0.98066447], rel=1e-9)
    assert sim.bound_s() == pytest.approx(1.232553408, rel=1e-9)
