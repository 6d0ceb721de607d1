"""A data set saved as two safetensors files, train.safetensors and test.safetensors, in one directory.

The Python API hands a caller's Dataset objects to device processes this way: as data files, never as code or
pickles. `pipelearn run --dataset saved --data-dir DIR` trains on such a directory.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from pipelearn.data.dataset import Dataset, Split
from pipelearn.data.errors import DatasetError


def save_dataset(directory: str | Path, train: Dataset, test: Dataset) -> Path:
    """Write both splits into `directory` (made if missing); return it."""
    if train.input_shape != test.input_shape or train.num_classes != test.num_classes:
        raise DatasetError(
            f"the training split holds samples of shape {train.input_shape} in {train.num_classes} classes but the "
            f"test split {test.input_shape} in {test.num_classes}: they must agree"
        )
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for split, data in (("train", train), ("test", test)):
        save_file(
            {"images": data.images.contiguous(), "labels": data.labels.contiguous()},
            str(path / f"{split}.safetensors"),
            metadata={"name": data.name, "num_classes": str(data.num_classes)},
        )
    return path


def load_saved(split: Split, root: str | Path | None) -> Dataset:
    """One split of a directory written by save_dataset."""
    if root is None:
        raise DatasetError("the saved data set needs --data-dir DIR, a directory written by save_dataset")
    path = Path(root).expanduser() / f"{split}.safetensors"
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; --data-dir must name a directory written by save_dataset")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
        return Dataset(meta.get("name", "saved"), images, labels, int(meta.get("num_classes", "0")))
    except (SafetensorError, ValueError, KeyError, OSError) as exc:
        raise DatasetError(f"{path} is not a data set written by save_dataset: {exc}") from exc
