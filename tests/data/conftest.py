"""Fixtures for the data tests: tiny files in each official format, and no network or user data dirs."""

from __future__ import annotations

import gzip
import socket
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import scipy.io


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("PIPELEARN_DATA_DIR", str(tmp_path / "default-data-dir"))


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file holding `array` (uint8 or int32), written from the format description."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[array.dtype]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def make_idx() -> Callable[[np.ndarray], bytes]:
    """The idx_bytes writer, for tests that build their own idx files."""
    return idx_bytes


@pytest.fixture
def tiny_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny MNIST-like set: 12 train and 5 test images of 6x5 pixels, labels 0-3."""
    rng = np.random.default_rng(7)
    return {
        "train": (rng.integers(0, 256, (12, 6, 5), dtype=np.uint8), np.array([0, 1, 2, 3] * 3, np.uint8)),
        "test": (rng.integers(0, 256, (5, 6, 5), dtype=np.uint8), np.array([3, 2, 1, 0, 0], np.uint8)),
    }


@pytest.fixture
def idx_dir(tmp_path: Path, tiny_mnist: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """The tiny set as idx files: train gzipped, test plain."""
    root = tmp_path / "idx"
    root.mkdir()
    (xtr, ytr), (xte, yte) = tiny_mnist["train"], tiny_mnist["test"]
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(xtr)))
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(ytr)))
    (root / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(xte))
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(yte))
    return root


def cifar_records(labels: Sequence[tuple[int, ...]], seed: int) -> tuple[bytes, np.ndarray]:
    """Binary CIFAR records (label bytes, then R, G, B planes of 32x32) and the images as (N, 32, 32, 3)."""
    rng = np.random.default_rng(seed)
    hwc = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    out = bytearray()
    for label, image in zip(labels, hwc, strict=True):
        out += bytes(label)
        for channel in range(3):
            out += image[:, :, channel].tobytes()
    return bytes(out), hwc


CifarWriter = Callable[[Path], dict[str, tuple[np.ndarray, np.ndarray]]]


@pytest.fixture
def write_cifar10() -> CifarWriter:
    """Write CIFAR-10 binary batches of 7 records each into a directory; returns HWC images and labels."""

    def write(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        directory.mkdir(parents=True, exist_ok=True)
        images, labels = [], []
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for i, name in enumerate(names):
            batch_labels = [(int(v),) for v in (np.arange(7) + i) % 10]
            data, hwc = cifar_records(batch_labels, seed=i)
            (directory / name).write_bytes(data)
            images.append(hwc)
            labels.append(np.array([v[0] for v in batch_labels]))
        return {
            "train": (np.concatenate(images[:5]), np.concatenate(labels[:5])),
            "test": (images[5], labels[5]),
        }

    return write


@pytest.fixture
def write_cifar100() -> CifarWriter:
    """Write CIFAR-100 train.bin / test.bin (coarse then fine label byte) into a directory."""

    def write(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        directory.mkdir(parents=True, exist_ok=True)
        out = {}
        for split, name, count in (("train", "train.bin", 9), ("test", "test.bin", 4)):
            fine = [(37 * i + 99) % 100 for i in range(count)]
            data, hwc = cifar_records([(f // 5, f) for f in fine], seed=count)
            (directory / name).write_bytes(data)
            out[split] = (hwc, np.array(fine))
        return out

    return write


@pytest.fixture
def svhn_dir(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Official-layout SVHN .mat files (X: 32x32x3xN uint8, y: Nx1 with 10 for the digit 0)."""
    root = tmp_path / "svhn"
    root.mkdir()
    rng = np.random.default_rng(3)
    out = {}
    for split, name, labels in (
        ("train", "train_32x32.mat", [10, 1, 5, 9, 10]),
        ("test", "test_32x32.mat", [2, 10]),
    ):
        x = rng.integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
        y = np.array(labels, dtype=np.uint8).reshape(-1, 1)
        scipy.io.savemat(root / name, {"X": x, "y": y})
        out[split] = (x, y)
    return root, out
