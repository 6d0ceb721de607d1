"""SVHN cropped digits from the official MATLAB files, with optional verified download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from pipelearn.data.dataset import Dataset, Split
from pipelearn.data.download import download_file
from pipelearn.data.errors import DatasetError
from pipelearn.data.paths import default_data_dir

SVHN_FILES: dict[Split, tuple[str, str, str]] = {
    "train": (
        "train_32x32.mat",
        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        "e26dedcc434d2e4c54c9b2d4a06d8373",
    ),
    "test": (
        "test_32x32.mat",
        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        "eb5a983be6a315427106f1b1d6fa4e8b",
    ),
}

_HINT = "Pass --data-dir DIR holding the official SVHN files train_32x32.mat and test_32x32.mat, or --download."


def svhn_dir(root: str | Path | None) -> Path:
    """The directory holding the .mat files: `root`, or <default data dir>/svhn."""
    return Path(root).expanduser() if root is not None else default_data_dir() / "svhn"


def read_svhn_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one SVHN .mat file: uint8 images (N, 3, 32, 32) and int64 labels 0-9 (N,)."""
    if not path.is_file():
        raise DatasetError(f"SVHN file not found: {path}. {_HINT}")
    try:
        contents = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises many unrelated types for a damaged file
        raise DatasetError(f"cannot read SVHN file {path}: {exc} (corrupt or truncated). {_HINT}") from exc
    if "X" not in contents or "y" not in contents:
        raise DatasetError(f"SVHN file {path} lacks the variable X or y; it is not an official SVHN file. {_HINT}")
    x, y = contents["X"], contents["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DatasetError(f"SVHN file {path}: X must be uint8 of shape (32, 32, 3, N), got {x.dtype} {x.shape}")
    count = x.shape[3]
    if y.size != count or (y.ndim == 2 and y.shape[1] != 1) or y.ndim > 2:
        raise DatasetError(f"SVHN file {path}: y must have shape ({count}, 1), got {y.shape}")
    y = y.reshape(-1)
    if not np.issubdtype(y.dtype, np.number) or not np.array_equal(y, np.round(y)):
        raise DatasetError(f"SVHN file {path}: y must hold whole numbers, got {y.dtype}")
    bad = np.flatnonzero((y < 1) | (y > 10))
    if bad.size:
        raise DatasetError(f"SVHN file {path}: sample {int(bad[0])} has label {y[bad[0]]}, outside 1-10")
    labels = y.astype(np.int64) % 10  # the official files label the digit 0 as 10
    images = np.transpose(x, (3, 2, 0, 1))
    return images, labels


def load_svhn(split: Split, root: str | Path | None = None, *, download: bool = False) -> Dataset:
    """SVHN cropped digits (labels 0-9), downloading the split's .mat file first if asked and missing."""
    name, url, md5 = SVHN_FILES[split]
    path = svhn_dir(root) / name
    if download and not path.exists():
        download_file(url, path, md5)
    images, labels = read_svhn_file(path)
    return Dataset.from_numpy("svhn", images, labels, 10)
