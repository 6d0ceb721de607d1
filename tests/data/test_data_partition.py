"""Tests for the IID, Dirichlet and subset partitioners."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelearn.data import partition_dirichlet, partition_iid, select_subset


def _check_cover(parts: list[np.ndarray], total: int) -> None:
    joined = np.concatenate(parts)
    assert joined.size == total
    np.testing.assert_array_equal(np.sort(joined), np.arange(total))
    for part in parts:
        assert np.all(np.diff(part) > 0)


def _labels() -> np.ndarray:
    return np.repeat(np.arange(10), 300)


def test_iid_sizes_cover_and_determinism() -> None:
    parts = partition_iid(1003, 7, seed=5)
    _check_cover(parts, 1003)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    again = partition_iid(1003, 7, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_iid(1003, 7, seed=6)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_rejects_too_many_devices() -> None:
    with pytest.raises(ValueError):
        partition_iid(3, 4, seed=0)


def test_dirichlet_cover_and_determinism() -> None:
    labels = _labels()
    parts = partition_dirichlet(labels, 8, alpha=0.5, seed=2)
    _check_cover(parts, labels.size)
    again = partition_dirichlet(torch.from_numpy(labels), 8, alpha=0.5, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def _class_fractions(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    hist = np.stack([np.bincount(labels[p], minlength=10) for p in parts]).astype(float)
    return hist / hist.sum(1, keepdims=True)


def test_dirichlet_small_alpha_is_skewed_and_large_alpha_uniform() -> None:
    labels = _labels()
    skewed = _class_fractions(labels, partition_dirichlet(labels, 10, alpha=0.05, seed=0))
    uniform = _class_fractions(labels, partition_dirichlet(labels, 10, alpha=1e5, seed=0))
    assert skewed.max(1).mean() > 0.5
    assert np.abs(uniform - 0.1).max() < 0.02


def test_dirichlet_min_size_respected() -> None:
    labels = _labels()
    parts = partition_dirichlet(labels, 20, alpha=0.1, seed=3, min_size=40)
    assert min(p.size for p in parts) >= 40
    _check_cover(parts, labels.size)


def test_dirichlet_gives_up_with_clear_error() -> None:
    with pytest.raises(ValueError, match="tries"):
        partition_dirichlet(_labels(), 10, alpha=0.01, seed=0, min_size=290, max_tries=5)
    with pytest.raises(ValueError):
        partition_dirichlet(_labels(), 10, alpha=0.0, seed=0)


def test_select_subset() -> None:
    chosen = select_subset(100, 30, seed=4)
    assert chosen.size == 30 and np.unique(chosen).size == 30 and np.all(np.diff(chosen) > 0)
    assert chosen.min() >= 0 and chosen.max() < 100
    np.testing.assert_array_equal(chosen, select_subset(100, 30, seed=4))
    assert not np.array_equal(chosen, select_subset(100, 30, seed=5))
    with pytest.raises(ValueError):
        select_subset(10, 11, seed=0)
