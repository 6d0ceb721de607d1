"""A seeded, learnable synthetic image data set: class prototypes plus noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelearn.data.dataset import Dataset, Split

_STREAMS: dict[Split, int] = {"train": 1, "test": 2}


@dataclass(frozen=True)
class SyntheticSpec:
    """Options of the synthetic data set as load_dataset("synthetic", ...) builds it."""

    num_train: int = 2000
    num_test: int = 500
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    seed: int = 0
    noise_std: float = 64.0

    def num_samples(self, split: Split) -> int:
        """The number of samples of `split`."""
        return self.num_train if split == "train" else self.num_test


def synthetic_dataset(
    num_samples: int,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    seed: int = 0,
    *,
    split: Split = "train",
    noise_std: float = 64.0,
) -> Dataset:
    """Balanced classes, each sample its class's fixed random prototype plus Gaussian noise, clipped to uint8.

    The prototypes depend on `seed` alone; the samples on `seed` and `split`, so a test split drawn with the
    same seed is new data from the same classes.
    """
    if num_samples < 0 or num_classes < 1 or min(input_shape) < 1 or len(input_shape) != 3:
        raise ValueError(f"bad synthetic data set: {num_samples} samples, shape {input_shape}, {num_classes} classes")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    prototypes = np.random.default_rng([seed, 0]).uniform(0.0, 255.0, size=(num_classes, *input_shape))
    rng = np.random.default_rng([seed, _STREAMS[split]])
    labels = rng.permutation(np.arange(num_samples) % num_classes)
    noise = rng.normal(0.0, noise_std, size=(num_samples, *input_shape))
    images = np.clip(np.rint(prototypes[labels] + noise), 0, 255).astype(np.uint8)
    return Dataset.from_numpy("synthetic", images, labels, num_classes)


def load_synthetic(split: Split, spec: SyntheticSpec | None = None) -> Dataset:
    """The synthetic data set of `spec` (defaults: 2000 train / 500 test samples of shape (1, 28, 28))."""
    spec = spec or SyntheticSpec()
    return synthetic_dataset(
        spec.num_samples(split),
        spec.input_shape,
        spec.num_classes,
        spec.seed,
        split=split,
        noise_std=spec.noise_std,
    )
