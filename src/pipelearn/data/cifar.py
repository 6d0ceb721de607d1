"""CIFAR-10 and CIFAR-100 from their official binary versions, with optional verified download."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelearn.data.dataset import Dataset, Split
from pipelearn.data.download import download_and_extract
from pipelearn.data.errors import DatasetError
from pipelearn.data.paths import resolve_root

IMAGE_BYTES = 3 * 32 * 32


@dataclass(frozen=True)
class CifarSpec:
    """The layout of one official CIFAR binary release."""

    name: str
    title: str
    subdir: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    # Label bytes per record and the ranges of each: CIFAR-100 stores a coarse then a fine label.
    label_ranges: tuple[int, ...]
    url: str
    md5: str

    @property
    def num_classes(self) -> int:
        """The number of classes of the label used (the last label byte of each record)."""
        return self.label_ranges[-1]

    @property
    def record_bytes(self) -> int:
        """The size of one record: label bytes then 3072 pixel bytes."""
        return len(self.label_ranges) + IMAGE_BYTES

    def files(self, split: Split) -> tuple[str, ...]:
        """The file names holding `split`."""
        return self.train_files if split == "train" else self.test_files

    def hint(self) -> str:
        """What the user can do when the files are missing or corrupt."""
        return (
            f"Pass --data-dir DIR holding the official {self.title} binary files "
            f"(the {self.subdir} directory or its contents), or --download to fetch them."
        )


CIFAR10 = CifarSpec(
    name="cifar10",
    title="CIFAR-10",
    subdir="cifar-10-batches-bin",
    train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    test_files=("test_batch.bin",),
    label_ranges=(10,),
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5="c32a1d4ab5d03f1284b67883e8d87530",
)

CIFAR100 = CifarSpec(
    name="cifar100",
    title="CIFAR-100",
    subdir="cifar-100-binary",
    train_files=("train.bin",),
    test_files=("test.bin",),
    label_ranges=(20, 100),
    url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    md5="03b5dce01913d631647c71ecec9e9cb8",
)


def cifar_dir(spec: CifarSpec, root: str | Path | None) -> Path:
    """`root` itself if it holds any of the binary files, else root/<official subdir>."""
    base = resolve_root(root)
    if any((base / name).is_file() for name in spec.train_files + spec.test_files):
        return base
    return base / spec.subdir


def read_cifar_file(spec: CifarSpec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one binary batch: uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    record = spec.record_bytes
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise DatasetError(f"{spec.title} file not found: {path}. {spec.hint()}") from exc
    if size == 0 or size % record:
        raise DatasetError(
            f"{spec.title} file {path} is truncated or not the binary version: {size} bytes is not a "
            f"positive multiple of the {record}-byte record. {spec.hint()}"
        )
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"cannot read {spec.title} file {path}: {exc}. {spec.hint()}") from exc
    if data.size != size:
        raise DatasetError(f"{spec.title} file {path} changed while being read")
    records = data.reshape(-1, record)
    for column, limit in enumerate(spec.label_ranges):
        bad = np.flatnonzero(records[:, column] >= limit)
        if bad.size:
            raise DatasetError(
                f"{spec.title} file {path}: record {int(bad[0])} has label {int(records[bad[0], column])}, "
                f"outside [0, {limit}); the file is corrupt. {spec.hint()}"
            )
    labels = records[:, len(spec.label_ranges) - 1].astype(np.int64)
    # Each record stores the red, green and blue planes in turn, each 32x32 row-major: already (C, H, W).
    images = records[:, len(spec.label_ranges) :].reshape(-1, 3, 32, 32)
    return images, labels


def load_cifar(spec: CifarSpec, split: Split, root: str | Path | None = None, *, download: bool = False) -> Dataset:
    """Load a split of CIFAR-10 or CIFAR-100 (fine labels), downloading the tarball if asked and missing."""
    directory = cifar_dir(spec, root)
    missing = [name for name in spec.files(split) if not (directory / name).is_file()]
    if missing and download:
        if directory.exists():
            raise DatasetError(
                f"{spec.title} file not found: {directory / missing[0]}, and downloading would not overwrite "
                f"the partial set in {directory}: supply the missing files, or move them away and retry"
            )
        download_and_extract(spec.url, spec.md5, directory.parent, spec.subdir)
    parts = [read_cifar_file(spec, directory / name) for name in spec.files(split)]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return Dataset.from_numpy(spec.name, images, labels, spec.num_classes)


def load_cifar10(split: Split, root: str | Path | None = None, *, download: bool = False) -> Dataset:
    """CIFAR-10 from the official binary version (root or root/cifar-10-batches-bin)."""
    return load_cifar(CIFAR10, split, root, download=download)


def load_cifar100(split: Split, root: str | Path | None = None, *, download: bool = False) -> Dataset:
    """CIFAR-100 with its 100 fine labels from the official binary version (root or root/cifar-100-binary)."""
    return load_cifar(CIFAR100, split, root, download=download)
