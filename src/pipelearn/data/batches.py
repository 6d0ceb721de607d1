"""Seeded, reproducible mini-batches of normalised (and, for training, augmented) images."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from pipelearn.data.dataset import Dataset
from pipelearn.data.transforms import Augment, augment_for, normalization_for, normalize

_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """The number of batches iterate_batches yields for n samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def _torch_generator(seed: int, epoch: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch, _AUGMENT_STREAM]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def iterate_batches(
    dataset: Dataset,
    indices: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    train: bool,
    shuffle: bool = True,
    drop_last: bool = False,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    augment: Augment | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (float32 images (B, C, H, W), int64 labels (B,)) over `indices`, shuffled by (seed, epoch);
    training batches are augmented with a generator seeded by (seed, epoch). Defaults follow dataset.name."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got {seed} and {epoch}")
    count = num_batches(len(indices), batch_size, drop_last)
    order = np.asarray(indices, dtype=np.int64)
    if order.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {order.shape}")
    if order.size and (order.min() < 0 or order.max() >= len(dataset)):
        raise ValueError(f"indices must lie in [0, {len(dataset)})")
    if shuffle:
        order = order[np.random.default_rng([seed, epoch, _SHUFFLE_STREAM]).permutation(order.size)]
    mean, std = normalization or normalization_for(dataset.name)
    policy = augment if augment is not None else augment_for(dataset.name)
    generator = _torch_generator(seed, epoch) if train and policy.enabled else None
    return _batches(dataset, order, batch_size, count, mean, std, policy, generator)


def _batches(
    dataset: Dataset,
    order: np.ndarray,
    batch_size: int,
    count: int,
    mean: Sequence[float],
    std: Sequence[float],
    policy: Augment,
    generator: torch.Generator | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for b in range(count):
        take = torch.from_numpy(order[b * batch_size : (b + 1) * batch_size])
        images = dataset.images[take]
        if generator is not None:
            images = policy(images, generator)
        yield normalize(images, mean, std), dataset.labels[take]
