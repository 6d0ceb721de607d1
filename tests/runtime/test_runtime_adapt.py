"""Re-planning over real processes: a run that changes its splits and micro-batch counts at an aggregation computes
what an unsplit run computes, and records each re-plan."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file
from test_runtime_dropout import SLOW_UPLINK, _device, _finite_model, _server_trained, _until

from pipelearn.bench.report import report_run
from pipelearn.config import DeviceOverride
from pipelearn.events import Event
from pipelearn.metrics.summary import summary
from pipelearn.metrics.trace import read_trace
from pipelearn.plan import RunPlan
from pipelearn.planner.adapt import Replan
from pipelearn.runtime.launch import run_local
from pipelearn.runtime.server import Server, prepare
from pipelearn.schedule import Schedule

pytestmark = pytest.mark.slow


class Resplit:
    """An adapter that moves to other splits and micro-batch counts after one round, whatever was measured."""

    def __init__(self, after: int, splits: Sequence[int], microbatches: Sequence[int]) -> None:
        self.after, self.splits, self.microbatches = after, splits, microbatches
        self.seen: list[int] = []

    def after_round(self, round: int, events: Sequence[Event], schedule: Schedule, plan: RunPlan) -> Replan | None:
        """The new plan after round `after`; the plan in force otherwise."""
        self.seen.append(round)
        if round != self.after:
            return None
        devices = tuple(
            dataclasses.replace(d, split=s, microbatches=n)
            for d, s, n in zip(plan.devices, self.splits, self.microbatches, strict=True)
        )
        return Replan(round, plan, dataclasses.replace(plan, devices=devices), 2.0, 1.0, {"forced": True})


@pytest.mark.parametrize("mode", ["pipelearn", "sfl"])
def test_a_run_resplit_at_an_aggregation_computes_what_an_unsplit_run_does(
    small_config: Any, sgd_reference: Any, mode: str
) -> None:
    micro = 3 if mode == "pipelearn" else 1
    config = small_config(mode=mode, samples_per_device=60, aggregate_every=1, momentum=0.0, microbatches=micro)
    adapter = Resplit(after=0, splits=[3, 1], microbatches=[2, micro] if mode == "pipelearn" else [1, 1])
    metrics = run_local(config, progress=False, adapter=adapter)
    assert metrics["failed_devices"] == [] and adapter.seen == [0, 1]  # not asked after the last round
    [replan] = metrics["replans"]
    assert replan["round"] == 0 and [d["split"] for d in replan["new"]["devices"]] == [3, 1]
    assert metrics["split"] == [3, 1] and metrics["plan"]["devices"][0]["split"] == 3
    assert replan["next_round_s"] is not None and replan["next_round_s"] > 0
    assert 0 < replan["at_s"] < metrics["train_time_s"]
    assert "re-planned    once; last after round 1: split [3, 1]" in summary(metrics, config.out)
    assert Path(config.out, "timeline.png") in report_run(Path(config.out))  # the whole run, the re-plan marked
    weights = load_file(f"{config.out}/model.safetensors")
    reference = sgd_reference(config, rounds=3, per_round=1)
    worst = max((weights[k] - v).abs().max().item() for k, v in reference.items() if v.is_floating_point())
    assert worst < 1e-5, worst


def test_a_replan_in_the_round_a_device_is_dropped_leaves_the_run_consistent(small_config: Any) -> None:
    config = small_config(mode="pipelearn", epochs=2, aggregate_every=1, timeout_s=60.0, **SLOW_UPLINK)
    server = Server(prepare(config), progress=False, adapter=Resplit(after=0, splits=[1, 3], microbatches=[2, 2]))
    address = f"127.0.0.1:{server.listen('127.0.0.1:0', insecure=True)}"
    devices = [_device(address, d) for d in range(config.devices)]
    _until(lambda: len(server.sessions) == config.devices, "every device has joined")
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(metrics=server.run()), daemon=True)
    thread.start()
    try:
        _until(lambda: _server_trained(server, "d1.server.T.i0m0"), "device 1 is in its first iteration")
        os.kill(devices[1].pid, signal.SIGKILL)
        thread.join(120)
        assert not thread.is_alive()
        assert devices[0].wait(60) == 0
    finally:
        for p in devices:
            if p.poll() is None:
                p.kill()
                p.wait()
    metrics = result["metrics"]
    assert [(e["device"], e["round"]) for e in metrics["dropped"]] == [(1, 0)]
    assert [r["round"] for r in metrics["replans"]] == [0] and metrics["split"] == [1, 3]
    assert metrics["device"][0]["error"] is None
    # device 0 trained every later round with its new part: one block, two micro-batches an iteration
    names = {e.name for e in server.recorder.events}
    assert "d0.device.F.i1m1" in names and "d0.device.F.i1m2" not in names and "d0.device.F.i3m1" in names
    _finite_model(config.out)


def test_a_device_follows_its_slowdown_schedule(small_config: Any) -> None:
    config = small_config(
        samples_per_device=200,
        epochs=2,
        device_slowdown=1.0,
        device_overrides={1: DeviceOverride(slowdown_schedule=[[0, 1.0], [0.2, 12.0]])},
    )
    metrics = run_local(config, progress=False)
    assert metrics["device"][1]["slowdowns"] == [[0.0, 1.0], [0.2, 12.0]]
    events = read_trace(Path(config.out, "trace.json"))
    late = [
        e for e in events if e.track == "device1/compute" and e.start > 0.3 and e.args.get("cpu_s", 0) > 0
    ]  # past the change, clock offsets allowed for
    assert late and all(e.duration >= 11.9 * e.args["cpu_s"] for e in late)  # each waits out 12 times its work
