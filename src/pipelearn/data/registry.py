"""The data sets: load_dataset, by built-in name (DATASET_NAMES) or plug-in MODULE:FUNCTION, and dataset_info."""

from __future__ import annotations

from pathlib import Path

from pipelearn.data.cifar import load_cifar10, load_cifar100
from pipelearn.data.dataset import SPLITS, Dataset, DataSplits, Split
from pipelearn.data.errors import DatasetError
from pipelearn.data.mnist import idx_dataset_info, load_fashion_mnist, load_idx_dataset, load_mnist
from pipelearn.data.saved import load_saved
from pipelearn.data.svhn import load_svhn
from pipelearn.data.synthetic import SyntheticSpec, load_synthetic
from pipelearn.plugins import PluginError, is_plugin, load

DATASET_NAMES: tuple[str, ...] = (
    "mnist",
    "fashion-mnist",
    "idx",
    "cifar10",
    "cifar100",
    "svhn",
    "synthetic",
    "saved",
)

_INFO: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "svhn": ((3, 32, 32), 10),
}

_ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}


def canonical_name(name: str) -> str:
    """The registry name for `name` (any case, '_' read as '-'; a plug-in name as is); DatasetError if unknown."""
    if is_plugin(name):
        return name
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise DatasetError(
            f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}, or a plug-in MODULE:FUNCTION"
        )
    return key


def load_dataset(
    name: str,
    split: Split,
    root: str | Path | None = None,
    *,
    download: bool = False,
    synthetic: SyntheticSpec | None = None,
) -> Dataset:
    """Load one split of a data set (built-in name or plug-in MODULE:FUNCTION), validated; `synthetic` sets the
    synthetic options."""
    key = canonical_name(name)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose 'train' or 'test'")
    if is_plugin(key):
        splits = load_plugin_splits(key)
        return splits.train if split == "train" else splits.test
    if key == "saved":
        return load_saved(split, root)
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
    if is_plugin(key):
        train = load_plugin_splits(key).train
        return train.input_shape, train.num_classes
    if key == "saved":
        train = load_saved("train", root)
        return train.input_shape, train.num_classes
    if key == "synthetic":
        spec = synthetic or SyntheticSpec()
        return spec.input_shape, spec.num_classes
    if key == "idx":
        return idx_dataset_info(root)
    return _INFO[key]


def load_plugin_splits(spec: str) -> DataSplits:
    """Call data plug-in MODULE:FUNCTION (a DatasetFactory) and check what it returns; PluginError if it is wrong."""
    factory = load(spec, "data set")
    try:
        value = factory()
    except Exception as exc:
        raise PluginError(f"data set plug-in {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, tuple) or len(value) != 2 or not all(isinstance(v, Dataset) for v in value):
        got = (
            f"a {type(value).__name__}"
            if not isinstance(value, tuple)
            else f"({', '.join(type(v).__name__ for v in value)})"
        )
        raise PluginError(
            f"data set plug-in {spec!r} returned {got}; it must return (train, test): two pipelearn.data.Dataset "
            "(uint8 images (N, C, H, W), int64 labels (N,))"
        )
    train, test = value
    if train.input_shape != test.input_shape or train.num_classes != test.num_classes:
        raise PluginError(
            f"data set plug-in {spec!r}: its training split holds samples of shape {train.input_shape} in "
            f"{train.num_classes} classes but its test split {test.input_shape} in {test.num_classes}; they must agree"
        )
    return DataSplits(train, test)
