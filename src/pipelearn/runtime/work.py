"""The arithmetic every trainer shares: models and their parts, data for a device, loss, optimizers."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipelearn.config import RunConfig
from pipelearn.data import (
    Dataset,
    Split,
    SyntheticSpec,
    dataset_info,
    iterate_batches,
    load_dataset,
    partition_dirichlet,
    partition_iid,
    select_subset,
)
from pipelearn.models import build_model, split
from pipelearn.plan import RunPlan
from pipelearn.schedule import DevicePlan, Schedule, build_schedule


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


def make_model(config: RunConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """The run's whole model, initialised from the run's seed."""
    torch.manual_seed(config.seed)
    return build_model(config.model, input_shape, num_classes, batchnorm=config.batchnorm)


def device_part(model: nn.Sequential, plan: RunPlan, device: int) -> nn.Sequential:
    """What a device trains: blocks 1..p of its plan (every block in fl)."""
    return split(model, plan.devices[device].split)[0]


def server_part(model: nn.Sequential, plan: RunPlan, device: int) -> nn.Sequential:
    """What the server trains for a device: the blocks after p of its plan (none in fl)."""
    return split(model, plan.devices[device].split)[1]


def make_optimizer(module: nn.Module, config: RunConfig) -> torch.optim.Optimizer | None:
    """SGD with the run's learning rate and momentum, or None for a part without parameters."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum) if params else None


def on_new_weights(optimizer: torch.optim.Optimizer | None, config: RunConfig) -> None:
    """Apply the run's `optimizer_state` after the weights of the optimizer's part were replaced from the network."""
    if optimizer is not None and config.optimizer_state == "reset":
        optimizer.state.clear()


def warm_up(part: nn.Module, config: RunConfig, input_shape: tuple[int, ...], batch: int) -> None:
    """Pay one-off costs (lazy imports, first-call allocation) on a throw-away copy of `part`, leaving it untouched.

    One forward, backward and optimizer step of the copy on `batch` zero samples (at least 2, for BatchNorm).
    """
    twin = copy.deepcopy(part).train()
    optimizer = make_optimizer(twin, config)
    where = next((t.device for t in twin.state_dict().values()), torch.device("cpu"))
    out = twin(torch.zeros(max(batch, 2), *input_shape, device=where, requires_grad=True))
    out.backward(torch.ones_like(out))
    if optimizer is not None:
        optimizer.step()


def scaled_loss(logits: torch.Tensor, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cross-entropy summed over a micro-batch and divided by its mini-batch's size.

    Summed over the micro-batches of a mini-batch, these give the mini-batch's mean loss, so accumulated gradients
    equal the mini-batch's whatever the micro-batch sizes.
    """
    return F.cross_entropy(logits, labels, reduction="sum") / batch_size


def output_shape(part: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one sample after `part` (probed in eval mode without gradients)."""
    was_training = part.training
    part.eval()
    with torch.no_grad():
        shape = tuple(part(torch.zeros(1, *input_shape)).shape[1:])
    part.train(was_training)
    return shape


def device_indices(config: RunConfig, dataset: Dataset, device: int) -> np.ndarray:
    """The training-set indices a device holds: a seeded subset, dealt IID or by Dirichlet labels."""
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
    return pool[parts[device]]


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


def plans_for(plan: RunPlan, samples: list[int]) -> list[DevicePlan]:
    """What the schedule needs of each device, from the run plan and the devices' sample counts."""
    return [DevicePlan(n, s.split, s.microbatches) for n, s in zip(samples, plan.devices, strict=True)]


def schedule_for(config: RunConfig, plan: RunPlan, samples: list[int]) -> Schedule:
    """The run's schedule; the server, every device and the simulator build the same one."""
    return build_schedule(
        config.mode, plans_for(plan, samples), config.batch_size, config.epochs, config.aggregate_every
    )
