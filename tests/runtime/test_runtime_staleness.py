"""Staleness over real processes: a run with staleness 1 computes delayed-gradient SGD on both sides, and FedAvg
averages fully updated models; the devices report the memory their parts held."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from pipelearn.config import RunConfig
from pipelearn.data import load_dataset
from pipelearn.data.dealing import DeviceBatches, device_indices
from pipelearn.models.parts import make_model
from pipelearn.runtime.launch import run_local
from pipelearn.training import fedavg, make_optimizer, scaled_loss


def _delayed_sgd(config: RunConfig, rounds: int, per_round: int) -> dict[str, torch.Tensor]:
    """The whole model trained in this process: each device's mini-batch t takes its gradient at the weights of
    `config.staleness` steps before (the round's first weights at the latest), applied to its current weights;
    FedAvg of the devices' models after each round."""
    train = load_dataset(config.dataset, "train")
    model = make_model(config, train.input_shape, train.num_classes)
    batches = [DeviceBatches(train, device_indices(config, train, d), config, d) for d in range(config.devices)]
    models = [copy.deepcopy(model) for _ in range(config.devices)]
    optimizers = [make_optimizer(m, config) for m in models]
    for r in range(rounds):
        for d, (m, optimizer) in enumerate(zip(models, optimizers, strict=True)):
            assert optimizer is not None
            versions = [copy.deepcopy(m.state_dict())]  # the weights after each of this round's steps
            for i in range(per_round):
                x, y = batches[d].batch(r * per_round + i)
                at = copy.deepcopy(m)
                at.load_state_dict(versions[max(0, i - config.staleness)])
                scaled_loss(at(x), y, len(y)).backward()
                for p, q in zip(m.parameters(), at.parameters(), strict=True):
                    p.grad = q.grad
                optimizer.step()
                versions.append(copy.deepcopy(m.state_dict()))
        average = fedavg([m.state_dict() for m in models], [1.0] * config.devices)
        for m in models:
            m.load_state_dict(average)
    return models[0].state_dict()


@pytest.mark.parametrize("staleness", [0, 1])
@pytest.mark.parametrize("mode", ["pipelearn", "sfl"])
def test_a_run_computes_sgd_with_its_staleness_on_both_sides(small_config: Any, mode: str, staleness: int) -> None:
    config = small_config(
        mode=mode, staleness=staleness, samples_per_device=80, aggregate_every=2, momentum=0.9, lr=0.05
    )
    reference = _delayed_sgd(config, rounds=2, per_round=2)
    metrics = run_local(config, progress=False)
    assert metrics["failed_devices"] == [] and metrics["staleness"] == staleness
    weights = load_file(f"{config.out}/model.safetensors")
    worst = max((weights[k] - v).abs().max().item() for k, v in reference.items() if v.is_floating_point())
    assert worst < 1e-5, worst
    if staleness:  # the same run a step earlier is a different computation: the test tells them apart
        fresh = _delayed_sgd(RunConfig(**{**vars(config), "staleness": 0}).validate(), rounds=2, per_round=2)
        assert max((weights[k] - v).abs().max().item() for k, v in fresh.items() if v.is_floating_point()) > 1e-4


def test_each_device_reports_the_memory_its_part_held_and_staleness_holds_more(small_config: Any) -> None:
    peaks = {}
    for staleness in (0, 1):
        config = small_config(staleness=staleness, out=f"{small_config().out}-{staleness}")
        metrics = run_local(config, progress=False)
        peaks[staleness] = [d["peak_memory_bytes"] for d in metrics["device"]]
    assert all(isinstance(p, int) and p > 0 for p in peaks[0])
    # a second weight version and the next mini-batch's activations are held beside this one's
    assert all(stale > fresh for stale, fresh in zip(peaks[1], peaks[0], strict=True)), peaks
