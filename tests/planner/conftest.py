"""A small model and a hand-made profile of it, with round numbers, for the planner's tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from torch import nn

from pipelearn.planner.profile import CodecFit, Profile, Timing, block_names, state_tensors


def tiny_model() -> nn.Sequential:
    """Four blocks on (1, 2, 2) inputs, three classes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def hand_profile(
    model: nn.Sequential,
    *,
    forward: list[float],
    backward: list[float],
    output_bytes: list[int],
    batch: int = 8,
    step: float = 0.001,
    fixed: float = 0.0,
    compression: dict[str, CodecFit] | None = None,
) -> Profile:
    """Per-sample seconds per block (linear in the micro-batch size, plus `fixed` per message), as a profile;
    `compression`: timings of codecs, on both sides."""
    blocks = len(model)
    timing = Timing(
        forward_s=[[f, f * batch] for f in forward],
        backward_s=[[b, b * batch] for b in backward],
        loss_s=[0.0001, 0.0001 * batch],
        step_s=[step] * blocks,
        codec_s=fixed,
        codec_s_per_byte=1e-9,
        wire_s=fixed,
        wire_s_per_byte=1e-9,
        aggregate_s_per_byte=1e-9,
        compression=compression or {},
    )
    return Profile(
        model="vgg5",
        blocks=block_names(model),
        input_shape=[1, 2, 2],
        sizes=[1, batch],
        input_bytes=16,
        output_bytes=output_bytes,
        weight_bytes=[0, 160, 0, 108],
        activation_overhead_bytes=150,
        gradient_overhead_bytes=90,
        device=timing,
        server=timing,
        weight_tensors=state_tensors(model),
    )


@pytest.fixture
def model() -> nn.Sequential:
    """tiny_model()."""
    return tiny_model()


@pytest.fixture
def profile() -> Callable[..., Profile]:
    """A factory of hand-made profiles of tiny_model()."""

    def make(**overrides: object) -> Profile:
        values: dict[str, object] = {
            "forward": [0.0001, 0.004, 0.0001, 0.002],
            "backward": [0.0001, 0.008, 0.0001, 0.004],
            "output_bytes": [16000, 32000, 32000, 12],
        }
        values.update(overrides)
        return hand_profile(tiny_model(), **values)  # type: ignore[arg-type]

    return make
