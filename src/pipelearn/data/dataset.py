"""The in-memory Dataset type shared by every loader, and the protocol of a data plug-in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np
import torch

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A labelled image data set held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            raise ValueError(f"{self.name}: images must be a uint8 tensor")
        if self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must have shape (N, C, H, W), got {tuple(self.images.shape)}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
            raise ValueError(f"{self.name}: labels must be an int64 tensor")
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"{self.name}: labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}"
            )
        if self.num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be positive, got {self.num_classes}")
        if self.labels.numel() and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            raise ValueError(f"{self.name}: labels must lie in [0, {self.num_classes})")

    @classmethod
    def from_numpy(cls, name: str, images: np.ndarray, labels: np.ndarray, num_classes: int) -> Dataset:
        """Build a Dataset from numpy arrays: uint8 images (N, C, H, W) and integer labels (N,)."""
        images_t = torch.from_numpy(np.require(images, dtype=np.uint8, requirements=["C", "W"]))
        labels_t = torch.from_numpy(np.require(labels, dtype=np.int64, requirements=["C", "W"]))
        return cls(name=name, images=images_t, labels=labels_t, num_classes=num_classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape (C, H, W) of one image."""
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, samples={len(self)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )


class DataSplits(NamedTuple):
    """A data set's training and test splits."""

    train: Dataset
    test: Dataset


class DatasetFactory(Protocol):
    """A data plug-in: called with no arguments, it returns the training and test splits, as two Datasets.

    Both splits hold samples of one shape (C, H, W) and share ``num_classes``. Batches normalise and augment them
    as they do the built-in data set whose name the splits carry (e.g. "mnist"); any other name gets mean 0.5,
    standard deviation 0.5 per channel and no augmentation. Each device keeps its own share of the training split.
    """

    def __call__(self) -> DataSplits | tuple[Dataset, Dataset]:
        """Load the splits."""
        ...
