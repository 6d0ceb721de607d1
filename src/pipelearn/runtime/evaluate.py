"""Test accuracy of a whole model on a data set's test split."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipelearn.data import Dataset, iterate_batches, select_subset


def evaluate(
    model: nn.Module, test: Dataset, samples: int | None = None, seed: int = 0, batch_size: int = 500
) -> float:
    """The fraction of (a seeded subset of) the test split that the model classifies right."""
    indices = (
        np.arange(len(test)) if samples is None or samples >= len(test) else select_subset(len(test), samples, seed)
    )
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in iterate_batches(test, indices, batch_size, seed=seed, epoch=0, train=False, shuffle=False):
            correct += int((model(x).argmax(dim=1) == y).sum())
    return correct / len(indices)
