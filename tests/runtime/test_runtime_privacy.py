"""DP-SGD over real processes and gRPC: pipelearn and sfl end at the same weights and spend the same epsilon, which
grows round by round as the accountant says; fl meets a target epsilon; a plug-in with BatchNorm is refused."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelearn.config import ConfigError
from pipelearn.metrics.summary import summary
from pipelearn.runtime.launch import run_local

pytestmark = pytest.mark.slow

pytest.importorskip("opacus", reason="DP-SGD needs the dp extra (opacus), which the dev extra installs")


def _epsilon(noise: float, rate: float, steps: int) -> float:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=noise, sample_rate=rate)
    return float(accountant.get_epsilon(delta=1e-5))


def test_pipelearn_and_sfl_with_dp_end_at_the_same_weights_and_spend_the_same(small_config):
    weights, metrics = {}, {}
    for mode in ("pipelearn", "sfl", "nodp"):
        dp = {"dp_noise_multiplier": 1.0, "dp_max_grad_norm": 0.5} if mode != "nodp" else {}
        config = small_config(
            mode="sfl" if mode == "nodp" else mode,
            samples_per_device=40,
            epochs=2,
            aggregate_every=1,  # two rounds an epoch
            seed=3,
            out=small_config().out + f"-{mode}",
            **dp,
        )
        metrics[mode] = run_local(config, progress=False)
        assert metrics[mode]["failed_devices"] == []
        weights[mode] = load_file(f"{config.out}/model.safetensors")
    for name, value in weights["sfl"].items():
        torch.testing.assert_close(weights["pipelearn"][name], value, atol=1e-5, rtol=0, msg=name)
    device_part = [name for name in weights["sfl"] if name.startswith("0.")]
    assert any(not torch.allclose(weights["sfl"][n], weights["nodp"][n], atol=1e-3) for n in device_part)

    spent = [r["epsilon"] for r in metrics["pipelearn"]["rounds"]]
    assert spent == [r["epsilon"] for r in metrics["sfl"]["rounds"]]
    assert len(spent) == 4 and all(a < b for a, b in itertools.pairwise(spent))
    for r, value in enumerate(spent):  # one step a round, at 20 of each device's 40 samples
        assert value == pytest.approx(_epsilon(1.0, 0.5, r + 1), rel=1e-9)
    privacy = json.loads((Path(small_config().out + "-pipelearn") / "metrics.json").read_text())["privacy"]
    assert privacy["epsilon"] == [spent[-1], spent[-1]] and privacy["noise_multiplier"] == [1.0, 1.0]
    assert metrics["nodp"]["privacy"] is None and metrics["nodp"]["rounds"][0]["epsilon"] is None
    assert f"epsilon {spent[-1]:.2f} at delta 1e-05" in summary(metrics["pipelearn"], "out")


def test_fl_with_a_target_epsilon_spends_it_by_the_runs_end(small_config):
    config = small_config(mode="fl", samples_per_device=40, epochs=2, dp_epsilon=4.0)
    metrics = run_local(config, progress=False)
    assert metrics["failed_devices"] == []
    spent = [r["epsilon"] for r in metrics["rounds"]]
    assert spent[0] < spent[-1] <= 4.0 and spent[-1] == pytest.approx(4.0, abs=0.05)
    noise = metrics["privacy"]["noise_multiplier"][0]
    assert spent[-1] == pytest.approx(_epsilon(noise, 0.5, 4), rel=1e-9)


def test_a_plugin_with_batchnorm_is_refused_naming_no_batchnorm(small_config, plugin_nets):
    data = f"{plugin_nets}:tiny_data"
    config = small_config(
        mode="sfl", model=f"{plugin_nets}:batchnorm_net", dataset=data, split=2, dp_noise_multiplier=1.0
    )
    with pytest.raises((ConfigError, RuntimeError), match="--no-batchnorm"):
        run_local(config, progress=False)
