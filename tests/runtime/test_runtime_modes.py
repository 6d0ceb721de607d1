"""Every mode trains over real processes and gRPC, and one iteration of each matches the single-process step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelearn.data import load_dataset
from pipelearn.data.dealing import DeviceBatches, device_indices
from pipelearn.models.parts import make_model
from pipelearn.runtime.launch import run_local
from pipelearn.training import make_optimizer, scaled_loss

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["fl", "sl", "sfl", "pipelearn"])
def test_every_mode_trains_and_its_loss_falls(small_config, mode):
    config = small_config(mode=mode, epochs=2, samples_per_device=100, batchnorm=True)
    metrics = run_local(config, progress=False)
    losses = metrics["train_loss"]
    assert all(loss is not None for loss in losses)
    assert losses[-1] < losses[0] * 0.9, losses
    assert metrics["failed_devices"] == []
    assert metrics["test_accuracy"] > 0.3
    for usage in [metrics["server"], *metrics["device"]]:
        assert usage["busy_s"] + usage["idle_s"] == pytest.approx(metrics["train_time_s"], abs=1e-6)
        assert usage["busy_s"] > 0
    assert sum(metrics["epoch_times_s"]) == pytest.approx(metrics["train_time_s"], abs=1e-6)
    if mode == "fl":
        assert metrics["bytes_up"] > 0 and metrics["split"] == [None, None]
    else:
        assert metrics["split"] == [2, 2]
    assert metrics["microbatches"] == ([3, 3] if mode == "pipelearn" else [1, 1])


def _single_process_step(config) -> dict[str, torch.Tensor]:
    """One SGD step of the whole model on both devices' first mini-batches together."""
    train = load_dataset(config.dataset, "train")
    xs, ys = zip(
        *(DeviceBatches(train, device_indices(config, train, d), config, d).batch(0) for d in range(config.devices)),
        strict=True,
    )
    x, y = torch.cat(xs), torch.cat(ys)
    model = make_model(config, train.input_shape, train.num_classes)
    optimizer = make_optimizer(model, config)
    assert optimizer is not None
    scaled_loss(model(x), y, len(y)).backward()
    optimizer.step()
    return model.state_dict()


def test_one_iteration_is_the_same_in_pipelearn_sfl_fl_and_one_process(small_config):
    reference = _single_process_step(small_config(samples_per_device=20))
    for mode, microbatches in [("pipelearn", 3), ("pipelearn", 7), ("sfl", 1), ("fl", 1)]:
        config = small_config(
            mode=mode,
            microbatches=microbatches,
            samples_per_device=20,
            out=small_config().out + f"-{mode}-{microbatches}",
        )
        run_local(config, progress=False)
        weights = load_file(f"{config.out}/model.safetensors")
        assert weights.keys() == reference.keys()
        for name, value in reference.items():
            torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=0, msg=f"{mode} N={microbatches} {name}")


def test_a_users_own_network_ends_at_the_same_weights_in_pipelearn_and_sfl(small_config, plugin_nets):
    data = f"{Path(__file__).parents[1] / 'plugin_nets.py'}:tiny_data"  # one plug-in by module, one by file
    weights = {}
    for mode in ("pipelearn", "sfl"):
        config = small_config(
            mode=mode,
            model=f"{plugin_nets}:tiny_net",
            dataset=data,
            split=3,
            samples_per_device=60,
            epochs=2,
            test_samples=None,  # the plug-in's test split holds 120
        )
        metrics = run_local(config, progress=False)
        assert metrics["failed_devices"] == [] and metrics["model"] == "plugin_nets:tiny_net"
        weights[mode] = load_file(f"{config.out}/model.safetensors")
    initial = make_model(config, (1, 12, 12), 4).state_dict()
    assert weights["sfl"].keys() == initial.keys() == {"0.weight", "0.bias", "4.weight", "4.bias", "6.weight", "6.bias"}
    for name, value in weights["sfl"].items():
        assert not torch.allclose(value, initial[name])
        torch.testing.assert_close(weights["pipelearn"][name], value, atol=1e-5, rtol=0, msg=name)
