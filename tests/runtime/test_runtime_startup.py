"""One-off start-up costs are paid before READY: the first epoch takes about as long as the later ones."""

from __future__ import annotations

from pipelearn.runtime.launch import run_local


def test_the_first_epoch_is_not_slower_than_the_later_ones(small_config):
    config = small_config(mode="pipelearn", epochs=3, samples_per_device=200, device_slowdown=2.0)
    metrics = run_local(config, progress=False)
    first, *later = metrics["epoch_times_s"]
    assert first < 1.5 * max(later), metrics["epoch_times_s"]
    startup = metrics["startup_s"]
    assert startup["server"] > 0
    assert len(startup["devices"]) == config.devices and all(s > 0 for s in startup["devices"])
