"""A device's mini-batches: the same whether read from the start or from any later iteration (seek)."""

from __future__ import annotations

import pytest
import torch

from pipelearn.data import load_dataset
from pipelearn.runtime.work import DeviceBatches, device_indices


@pytest.mark.parametrize("start", [0, 1, 2, 3, 5])
def test_a_device_can_start_reading_its_batches_at_any_iteration(small_config, start):
    config = small_config(samples_per_device=50, batch_size=20)  # 3 batches an epoch: 20, 20, 10
    train = load_dataset(config.dataset, "train")
    indices = device_indices(config, train, 1)
    reference = DeviceBatches(train, indices, config, 1)
    expected = [reference.batch(i) for i in range(7)]
    seeking = DeviceBatches(train, indices, config, 1)
    for i in range(start, 7):
        x, y = seeking.batch(i)
        assert torch.equal(x, expected[i][0]) and torch.equal(y, expected[i][1]), i


def test_asking_for_an_earlier_batch_is_refused(small_config):
    config = small_config(samples_per_device=50, batch_size=20)
    train = load_dataset(config.dataset, "train")
    batches = DeviceBatches(train, device_indices(config, train, 0), config, 0)
    batches.batch(4)
    with pytest.raises(ValueError, match="in order"):
        batches.batch(3)
