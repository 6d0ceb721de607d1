"""The `optimizer_state` setting: momentum kept across FedAvg rounds, or reset, on the devices and the server."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from pipelearn.data import load_dataset
from pipelearn.data.dealing import DeviceBatches, device_indices
from pipelearn.models.parts import make_model
from pipelearn.runtime.launch import run_local
from pipelearn.training import make_optimizer, on_new_weights, scaled_loss


def _one_process(config) -> dict[str, torch.Tensor]:
    """Two SGD steps of the whole model on one device's two mini-batches, the setting applied between them."""
    train = load_dataset(config.dataset, "train")
    batches = DeviceBatches(train, device_indices(config, train, 0), config, 0)
    model = make_model(config, train.input_shape, train.num_classes)
    optimizer = make_optimizer(model, config)
    for iteration in range(2):
        x, y = batches.batch(iteration)
        scaled_loss(model(x), y, len(y)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        on_new_weights(optimizer, config)  # FedAvg of one device hands back the same weights
    return model.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fl", "sfl"])
def test_momentum_after_an_aggregation_is_what_the_setting_says(small_config, mode):
    """One device, FedAvg after every iteration: a run equals one process that keeps, or clears, momentum."""
    finals = {}
    for setting in ("keep", "reset"):
        config = small_config(
            mode=mode,
            devices=1,
            samples_per_device=40,
            batch_size=20,
            aggregate_every=1,
            optimizer_state=setting,
            out=small_config().out + f"-{mode}-{setting}",
        )
        metrics = run_local(config, progress=False)
        assert metrics["optimizer_state"] == setting
        finals[setting] = load_file(f"{config.out}/model.safetensors")
        reference = _one_process(config)
        for name, value in reference.items():
            torch.testing.assert_close(finals[setting][name], value, atol=1e-5, rtol=0, msg=f"{setting} {name}")
    assert any(not torch.allclose(finals["keep"][k], finals["reset"][k]) for k in finals["keep"])


def test_reset_clears_momentum_and_keep_leaves_it(small_config):
    model = torch.nn.Linear(3, 2)
    for setting, kept in (("keep", True), ("reset", False)):
        optimizer = make_optimizer(model, small_config(optimizer_state=setting))
        model(torch.ones(4, 3)).sum().backward()
        optimizer.step()
        on_new_weights(optimizer, small_config(optimizer_state=setting))
        assert bool(optimizer.state) is kept
