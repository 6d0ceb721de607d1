"""The speed-up map, run on a hand-made profile: a cell per grid point, each the planner's plans simulated."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import nn

from pipelearn.bench.speedup_map import speedup_map
from pipelearn.config import RunConfig
from pipelearn.data.dealing import data_shape
from pipelearn.models.parts import make_model
from pipelearn.plan import RunPlan, fixed_setups
from pipelearn.planner.costs import CostModel
from pipelearn.planner.predict import run_simulation
from pipelearn.planner.profile import Profile, Timing, block_names, state_tensors
from pipelearn.planner.resolve import at_best_plan
from pipelearn.planner.search import plan_run

CONFIG = RunConfig(
    dataset="synthetic",
    model="vgg5",
    batchnorm=False,
    devices=2,
    batch_size=8,
    samples_per_device=16,
    epochs=1,
    host_cores="off",  # each on hardware of its own, whatever machine the tests run on
).validate()
SLOWDOWNS = (1.0, 20.0)
UPLINKS = (1.0, 50.0)


def _profile(model: nn.Sequential, shape: tuple[int, int, int]) -> Profile:
    """Round numbers for every block (1 ms forward and 2 ms backward a sample), the model's own sizes."""
    outputs, x = [], torch.zeros(1, *shape)
    with torch.no_grad():
        for block in model:
            x = block(x)
            outputs.append(4 * x.numel())
    timing = Timing(
        forward_s=[[0.001, 0.008] for _ in model],
        backward_s=[[0.002, 0.016] for _ in model],
        loss_s=[0.0001, 0.0008],
        step_s=[0.001 for _ in model],
        codec_s=0.0001,
        codec_s_per_byte=1e-9,
        wire_s=0.0001,
        wire_s_per_byte=1e-9,
        aggregate_s_per_byte=1e-9,
    )
    return Profile(
        model="vgg5",
        blocks=block_names(model),
        input_shape=list(shape),
        sizes=[1, 8],
        input_bytes=4 * math.prod(shape),
        output_bytes=outputs,
        weight_bytes=[4 * sum(t.numel() for t in b.state_dict().values()) for b in model],
        activation_overhead_bytes=150,
        gradient_overhead_bytes=90,
        device=timing,
        server=timing,
        weight_tensors=state_tensors(model),
    )


def _simulated_epoch_s(mode: str, slowdown: float, up_mbps: float, profile: Profile, best: bool = True) -> float:
    """The epoch the simulator gives the planner's plan for `mode` at a grid point (or fl's one plan, unsearched)."""
    shape, classes = data_shape(CONFIG)
    model = make_model(CONFIG, shape, classes)
    point = at_best_plan(
        CONFIG, mode, device_slowdown=slowdown, up_mbps=up_mbps, down_mbps=2.5 * up_mbps, device_overrides={}
    )
    planned = plan_run(point, model, shape, profile)
    plan = planned.plan if best else RunPlan(fixed_setups(point, [len(model)] * 2, [1] * 2))
    simulation = run_simulation(point, plan, CostModel.for_run(planned.profile, point), [16, 16])
    return statistics.mean(simulation.epoch_times_s())


@pytest.fixture(scope="module")
def profile() -> Profile:
    """The hand-made profile of CONFIG's model."""
    shape, classes = data_shape(CONFIG)
    return _profile(make_model(CONFIG, shape, classes), shape)


def test_the_map_has_a_speed_up_per_grid_point_and_the_measured_points_beside_their_predictions(profile) -> None:
    measured = [{"slowdown": 20.0, "up_mbps": 1.0, "over_fl": 1.5, "over_sfl": 1.2}]
    grid = speedup_map(CONFIG, measured, SLOWDOWNS, UPLINKS, profile=profile)
    assert (grid["model"], grid["dataset"], grid["devices"]) == ("vgg5", "synthetic", 2)
    assert (grid["slowdowns"], grid["uplinks_mbps"]) == (list(SLOWDOWNS), list(UPLINKS))
    for over in ("over_fl", "over_sfl"):
        assert [len(row) for row in grid[over]] == [len(SLOWDOWNS)] * len(UPLINKS)  # a row per uplink
        assert all(math.isfinite(v) and v > 0 for row in grid[over] for v in row)
    # the measured point lies on the grid (uplink 1, slowdown 20): its prediction is that cell
    [point] = grid["points"]
    assert point == {
        **measured[0],
        "predicted_over_fl": grid["over_fl"][0][1],
        "predicted_over_sfl": grid["over_sfl"][0][1],
    }


@pytest.mark.parametrize(("row", "column"), [(0, 1), (1, 0)])
def test_a_cell_is_the_simulated_epoch_of_each_modes_plan_over_pipelearns(profile, row: int, column: int) -> None:
    grid = speedup_map(CONFIG, (), SLOWDOWNS, UPLINKS, profile=profile)
    at = (SLOWDOWNS[column], UPLINKS[row], profile)
    ours = _simulated_epoch_s("pipelearn", *at)
    assert grid["over_fl"][row][column] == pytest.approx(_simulated_epoch_s("fl", *at) / ours, rel=1e-9)
    assert grid["over_sfl"][row][column] == pytest.approx(_simulated_epoch_s("sfl", *at) / ours, rel=1e-9)
    # fl has one plan, the whole model on each device: the map's fl epoch is its simulation, unsearched
    assert _simulated_epoch_s("fl", *at, best=False) == pytest.approx(_simulated_epoch_s("fl", *at), rel=1e-9)
