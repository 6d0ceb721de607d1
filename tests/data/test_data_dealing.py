"""A device's mini-batches: the same whether read from the start or from any later iteration (seek)."""

from __future__ import annotations

import pytest
import torch

from pipelearn.config import RunConfig
from pipelearn.data import load_dataset
from pipelearn.data.dealing import DeviceBatches, dealt_samples, device_indices, expected_samples
from pipelearn.models.parts import make_model
from pipelearn.planner.search import plan_run


@pytest.mark.parametrize("start", [0, 1, 2, 3, 5])
def test_a_device_can_start_reading_its_batches_at_any_iteration(start):
    config = _config(samples_per_device=50, batch_size=20)  # 3 batches an epoch: 20, 20, 10
    train = load_dataset(config.dataset, "train")
    indices = device_indices(config, train, 1)
    reference = DeviceBatches(train, indices, config, 1)
    expected = [reference.batch(i) for i in range(7)]
    seeking = DeviceBatches(train, indices, config, 1)
    for i in range(start, 7):
        x, y = seeking.batch(i)
        assert torch.equal(x, expected[i][0]) and torch.equal(y, expected[i][1]), i


def test_asking_for_an_earlier_batch_is_refused():
    config = _config(samples_per_device=50, batch_size=20)
    train = load_dataset(config.dataset, "train")
    batches = DeviceBatches(train, device_indices(config, train, 0), config, 0)
    batches.batch(4)
    with pytest.raises(ValueError, match="in order"):
        batches.batch(3)


def _config(**values: object) -> RunConfig:
    base: dict[str, object] = {"dataset": "synthetic", "devices": 2, "batch_size": 20, "samples_per_device": 40}
    return RunConfig(**{**base, **values}).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "values",
    [
        {"partition": "dirichlet", "devices": 4, "dirichlet_alpha": 0.3},
        {"partition": "dirichlet", "devices": 3, "samples_per_device": None},
        {"partition": "iid", "devices": 3, "samples_per_device": None},
        {"partition": "iid", "devices": 3},
    ],
)
def test_the_planner_expects_the_sample_counts_the_runtime_deals(values):
    config = _config(**values)
    train = load_dataset("synthetic", "train")
    dealt = [len(device_indices(config, train, d)) for d in range(config.devices)]
    assert expected_samples(config) == dealt_samples(config, train) == dealt
    assert sum(dealt) == (
        len(train) if config.samples_per_device is None else config.samples_per_device * config.devices
    )
    if config.partition == "dirichlet" and config.samples_per_device is not None:
        assert len(set(dealt)) > 1  # uneven: what an equal share would have got wrong


@pytest.mark.slow
def test_a_dirichlet_plan_is_made_for_the_counts_the_devices_hold():
    config = _config(partition="dirichlet", devices=4, dirichlet_alpha=0.3, split=2, microbatches="auto")
    train = load_dataset("synthetic", "train")
    planned = plan_run(config, make_model(config, train.input_shape, train.num_classes), train.input_shape)
    assert planned.samples == dealt_samples(config, train)
