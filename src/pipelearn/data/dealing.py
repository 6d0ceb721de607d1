"""Dealing a run's data to its devices: the split a run uses, each device's samples and its mini-batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from pipelearn.config import RunConfig
from pipelearn.data.batches import iterate_batches
from pipelearn.data.dataset import Dataset, Split
from pipelearn.data.partition import partition_dirichlet, partition_iid, select_subset
from pipelearn.data.registry import dataset_info, load_dataset
from pipelearn.data.synthetic import SyntheticSpec


def load_data(config: RunConfig, which: Split) -> Dataset:
    """One split of the run's data set."""
    return load_dataset(
        config.dataset,
        which,
        config.data_dir,
        download=config.download,
        synthetic=SyntheticSpec(input_shape=config.synthetic_shape),
    )


def data_shape(config: RunConfig) -> tuple[tuple[int, int, int], int]:
    """(input shape, class count) of the run's data set, without loading it."""
    return dataset_info(config.dataset, config.data_dir, synthetic=SyntheticSpec(input_shape=config.synthetic_shape))


def device_indices(config: RunConfig, dataset: Dataset, device: int) -> np.ndarray:
    """The training-set indices a device holds: a seeded subset, dealt IID or by Dirichlet labels."""
    return _deal(config, dataset)[device]


def dealt_samples(config: RunConfig, dataset: Dataset) -> list[int]:
    """How many training samples each device holds, as device_indices deals them."""
    return [len(indices) for indices in _deal(config, dataset)]


def expected_samples(config: RunConfig) -> list[int]:
    """How many training samples each device will hold, loading the data set only where the count needs it (its
    size, or a Dirichlet partition's labels)."""
    if config.samples_per_device is not None and config.partition == "iid":
        return [config.samples_per_device] * config.devices
    return dealt_samples(config, load_data(config, "train"))


def _deal(config: RunConfig, dataset: Dataset) -> list[np.ndarray]:
    total = len(dataset)
    if config.samples_per_device is not None:
        wanted = config.samples_per_device * config.devices
        if wanted > total:
            raise ValueError(
                f"samples_per_device {config.samples_per_device} x {config.devices} devices = {wanted} exceeds the "
                f"{total} training samples of {config.dataset}; lower samples_per_device or devices"
            )
        pool = select_subset(total, wanted, config.seed)
    else:
        pool = np.arange(total)
    if config.partition == "iid":
        parts = partition_iid(len(pool), config.devices, config.seed)
    else:
        labels = dataset.labels[torch.from_numpy(pool)].numpy()
        parts = partition_dirichlet(labels, config.devices, config.dirichlet_alpha, config.seed)
    return [pool[part] for part in parts]


class DeviceBatches:
    """A device's mini-batches, iteration by iteration, epoch after epoch (seeded shuffling and augmentation)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray, config: RunConfig, device: int) -> None:
        self.dataset, self.indices, self.config, self.device = dataset, indices, config, device
        self.per_epoch = -(-len(indices) // config.batch_size)
        self._epoch = -1
        self._next = 0
        self._batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(())

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The mini-batch of an iteration; iterations must be asked for in order, but may start at any one."""
        epoch, index = divmod(iteration, self.per_epoch)
        if epoch != self._epoch:
            if epoch < self._epoch:
                raise ValueError(f"mini-batch {iteration} was asked for after a later one; ask in order")
            self._epoch, self._next = epoch, 0
            self._batches = iterate_batches(
                self.dataset,
                self.indices,
                self.config.batch_size,
                seed=self.config.seed * 1000 + self.device,
                epoch=epoch,
                train=True,
            )
        if index < self._next:
            raise ValueError(f"mini-batch {iteration} was asked for after a later one; ask in order")
        for _ in range(index - self._next):  # seek (a resumed or rejoined device): draw the batches it skips
            next(self._batches)
        self._next = index + 1
        return next(self._batches)
