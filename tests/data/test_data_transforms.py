"""Tests for normalisation, augmentation and mini-batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelearn.data import (
    NORMALIZATION,
    Augment,
    augment_for,
    iterate_batches,
    normalize,
    num_batches,
    random_crop,
    random_hflip,
    synthetic_dataset,
)


def test_normalize_values() -> None:
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    out = normalize(images, (0.0, 0.2, 0.5), (1.0, 0.5, 0.25))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.0, 2.0]))
    gray = normalize(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), *NORMALIZATION["synthetic"])
    torch.testing.assert_close(gray, torch.ones(2, 1, 2, 2))
    with pytest.raises(ValueError):
        normalize(images, (0.5, 0.5), (0.5, 0.5))


def test_random_crop_shape_identity_and_content() -> None:
    batch = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_crop(batch, 0, g), batch)
    cropped = random_crop(batch, 2, g)
    assert cropped.shape == batch.shape and cropped.dtype == batch.dtype
    padded = torch.nn.functional.pad(batch, (2, 2, 2, 2))
    for i in range(16):
        # Each crop is one of the 25 windows of its own padded image.
        windows = [padded[i, :, t : t + 8, s : s + 8] for t in range(5) for s in range(5)]
        assert any(torch.equal(cropped[i], w) for w in windows)
    assert not torch.equal(cropped, batch)


def test_random_hflip_flips_or_keeps() -> None:
    batch = torch.randint(0, 256, (64, 1, 4, 5), dtype=torch.uint8)
    out = random_hflip(batch, torch.Generator().manual_seed(1))
    flipped = [torch.equal(o, b.flip(-1)) for o, b in zip(out, batch, strict=True)]
    kept = [torch.equal(o, b) for o, b in zip(out, batch, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54


def test_augment_policies() -> None:
    assert augment_for("cifar10") == Augment(crop_padding=4, hflip=True)
    assert augment_for("cifar100") == Augment(crop_padding=4, hflip=True)
    assert augment_for("svhn") == Augment(crop_padding=4, hflip=False)
    for name in ("mnist", "fashion-mnist", "idx", "synthetic"):
        assert not augment_for(name).enabled


def test_num_batches() -> None:
    assert num_batches(10, 3, drop_last=False) == 4
    assert num_batches(10, 3, drop_last=True) == 3
    assert num_batches(0, 3, drop_last=False) == 0


def _collect(ds, indices, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(iterate_batches(ds, indices, 8, **kwargs))


def test_iterate_batches_reproducible_and_covering() -> None:
    ds = synthetic_dataset(60, (3, 6, 6), 4, seed=0)
    ds = type(ds)("cifar10", ds.images, ds.labels, ds.num_classes)  # CIFAR-10 policy: crop and flip
    indices = np.arange(5, 55)
    first = _collect(ds, indices, seed=1, epoch=0, train=True)
    assert len(first) == num_batches(50, 8, False) == 7
    assert all(x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in first)
    assert first[0][0].shape == (8, 3, 6, 6) and first[-1][0].shape == (2, 3, 6, 6)
    again = _collect(ds, indices, seed=1, epoch=0, train=True)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    other_epoch = _collect(ds, indices, seed=1, epoch=1, train=True)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in other_epoch]))

    # Without augmentation each batch is exactly the normalised images of some indices, each used once.
    plain = _collect(ds, indices, seed=1, epoch=0, train=False)
    seen = []
    reference = normalize(ds.images, *NORMALIZATION["cifar10"])
    for x, y in plain:
        for image, label in zip(x, y, strict=True):
            match = [int(i) for i in indices if torch.equal(reference[i], image)]
            assert len(match) == 1 and ds.labels[match[0]] == label
            seen.append(match[0])
    assert sorted(seen) == indices.tolist()
    assert not torch.equal(torch.cat([x for x, _ in first]), torch.cat([x for x, _ in plain]))


def test_iterate_batches_no_shuffle_drop_last() -> None:
    ds = synthetic_dataset(20, (1, 4, 4), 2, seed=0)
    batches = list(iterate_batches(ds, np.arange(20), 6, seed=0, epoch=0, train=True, shuffle=False, drop_last=True))
    assert len(batches) == 3
    torch.testing.assert_close(batches[1][0], normalize(ds.images[6:12], (0.5,), (0.5,)))
    assert torch.equal(batches[2][1], ds.labels[12:18])


def test_iterate_batches_rejects_bad_indices() -> None:
    ds = synthetic_dataset(10, (1, 4, 4), 2, seed=0)
    with pytest.raises(ValueError):
        iterate_batches(ds, np.array([3, 10]), 4, seed=0, epoch=0, train=False)
