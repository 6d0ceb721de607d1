"""Batch transforms in plain torch: normalisation and the standard random crop / horizontal flip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "synthetic": ((0.5,), (0.5,)),
    "idx": ((0.5,), (0.5,)),
}
DEFAULT_NORMALIZATION: tuple[tuple[float, ...], tuple[float, ...]] = ((0.5,), (0.5,))


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Scale uint8 images (N, C, H, W) to [0, 1], then standardise per channel (one value: all channels)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"normalize expects uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    channels = images.shape[1]
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise ValueError(f"mean/std of lengths {len(mean)}/{len(std)} do not fit {channels} channels")
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.to(torch.float32) / 255.0 - m) / s


def random_crop(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each image by `padding` on every side, then crop it back to its size at a random offset."""
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    if padding == 0 or batch.shape[0] == 0:
        return batch.clone()
    n, _, h, w = batch.shape
    padded = F.pad(batch, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(h))[:, :, None]
    cols = (left[:, None] + torch.arange(w))[:, None, :]
    # Advanced indices split by the channel slice put their dimensions first: the result is (N, H, W, C).
    cropped = padded[torch.arange(n)[:, None, None], :, rows, cols]
    return cropped.permute(0, 3, 1, 2).contiguous()


def random_hflip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability one half."""
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


@dataclass(frozen=True)
class Augment:
    """A training augmentation policy: random crop with `crop_padding` (0: none), then optional flip."""

    crop_padding: int = 0
    hflip: bool = False

    @property
    def enabled(self) -> bool:
        """Whether the policy changes images at all."""
        return self.crop_padding > 0 or self.hflip

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.crop_padding:
            batch = random_crop(batch, self.crop_padding, generator)
        if self.hflip:
            batch = random_hflip(batch, generator)
        return batch


AUGMENTATION: dict[str, Augment] = {
    "cifar10": Augment(crop_padding=4, hflip=True),
    "cifar100": Augment(crop_padding=4, hflip=True),
    "svhn": Augment(crop_padding=4),
}


def normalization_for(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) of the named data set, or 0.5/0.5 for one without standard statistics."""
    return NORMALIZATION.get(name, DEFAULT_NORMALIZATION)


def augment_for(name: str) -> Augment:
    """The training augmentation of the named data set (none for MNIST-like and synthetic data)."""
    return AUGMENTATION.get(name, Augment())
