"""One-off start-up costs are paid before READY, reported apart for the server and each device, and left out of
training's timeline (benchmarks/startup_epochs.py measures that the first epoch is then no slower)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelearn.config import ConfigError
from pipelearn.runtime.launch import run_local
from pipelearn.runtime.server import prepare


@pytest.mark.slow
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


def test_the_server_warns_of_a_profile_never_read_and_of_batches_capped_by_a_devices_samples(
    small_config, tmp_path: Path, caplog
) -> None:
    saved = tmp_path / "profile.json"
    saved.write_text("{}")
    # 2 devices deal the 2,000 synthetic samples 1,000 each, fewer than a mini-batch
    config = small_config(samples_per_device=None, batch_size=1200, profile_in=str(saved))
    prepare(config)  # the split and micro-batches are fixed: the profile is not read
    said = [r.getMessage() for r in caplog.records if r.name == "pipelearn.server" and r.levelname == "WARNING"]
    assert len(said) == 2 and said[0].startswith(f"profile_in {saved} is not read")
    assert said[1].startswith("fewer training samples than batch_size 1200 (device 0 1000, device 1 1000)")
    with pytest.raises(ConfigError, match="which is no file"):
        prepare(small_config(profile_in=str(tmp_path / "none.json")))
    with pytest.raises(ConfigError, match="more than the 500 samples of synthetic's test split"):
        prepare(small_config(test_samples=600))
