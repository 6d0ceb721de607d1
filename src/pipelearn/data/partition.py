"""Seeded splits of a data set's sample indices across devices: IID, Dirichlet non-IID and subsets."""

from __future__ import annotations

import numpy as np
import torch


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def partition_iid(num_samples: int, num_devices: int, seed: int) -> list[np.ndarray]:
    """Split range(num_samples) at random into num_devices sorted parts whose sizes differ by at most one."""
    _check_seed(seed)
    if num_devices < 1:
        raise ValueError(f"num_devices must be positive, got {num_devices}")
    if num_samples < num_devices:
        raise ValueError(f"cannot split {num_samples} samples across {num_devices} devices")
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_devices)]


def partition_dirichlet(
    labels: np.ndarray | torch.Tensor,
    num_devices: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
    *,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Non-IID split: each class is shared out by Dirichlet(alpha) proportions; redrawn until each device
    holds at least min_size samples (ValueError after max_tries draws). Smaller alpha means more skew."""
    _check_seed(seed)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if num_devices < 1:
        raise ValueError(f"num_devices must be positive, got {num_devices}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if min_size < 0 or num_devices * min_size > y.size:
        raise ValueError(f"cannot give each of {num_devices} devices {min_size} of {y.size} samples")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_devices)]
        for members in by_class:
            shuffled = rng.permutation(members)
            proportions = rng.dirichlet(np.full(num_devices, alpha))
            cuts = (np.cumsum(proportions)[:-1] * shuffled.size).astype(np.int64)
            for device, chunk in enumerate(np.split(shuffled, cuts)):
                parts[device].append(chunk)
        merged = [np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in parts]
        if min(m.size for m in merged) >= min_size:
            return merged
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split of {y.size} samples gave every one of {num_devices} devices "
        f"{min_size} samples in {max_tries} tries; raise alpha, lower min_size or use fewer devices"
    )


def select_subset(num_total: int, num_samples: int, seed: int) -> np.ndarray:
    """A seeded, sorted choice of num_samples distinct indices from range(num_total)."""
    _check_seed(seed)
    if not 0 <= num_samples <= num_total:
        raise ValueError(f"cannot choose {num_samples} of {num_total} samples")
    return np.sort(np.random.default_rng(seed).choice(num_total, size=num_samples, replace=False))
