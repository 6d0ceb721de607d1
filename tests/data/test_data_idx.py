"""Tests for the idx parser and the MNIST-style loaders built on it."""

from __future__ import annotations

import gzip
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelearn.data import DatasetError, dataset_info, load_dataset, parse_idx, read_idx


def test_parse_idx_reads_big_endian_dims_and_values(make_idx: Callable[[np.ndarray], bytes]) -> None:
    array = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 70000
    parsed = parse_idx(make_idx(array))
    assert parsed.dtype == np.int32 and parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, array)


def test_read_idx_gzip_and_plain_agree(tmp_path: Path, make_idx: Callable[[np.ndarray], bytes]) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "plain").write_bytes(make_idx(array))
    (tmp_path / "packed.gz").write_bytes(gzip.compress(make_idx(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed.gz"), array)


def test_load_idx_dataset_pixels_and_labels(idx_dir: Path, tiny_mnist: dict) -> None:
    for split in ("train", "test"):
        ds = load_dataset("idx", split, idx_dir)
        images, labels = tiny_mnist[split]
        assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
        assert ds.input_shape == (1, 6, 5) and len(ds) == len(labels)
        assert ds.num_classes == 4
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
        np.testing.assert_array_equal(ds.labels.numpy(), labels)
    pixel = load_dataset("idx", "train", idx_dir).images[3, 0, 5, 1]
    assert int(pixel) == int(tiny_mnist["train"][0][3, 5, 1])
    assert dataset_info("idx", idx_dir) == ((1, 6, 5), 4)


def test_idx_class_count_spans_both_splits(idx_dir: Path, make_idx: Callable[[np.ndarray], bytes]) -> None:
    (idx_dir / "t10k-labels-idx1-ubyte").write_bytes(make_idx(np.array([7, 0, 0, 0, 0], np.uint8)))
    assert load_dataset("idx", "train", idx_dir).num_classes == 8


def test_mnist_prefers_idx_files_in_root(idx_dir: Path, tiny_mnist: dict) -> None:
    ds = load_dataset("mnist", "test", idx_dir)
    assert ds.name == "mnist" and len(ds) == 5 and ds.num_classes == 10
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), tiny_mnist["test"][0])


def test_fashion_mnist_from_root(idx_dir: Path) -> None:
    ds = load_dataset("Fashion-MNIST", "train", idx_dir)
    assert ds.name == "fashion-mnist" and len(ds) == 12


def test_idx_needs_root() -> None:
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("idx", "train")


def test_missing_idx_file_is_named(idx_dir: Path) -> None:
    (idx_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte"):
        load_dataset("idx", "test", idx_dir)


def test_truncated_idx_file(idx_dir: Path) -> None:
    path = idx_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.*truncated"):
        load_dataset("idx", "test", idx_dir)


def test_truncated_gzip_file(idx_dir: Path) -> None:
    path = idx_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset("idx", "train", idx_dir)


def test_wrong_idx_magic(idx_dir: Path) -> None:
    path = idx_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x01\x02" + path.read_bytes()[2:])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.*magic"):
        load_dataset("idx", "test", idx_dir)


def test_unknown_idx_type_code(make_idx: Callable[[np.ndarray], bytes]) -> None:
    data = bytearray(make_idx(np.zeros(4, np.uint8)))
    data[2] = 0x07
    with pytest.raises(DatasetError, match="type code 0x07"):
        parse_idx(bytes(data), "odd-file")


def test_idx_longer_than_header(make_idx: Callable[[np.ndarray], bytes]) -> None:
    with pytest.raises(DatasetError, match="longer than its header"):
        parse_idx(make_idx(np.zeros(4, np.uint8)) + b"\x00")


def test_mismatched_image_and_label_counts(idx_dir: Path, make_idx: Callable[[np.ndarray], bytes]) -> None:
    (idx_dir / "t10k-labels-idx1-ubyte").write_bytes(make_idx(np.zeros(4, np.uint8)))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.*5 images.*4 labels"):
        load_dataset("idx", "test", idx_dir)


def test_label_out_of_range_for_mnist(idx_dir: Path, make_idx: Callable[[np.ndarray], bytes]) -> None:
    (idx_dir / "t10k-labels-idx1-ubyte").write_bytes(make_idx(np.array([0, 1, 12, 3, 4], np.uint8)))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.*label 12"):
        load_dataset("mnist", "test", idx_dir)


def test_images_must_be_three_dimensional(tmp_path: Path, make_idx: Callable[[np.ndarray], bytes]) -> None:
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(make_idx(np.zeros((2, 3), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(make_idx(np.zeros(2, np.uint8)))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.*shape"):
        load_dataset("idx", "test", tmp_path)


def test_torchvision_layout_is_found(tmp_path: Path, idx_dir: Path) -> None:
    shutil.copytree(idx_dir, tmp_path / "tv" / "MNIST" / "raw")
    assert len(load_dataset("mnist", "train", tmp_path / "tv")) == 12


def test_header_dims_are_big_endian(tmp_path: Path) -> None:
    payload = struct.pack(">BBBB", 0, 0, 8, 1) + struct.pack(">I", 258) + bytes(range(256)) + b"\x01\x02"
    assert read_idx_bytes(tmp_path, payload).shape == (258,)


def read_idx_bytes(directory: Path, payload: bytes) -> np.ndarray:
    path = directory / "file-idx1-ubyte"
    path.write_bytes(payload)
    return read_idx(path)
