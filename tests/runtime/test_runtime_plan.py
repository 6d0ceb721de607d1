"""`--split auto --microbatches auto` plans, trains with the plan and records it; `plan --compare` reads the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelearn.config import DeviceOverride
from pipelearn.planner.command import plan_command
from pipelearn.runtime.launch import run_local

pytestmark = pytest.mark.slow


def test_auto_plans_then_trains_and_records_the_plan(small_config):
    config = small_config(
        split="auto",
        microbatches="auto",
        network="wifi",
        device_overrides={1: DeviceOverride(device_slowdown=3.0, split=1)},
    )
    metrics = run_local(config, progress=False)
    assert metrics["failed_devices"] == []
    plan = metrics["plan"]
    assert json.loads((Path(config.out) / "metrics.json").read_text())["plan"] == plan
    splits = [d["split"] for d in plan["devices"]]
    micro = [d["microbatches"] for d in plan["devices"]]
    assert splits[1] == 1 and 0 <= splits[0] <= 5  # device 1's split is fixed; device 0's is the planner's
    assert all(1 <= n <= 10 for n in micro)
    assert metrics["split"] == splits and metrics["microbatches"] == micro  # the devices ran what was planned
    assert plan["devices"][1]["slowdown"] == 3.0 and plan["devices"][0]["link"]["up_mbps"] == 50
    assert plan["predicted_epoch_s"] > 0 and 0 < plan["bound_s"] <= plan["predicted_epoch_s"]
    assert len(metrics["epoch_times_s"]) == 1

    table = plan_command(config, compare=config.out)
    for track in ("server/compute", "device0/compute", "device1/uplink", "device1/downlink"):
        assert track in table
    assert "training time: measured" in table and "predicted" in table


def test_auto_plans_under_compression_and_records_the_prediction(small_config):
    config = small_config(split="auto", microbatches="auto", network="4g", compress="int8")
    metrics = run_local(config, progress=False)
    assert metrics["failed_devices"] == []
    plan = metrics["plan"]
    assert plan["predicted_epoch_s"] > 0 and 0 < plan["bound_s"] <= plan["predicted_epoch_s"]
    assert metrics["split"] == [d["split"] for d in plan["devices"]]
    assert metrics["compression"]["up"]["codec"] == "int8"
    table = plan_command(config, compare=config.out)  # the prediction again, from the run's own config
    assert "training time: measured" in table and "device1/uplink" in table
