"""Tests for the Dataset type, the registry, the synthetic set and the bundled real data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelearn.data import (
    DATASET_NAMES,
    DEBIAN_FASHION_MNIST_DIR,
    Dataset,
    DatasetError,
    SyntheticSpec,
    dataset_info,
    load_dataset,
    synthetic_dataset,
)
from pipelearn.data.idx import has_idx_split


def _tiny(**overrides: object) -> Dataset:
    fields: dict = {
        "name": "t",
        "images": torch.zeros(3, 1, 2, 2, dtype=torch.uint8),
        "labels": torch.tensor([0, 1, 2]),
        "num_classes": 3,
    }
    fields.update(overrides)
    return Dataset(**fields)


def test_dataset_properties() -> None:
    ds = _tiny()
    assert len(ds) == 3 and ds.input_shape == (1, 2, 2)
    assert "samples=3" in repr(ds)


@pytest.mark.parametrize(
    "overrides",
    [
        {"images": torch.zeros(3, 1, 2, 2)},
        {"images": torch.zeros(3, 2, 2, dtype=torch.uint8)},
        {"labels": torch.tensor([0, 1, 2], dtype=torch.int32)},
        {"labels": torch.tensor([0, 1])},
        {"labels": torch.tensor([0, 1, 3])},
        {"num_classes": 0},
    ],
)
def test_dataset_validates(overrides: dict) -> None:
    with pytest.raises(ValueError):
        _tiny(**overrides)


def test_dataset_info_without_loading() -> None:
    assert DATASET_NAMES == ("mnist", "fashion-mnist", "idx", "cifar10", "cifar100", "svhn", "synthetic", "saved")
    assert dataset_info("MNIST") == ((1, 28, 28), 10)
    assert dataset_info("fashion_mnist") == ((1, 28, 28), 10)
    assert dataset_info("cifar10") == ((3, 32, 32), 10)
    assert dataset_info("cifar100") == ((3, 32, 32), 100)
    assert dataset_info("svhn") == ((3, 32, 32), 10)
    assert dataset_info("synthetic") == ((1, 28, 28), 10)
    spec = SyntheticSpec(input_shape=(3, 8, 8), num_classes=4)
    assert dataset_info("synthetic", synthetic=spec) == ((3, 8, 8), 4)


def test_unknown_name_and_split() -> None:
    with pytest.raises(DatasetError, match="unknown data set 'imagenet'"):
        load_dataset("imagenet", "train")
    with pytest.raises(DatasetError, match="unknown split"):
        load_dataset("synthetic", "valid")  # type: ignore[arg-type]


def test_synthetic_is_deterministic_and_split_dependent() -> None:
    a = synthetic_dataset(50, (3, 4, 4), 5, seed=3)
    b = synthetic_dataset(50, (3, 4, 4), 5, seed=3)
    c = synthetic_dataset(50, (3, 4, 4), 5, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.input_shape == (3, 4, 4) and a.num_classes == 5
    assert a.labels.bincount().tolist() == [10] * 5
    train, test = load_dataset("synthetic", "train"), load_dataset("synthetic", "test")
    assert (len(train), len(test)) == (2000, 500)
    assert not torch.equal(train.images[:500], test.images)


def test_synthetic_is_learnable() -> None:
    spec = SyntheticSpec(num_train=300, num_test=200, num_classes=10, seed=1)
    train = load_dataset("synthetic", "train", synthetic=spec)
    test = load_dataset("synthetic", "test", synthetic=spec)
    x_train = train.images.flatten(1).float()
    means = torch.stack([x_train[train.labels == c].mean(0) for c in range(10)])
    predicted = torch.cdist(test.images.flatten(1).float(), means).argmin(1)
    assert (predicted == test.labels).float().mean() > 0.9


def test_real_mnist_from_pure_ml() -> None:
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.input_shape == (1, 28, 28) and train.num_classes == 10
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert sorted(test.labels.unique().tolist()) == list(range(10))
    assert abs(train.images.float().mean().item() / 255 - 0.1307) < 1e-3


@pytest.mark.skipif(
    not has_idx_split(DEBIAN_FASHION_MNIST_DIR, "test"), reason="Debian package dataset-fashion-mnist absent"
)
def test_real_fashion_mnist_from_debian(tmp_path: Path) -> None:
    test = load_dataset("fashion-mnist", "test", tmp_path)  # an empty root falls back to the Debian files
    assert len(test) == 10000 and test.input_shape == (1, 28, 28) and test.num_classes == 10
    assert test.labels.bincount().tolist() == [1000] * 10


def test_fashion_mnist_absent_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelearn.data.mnist as mnist_module

    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "train", tmp_path)


def test_from_numpy_copies_read_only_input() -> None:
    images = np.zeros((2, 1, 3, 3), np.uint8)
    images.flags.writeable = False
    ds = Dataset.from_numpy("x", images, np.array([0, 1]), 2)
    assert ds.labels.dtype == torch.int64 and ds.images.shape == (2, 1, 3, 3)
