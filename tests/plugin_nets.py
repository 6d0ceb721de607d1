"""A user's own plug-ins, written as a user would, for the tests: networks and data that are not PipeLearn's own,
and broken ones, each broken in one way."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from pipelearn.data import Dataset, synthetic_dataset

SHAPE = (1, 12, 12)
CLASSES = 4


def tiny_net(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """A small BatchNorm-free CNN with named children (split points: after conv, act, pool, flat, fc, tanh)."""
    c, h, w = input_shape
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c, 6, 3, padding=1),
            act=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            flat=nn.Flatten(),
            fc=nn.Linear(6 * (h // 2) * (w // 2), 24),
            tanh=nn.Tanh(),
            out=nn.Linear(24, num_classes),
        )
    )


def tiny_blocks(input_shape: tuple[int, int, int], num_classes: int) -> list[nn.Module]:
    """The same network as a list of blocks."""
    return list(tiny_net(input_shape, num_classes))


def wide_net(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Like tiny_net with twice the channels: the same names, other shapes."""
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 12, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(12 * (h // 2) * (w // 2), 24),
        nn.Tanh(),
        nn.Linear(24, num_classes),
    )


def tiny_data() -> tuple[Dataset, Dataset]:
    """A small learnable data set of 12x12 images in 4 classes."""
    return (
        synthetic_dataset(240, SHAPE, CLASSES, seed=3, split="train"),
        synthetic_dataset(120, SHAPE, CLASSES, seed=3, split="test"),
    )


def mnist_sized_net(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """A network that assumes 28x28 samples whatever it is told."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))


def too_many_logits(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """A network whose last block outputs one logit too many."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes + 1))


class Residual(nn.Module):
    """A network whose forward is not a chain of its children."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x + self.fc(x)


def not_splittable(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Returns a module that is not a sequence of blocks."""
    return Residual()


def returns_none(input_shape: tuple[int, int, int], num_classes: int) -> None:
    """Forgets to return."""


def no_blocks(input_shape: tuple[int, int, int], num_classes: int) -> list[nn.Module]:
    """Returns no blocks."""
    return []


def raises(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Fails when called."""
    raise RuntimeError("this network needs a GPU")


def data_not_a_pair() -> list[int]:
    """Returns something else than two data sets."""
    return [1, 2]


def data_disagreeing() -> tuple[Dataset, Dataset]:
    """Returns splits of different sample shapes."""
    return synthetic_dataset(20, SHAPE, CLASSES), synthetic_dataset(20, (1, 10, 10), CLASSES, split="test")


NOT_A_FUNCTION = 3


def batchnorm_net(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """A small CNN with BatchNorm on its first blocks, which DP-SGD cannot train."""
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, num_classes)
    )
