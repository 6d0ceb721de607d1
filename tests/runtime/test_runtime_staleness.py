"""Staleness over real processes: a run with staleness 1 computes delayed-gradient SGD on both sides, and FedAvg
averages fully updated models; the devices report the memory their parts held."""

from __future__ import annotations

from typing import Any

import pytest
from safetensors.torch import load_file

from pipelearn.config import RunConfig
from pipelearn.runtime.launch import run_local

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("staleness", [0, 1])
@pytest.mark.parametrize("mode", ["pipelearn", "sfl"])
def test_a_run_computes_sgd_with_its_staleness_on_both_sides(
    small_config: Any, sgd_reference: Any, mode: str, staleness: int
) -> None:
    config = small_config(
        mode=mode, staleness=staleness, samples_per_device=80, aggregate_every=2, momentum=0.9, lr=0.05
    )
    reference = sgd_reference(config, rounds=2, per_round=2)
    metrics = run_local(config, progress=False)
    assert metrics["failed_devices"] == [] and metrics["staleness"] == staleness
    weights = load_file(f"{config.out}/model.safetensors")
    worst = max((weights[k] - v).abs().max().item() for k, v in reference.items() if v.is_floating_point())
    assert worst < 1e-5, worst
    if staleness:  # the same run a step earlier is a different computation: the test tells them apart
        fresh = sgd_reference(RunConfig(**{**vars(config), "staleness": 0}).validate(), rounds=2, per_round=2)
        assert max((weights[k] - v).abs().max().item() for k, v in fresh.items() if v.is_floating_point()) > 1e-4


def test_each_device_reports_the_memory_its_part_held_and_staleness_holds_more(small_config: Any) -> None:
    peaks = {}
    for staleness in (0, 1):
        config = small_config(staleness=staleness, out=f"{small_config().out}-{staleness}")
        metrics = run_local(config, progress=False)
        peaks[staleness] = [d["peak_memory_bytes"] for d in metrics["device"]]
    assert all(isinstance(p, int) and p > 0 for p in peaks[0])
    # a second weight version and the next mini-batch's activations are held beside this one's
    assert all(stale > fresh for stale, fresh in zip(peaks[1], peaks[0], strict=True)), peaks
