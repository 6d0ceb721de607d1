"""The named data sets: load_dataset, DATASET_NAMES and dataset_info."""

from __future__ import annotations

from pathlib import Path

from pipelearn.data.cifar import load_cifar10, load_cifar100
from pipelearn.data.dataset import SPLITS, Dataset, Split
from pipelearn.data.errors import DatasetError
from pipelearn.data.mnist import idx_dataset_info, load_fashion_mnist, load_idx_dataset, load_mnist
from pipelearn.data.svhn import load_svhn
from pipelearn.data.synthetic import SyntheticSpec, load_synthetic

DATASET_NAMES: tuple[str, ...] = ("mnist", "fashion-mnist", "idx", "cifar10", "cifar100", "svhn", "synthetic")

_INFO: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "svhn": ((3, 32, 32), 10),
}

_ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}


def canonical_name(name: str) -> str:
    """The registry name for `name` (case-insensitive, '_' read as '-'); DatasetError if unknown."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return key


def load_dataset(
    name: str,
    split: Split,
    root: str | Path | None = None,
    *,
    download: bool = False,
    synthetic: SyntheticSpec | None = None,
) -> Dataset:
    """Load one split of a named data set, fully validated; `synthetic` sets the synthetic options."""
    key = canonical_name(name)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose 'train' or 'test'")
    if key == "mnist":
        return load_mnist(split, root)
    if key == "fashion-mnist":
        return load_fashion_mnist(split, root)
    if key == "idx":
        return load_idx_dataset(split, root)
    if key == "cifar10":
        return load_cifar10(split, root, download=download)
    if key == "cifar100":
        return load_cifar100(split, root, download=download)
    if key == "svhn":
        return load_svhn(split, root, download=download)
    return load_synthetic(split, synthetic)


def dataset_info(
    name: str, root: str | Path | None = None, *, synthetic: SyntheticSpec | None = None
) -> tuple[tuple[int, int, int], int]:
    """(input_shape, num_classes) of a data set without loading it (`idx` reads headers and labels)."""
    key = canonical_name(name)
    if key == "synthetic":
        spec = synthetic or SyntheticSpec()
        return spec.input_shape, spec.num_classes
    if key == "idx":
        return idx_dataset_info(root)
    return _INFO[key]
