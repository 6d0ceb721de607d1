"""A run's model and its parts: the whole model from the run's seed, what a device and the server train of it."""

from __future__ import annotations

import torch
from torch import nn

from pipelearn.config import RunConfig
from pipelearn.models.registry import build_model
from pipelearn.models.splitting import split


def make_model(config: RunConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """The run's whole model, initialised from the run's seed."""
    torch.manual_seed(config.seed)
    return build_model(config.model, input_shape, num_classes, batchnorm=config.batchnorm)


def device_part(model: nn.Sequential, split_point: int) -> nn.Sequential:
    """What a device trains: blocks 1..split_point (every block in fl)."""
    return split(model, split_point)[0]


def server_part(model: nn.Sequential, split_point: int) -> nn.Sequential:
    """What the server trains for a device: the blocks after split_point (none in fl)."""
    return split(model, split_point)[1]


def output_shape(part: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one sample after `part` (probed in eval mode without gradients)."""
    was_training = part.training
    part.eval()
    with torch.no_grad():
        shape = tuple(part(torch.zeros(1, *input_shape)).shape[1:])
    part.train(was_training)
    return shape
