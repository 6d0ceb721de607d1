"""Tests for the CIFAR-10 / CIFAR-100 binary loaders and their verified download."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelearn.data import DatasetError, Split, load_dataset, md5sum
from pipelearn.data import cifar as cifar_module


def test_cifar10_pixels_channels_and_labels(tmp_path: Path, write_cifar10) -> None:
    expected = write_cifar10(tmp_path / "cifar-10-batches-bin")
    train = load_dataset("cifar10", "train", tmp_path)
    test = load_dataset("CIFAR10", "test", tmp_path)
    assert len(train) == 35 and len(test) == 7
    assert train.input_shape == (3, 32, 32) and train.num_classes == 10
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    for ds, (hwc, labels) in ((train, expected["train"]), (test, expected["test"])):
        np.testing.assert_array_equal(ds.images.permute(0, 2, 3, 1).numpy(), hwc)
        np.testing.assert_array_equal(ds.labels.numpy(), labels)
    # Record 8 is the second record of data_batch_2; its green plane starts 1024 bytes into the pixels.
    raw = (tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin").read_bytes()
    record = raw[3073 : 2 * 3073]
    assert train.labels[8] == record[0]
    assert train.images[8, 1, 2, 5] == record[1 + 1024 + 2 * 32 + 5]
    assert train.images[8, 2, 31, 31] == record[3072]


def test_cifar10_files_directly_in_root(tmp_path: Path, write_cifar10) -> None:
    write_cifar10(tmp_path)
    assert len(load_dataset("cifar10", "test", tmp_path)) == 7


def test_cifar100_uses_fine_labels(tmp_path: Path, write_cifar100) -> None:
    expected = write_cifar100(tmp_path / "cifar-100-binary")
    splits: tuple[tuple[Split, int], ...] = (("train", 9), ("test", 4))
    for split, count in splits:
        ds = load_dataset("cifar100", split, tmp_path)
        assert len(ds) == count and ds.num_classes == 100
        np.testing.assert_array_equal(ds.labels.numpy(), expected[split][1])
        np.testing.assert_array_equal(ds.images.permute(0, 2, 3, 1).numpy(), expected[split][0])


def test_missing_cifar_file_names_it_and_what_to_do(tmp_path: Path, write_cifar10) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_4.bin").unlink()
    with pytest.raises(DatasetError, match=r"data_batch_4\.bin.*--data-dir.*--download"):
        load_dataset("cifar10", "train", tmp_path)


def test_cifar_nothing_there(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"cifar-10-batches-bin.*test_batch\.bin"):
        load_dataset("cifar10", "test", tmp_path)


def test_cifar_size_not_a_record_multiple(tmp_path: Path, write_cifar10) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"data_batch_3\.bin.*3073-byte record"):
        load_dataset("cifar10", "train", tmp_path)


def test_cifar_empty_file(tmp_path: Path, write_cifar10) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"test_batch\.bin"):
        load_dataset("cifar10", "test", tmp_path)


def test_cifar_label_out_of_range(tmp_path: Path, write_cifar10) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "test_batch.bin"
    data = bytearray(path.read_bytes())
    data[2 * 3073] = 10
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"test_batch\.bin: record 2 has label 10"):
        load_dataset("cifar10", "test", tmp_path)


def test_cifar100_coarse_label_checked(tmp_path: Path, write_cifar100) -> None:
    write_cifar100(tmp_path)
    path = tmp_path / "test.bin"
    data = bytearray(path.read_bytes())
    data[0] = 25
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"test\.bin: record 0 has label 25"):
        load_dataset("cifar100", "test", tmp_path)


def _tarball(source: Path, arcname: str, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(source, arcname=arcname)
    return out


def test_cifar_download_verifies_and_extracts(tmp_path: Path, write_cifar10, monkeypatch) -> None:
    write_cifar10(tmp_path / "src" / "cifar-10-batches-bin")
    archive = _tarball(tmp_path / "src" / "cifar-10-batches-bin", "cifar-10-batches-bin", tmp_path / "c.tgz")
    spec = dataclasses.replace(cifar_module.CIFAR10, url=archive.as_uri(), md5=md5sum(archive))
    monkeypatch.setattr(cifar_module, "CIFAR10", spec)
    root = tmp_path / "root"
    ds = load_dataset("cifar10", "train", root, download=True)
    assert len(ds) == 35
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-bin"]
    archive.unlink()  # present files are not downloaded again
    assert len(load_dataset("cifar10", "test", root, download=True)) == 7


def test_cifar_download_bad_md5_leaves_nothing(tmp_path: Path, write_cifar10, monkeypatch) -> None:
    write_cifar10(tmp_path / "src" / "cifar-10-batches-bin")
    archive = _tarball(tmp_path / "src" / "cifar-10-batches-bin", "cifar-10-batches-bin", tmp_path / "c.tgz")
    spec = dataclasses.replace(cifar_module.CIFAR10, url=archive.as_uri(), md5="0" * 32)
    monkeypatch.setattr(cifar_module, "CIFAR10", spec)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="md5"):
        load_dataset("cifar10", "train", root, download=True)
    assert list(root.iterdir()) == []


def test_cifar_download_rejects_path_traversal(tmp_path: Path, monkeypatch) -> None:
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/../../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    spec = dataclasses.replace(cifar_module.CIFAR10, url=archive.as_uri(), md5=md5sum(archive))
    monkeypatch.setattr(cifar_module, "CIFAR10", spec)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="refusing"):
        load_dataset("cifar10", "train", root, download=True)
    assert list(root.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()
