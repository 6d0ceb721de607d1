"""Tests for the SVHN .mat loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pipelearn.data import DatasetError, load_dataset, md5sum
from pipelearn.data import svhn as svhn_module


def test_svhn_layout_and_label_ten_is_zero(svhn_dir) -> None:
    root, expected = svhn_dir
    ds = load_dataset("svhn", "train", root)
    x, _ = expected["train"]
    assert len(ds) == 5 and ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.labels.tolist() == [0, 1, 5, 9, 0]
    # X is indexed (row, column, channel, sample).
    assert ds.images[3, 2, 7, 19] == x[7, 19, 2, 3]
    np.testing.assert_array_equal(ds.images.permute(2, 3, 1, 0).numpy(), x)
    assert load_dataset("svhn", "test", root).labels.tolist() == [2, 0]


def test_svhn_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"test_32x32\.mat.*--download"):
        load_dataset("svhn", "test", tmp_path)


def test_svhn_without_x(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"y": np.ones((2, 1), np.uint8)})
    with pytest.raises(DatasetError, match=r"test_32x32\.mat lacks the variable X"):
        load_dataset("svhn", "test", tmp_path)


def test_svhn_truncated(svhn_dir) -> None:
    root, _ = svhn_dir
    path = root / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DatasetError, match=r"train_32x32\.mat"):
        load_dataset("svhn", "train", root)


def test_svhn_label_out_of_range(tmp_path: Path) -> None:
    x = np.zeros((32, 32, 3, 3), np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[1], [11], [2]], np.uint8)})
    with pytest.raises(DatasetError, match=r"test_32x32\.mat: sample 1 has label 11"):
        load_dataset("svhn", "test", tmp_path)


def test_svhn_count_mismatch(tmp_path: Path) -> None:
    x = np.zeros((32, 32, 3, 3), np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.ones((2, 1), np.uint8)})
    with pytest.raises(DatasetError, match=r"test_32x32\.mat: y must have shape \(3, 1\)"):
        load_dataset("svhn", "test", tmp_path)


def test_svhn_download_only_the_missing_split(svhn_dir, tmp_path: Path, monkeypatch) -> None:
    source, _ = svhn_dir
    served = source / "test_32x32.mat"
    monkeypatch.setitem(svhn_module.SVHN_FILES, "test", ("test_32x32.mat", served.as_uri(), md5sum(served)))
    root = tmp_path / "fresh"
    assert load_dataset("svhn", "test", root, download=True).labels.tolist() == [2, 0]
    assert sorted(p.name for p in root.iterdir()) == ["test_32x32.mat"]


def test_svhn_download_bad_md5_leaves_nothing(svhn_dir, tmp_path: Path, monkeypatch) -> None:
    source, _ = svhn_dir
    served = source / "test_32x32.mat"
    monkeypatch.setitem(svhn_module.SVHN_FILES, "test", ("test_32x32.mat", served.as_uri(), "f" * 32))
    root = tmp_path / "fresh"
    with pytest.raises(DatasetError, match="md5"):
        load_dataset("svhn", "test", root, download=True)
    assert list(root.iterdir()) == []
