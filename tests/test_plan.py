"""The run plan: resolved once from the config (auto by the planner), checked, and carried as JSON."""

from __future__ import annotations

import json
import os

import pytest

from pipelearn.config import ConfigError, DeviceOverride, Link, RunConfig
from pipelearn.models import build_model
from pipelearn.plan import RunPlan, host_cores, plan_message, read_plan_message
from pipelearn.planner.resolve import resolve_plan

SHAPE = (1, 28, 28)


def _model():
    return build_model("vgg5", SHAPE, 10, batchnorm=False)


def test_a_fixed_config_resolves_to_its_own_values():
    config = RunConfig(
        devices=2,
        split=3,
        microbatches=5,
        device_overrides={1: DeviceOverride(split=1, microbatches=2, device_slowdown=7.0, network="wifi")},
    ).validate()
    plan = resolve_plan(config, _model(), SHAPE)
    assert plan.splits == [3, 1] and plan.microbatches == [5, 2]
    assert plan.devices[0].link == Link(10, 25, 30) and plan.devices[0].slowdown == 4.0
    assert plan.devices[1].link == Link(50, 50, 5) and plan.devices[1].slowdown == 7.0
    assert plan.predicted_epoch_s is None and plan.bound_s is None


def test_modes_fix_what_they_do_not_choose():
    fl = resolve_plan(RunConfig(mode="fl", split="auto", microbatches="auto").validate(), _model(), SHAPE)
    assert fl.splits == [5] * 4 and fl.microbatches == [1] * 4  # the whole model on the device, nothing planned
    assert fl.predicted_epoch_s is None
    sfl = resolve_plan(RunConfig(mode="sfl", microbatches="auto").validate(), _model(), SHAPE)
    assert sfl.microbatches == [1] * 4 and sfl.predicted_epoch_s is None


def test_a_split_outside_the_model_is_refused():
    with pytest.raises(ConfigError, match=r"split 6 of device 1 is outside the model: vgg5 has 5 blocks"):
        resolve_plan(RunConfig(devices=2, device_overrides={1: DeviceOverride(split=6)}).validate(), _model(), SHAPE)
    with pytest.raises(ConfigError, match="same split"):
        resolve_plan(
            RunConfig(mode="sl", devices=2, device_overrides={1: DeviceOverride(split=1)}).validate(), _model(), SHAPE
        )


def test_auto_is_chosen_by_the_planner():
    config = RunConfig(
        devices=2,
        split="auto",
        microbatches="auto",
        batch_size=8,
        samples_per_device=16,
        epochs=1,
        device_overrides={0: DeviceOverride(split=2)},
    ).validate()
    plan = resolve_plan(config, _model(), SHAPE)
    assert plan.splits[0] == 2 and 0 <= plan.splits[1] <= 5
    assert all(1 <= n <= 4 for n in plan.microbatches)
    assert plan.predicted_epoch_s is not None and plan.bound_s is not None
    assert 0 < plan.bound_s <= plan.predicted_epoch_s


def test_the_plan_message_carries_config_and_plan():
    config = RunConfig(devices=2, device_overrides={1: DeviceOverride(network="unlimited")}).validate()
    plan = resolve_plan(config, _model(), SHAPE)
    again_config, again_plan = read_plan_message(plan_message(config, plan))
    assert again_config == config and again_plan == plan
    assert again_plan.devices[1].link.up_mbps == float("inf")
    other = RunConfig(devices=3).validate()
    with pytest.raises(ValueError, match="the plan has 2 devices but the run has 3"):
        read_plan_message(json.dumps({"config": json.loads(other.to_json()), "plan": plan.to_dict()}))
    with pytest.raises(ValueError, match="malformed run plan"):
        RunPlan.from_dict({"devices": [{"split": 1}]})


def test_host_cores_are_this_machines_unless_said_otherwise():
    assert host_cores(RunConfig().validate()) == float(len(os.sched_getaffinity(0)))
    assert host_cores(RunConfig(host_cores=1.5).validate()) == 1.5
    assert host_cores(RunConfig(host_cores="off").validate()) is None
    plan = resolve_plan(RunConfig(devices=2, host_cores=3).validate(), _model(), SHAPE)
    assert plan.host_cores == 3.0 and RunPlan.from_dict(plan.to_dict()) == plan
    recorded_before = {k: v for k, v in plan.to_dict().items() if k != "host_cores"}
    assert RunPlan.from_dict(recorded_before).host_cores is None
