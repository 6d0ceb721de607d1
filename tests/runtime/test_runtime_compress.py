"""Compressed runs over real processes: each codec trains, in every mode, and metrics.json has raw and wire bytes."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from pipelearn.data import load_dataset
from pipelearn.data.dealing import DeviceBatches, device_indices
from pipelearn.models.parts import make_model
from pipelearn.runtime.launch import run_local
from pipelearn.training import make_optimizer, scaled_loss

pytestmark = pytest.mark.slow

RATIO = {"none": (1.0, 1.0), "fp16": (1.9, 2.0), "bf16": (1.9, 2.0), "int8": (3.5, 4.0)}
"""Raw over wire bytes each dense codec must reach (labels and counters travel uncompressed)."""


@pytest.mark.parametrize(
    ("mode", "up", "down"),
    [
        ("pipelearn", "none", "none"),
        ("pipelearn", "fp16", "fp16"),
        ("sfl", "bf16", "int8"),
        ("fl", "topk:0.1", "topk:0.1"),
        ("sl", "int8", "topk:0.2"),
    ],
)
def test_a_compressed_run_trains_and_records_raw_and_wire_bytes(small_config, mode, up, down):
    config = small_config(
        mode=mode,
        epochs=2,
        samples_per_device=100,
        batchnorm=True,
        compress=up,
        compress_down=None if down == up else down,
    )
    metrics = run_local(config, progress=False)
    losses = metrics["train_loss"]
    assert metrics["failed_devices"] == []
    assert losses[-1] < losses[0] * 0.9, losses
    totals = metrics["compression"]
    for direction, codec in (("up", up), ("down", down)):
        flow = totals[direction]
        per_device = [d["compression"][direction] for d in metrics["device"]]
        assert flow["codec"] == codec and all(d["codec"] == codec for d in per_device)
        assert flow["raw_bytes"] == sum(d["raw_bytes"] for d in per_device) > 0
        assert flow["wire_bytes"] == sum(d["wire_bytes"] for d in per_device) > 0
        # the links carried the compressed tensors plus the envelopes and, up, the timeline each round's weights
        # carry (about 1% here): far less than the raw tensors would have been
        link = metrics[f"bytes_{direction}"]
        assert flow["wire_bytes"] < link < flow["wire_bytes"] * 1.03 + 5000
        low, high = RATIO.get(codec, (1.2, 20.0))
        assert low <= flow["ratio"] <= high, (direction, codec, flow)
        if codec == "none":
            assert flow["raw_bytes"] == flow["wire_bytes"]


def _single_process_step(config) -> dict[str, torch.Tensor]:
    """One SGD step of the whole model on both devices' first mini-batches together, uncompressed."""
    train = load_dataset(config.dataset, "train")
    batches = [DeviceBatches(train, device_indices(config, train, d), config, d).batch(0) for d in range(2)]
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    model = make_model(config, train.input_shape, train.num_classes)
    optimizer = make_optimizer(model, config)
    assert optimizer is not None
    scaled_loss(model(x), y, len(y)).backward()
    optimizer.step()
    return model.state_dict()


def test_one_int8_iteration_is_the_uncompressed_one_within_the_rounding(small_config):
    config = small_config(samples_per_device=20, compress="int8")
    reference = _single_process_step(config)
    run_local(config, progress=False)
    weights = load_file(f"{config.out}/model.safetensors")
    worst = max((weights[k] - v).abs().max().item() for k, v in reference.items())
    assert 0 < worst < 2e-3, worst
