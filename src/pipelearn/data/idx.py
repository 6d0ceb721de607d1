"""A parser for the idx file format of MNIST-style data sets, and loading of one split from idx files."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from pipelearn.data.dataset import Split
from pipelearn.data.errors import DatasetError

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

IDX_FILES: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
    except FileNotFoundError as exc:
        raise DatasetError(f"idx file not found: {path}") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"cannot read idx file {path}: {exc} (the file is corrupt or truncated)") from exc
    return data


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse idx-format bytes into an array in native byte order; the header must match the data size."""
    if len(data) < 4:
        raise DatasetError(f"idx file {source} is truncated: {len(data)} bytes, no header")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{source} is not an idx file: magic number {data[:4].hex()} must start with 0000")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DatasetError(f"idx file {source} has unknown data type code 0x{code:02x}")
    if ndim == 0:
        raise DatasetError(f"idx file {source} declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"idx file {source} is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DatasetError(
            f"idx file {source} is {state}: {len(data)} bytes, header {dims} of {dtype.name} needs {expected}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file, gzip-compressed or not, into an array in native byte order."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path))


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """The file `stem` or `stem.gz` in `directory` (uncompressed preferred), or None if neither exists."""
    for name in (stem, stem + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def has_idx_split(directory: Path, split: Split) -> bool:
    """Whether `directory` holds both idx files (images and labels) of `split`."""
    return all(find_idx_file(directory, stem) is not None for stem in IDX_FILES[split])


def read_idx_labels(directory: Path, split: Split, hint: str, num_classes: int | None = None) -> np.ndarray:
    """Read and check the label file of `split` in `directory` as int64; `hint` tells the user what to do."""
    stem = IDX_FILES[split][1]
    path = find_idx_file(directory, stem)
    if path is None:
        raise DatasetError(f"idx label file not found: {directory / stem}[.gz]. {hint}")
    labels = read_idx(path)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"idx label file {path} must hold a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise DatasetError(f"idx label file {path} holds a negative label {int(labels.min())}")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise DatasetError(f"idx label file {path} holds label {int(labels.max())}, outside [0, {num_classes})")
    return labels.astype(np.int64)


def read_idx_split(
    directory: Path, split: Split, hint: str, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one split from idx files: uint8 images (N, 1, H, W) and int64 labels (N,)."""
    stem = IDX_FILES[split][0]
    images_path = find_idx_file(directory, stem)
    if images_path is None:
        raise DatasetError(f"idx image file not found: {directory / stem}[.gz]. {hint}")
    images = read_idx(images_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DatasetError(
            f"idx image file {images_path} must hold unsigned bytes of shape (N, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    labels = read_idx_labels(directory, split, hint, num_classes)
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"idx files disagree: {images_path} holds {images.shape[0]} images "
            f"but its label file holds {labels.shape[0]} labels"
        )
    return images[:, None, :, :], labels


def read_idx_image_shape(directory: Path, split: Split, hint: str) -> tuple[int, int, int]:
    """The image shape (1, H, W) of `split` from the idx header alone, without reading the pixels."""
    stem = IDX_FILES[split][0]
    path = find_idx_file(directory, stem)
    if path is None:
        raise DatasetError(f"idx image file not found: {directory / stem}[.gz]. {hint}")
    try:
        with open(path, "rb") as raw:
            is_gzip = raw.read(2) == _GZIP_MAGIC
        with gzip.open(path, "rb") if is_gzip else open(path, "rb") as f:
            header = f.read(16)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"cannot read idx file {path}: {exc} (the file is corrupt or truncated)") from exc
    if len(header) < 16 or header[:4] != b"\x00\x00\x08\x03":
        raise DatasetError(f"{path} is not an idx file of unsigned bytes with 3 dimensions")
    _, height, width = (int(d) for d in np.frombuffer(header, dtype=">u4", count=3, offset=4))
    return (1, height, width)
