"""One-off start-up costs are paid before READY, reported apart for the server and each device, and left out of
training's timeline (benchmarks/startup_epochs.py measures that the first epoch is then no slower)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelearn.runtime.launch import run_local


def test_start_up_is_reported_for_each_side_and_left_out_of_training(small_config):
    config = small_config(mode="pipelearn", epochs=2)
    metrics = run_local(config, progress=False)
    startup = metrics["startup_s"]
    assert startup["server"] > 0
    assert len(startup["devices"]) == config.devices and all(s > 0 for s in startup["devices"])
    # training's time is its epochs', and nothing on its timeline comes before training starts (0 s)
    assert sum(metrics["epoch_times_s"]) == pytest.approx(metrics["train_time_s"], abs=1e-6)
    events = json.loads((Path(config.out) / "trace.json").read_text())["traceEvents"]
    timed = [e for e in events if e["ph"] == "X"]
    assert timed and min(e["ts"] for e in timed) >= 0
