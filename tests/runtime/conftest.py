"""Small, fast runs for the runtime tests: synthetic data, VGG5 without BatchNorm, 2 devices, the server on the CPU."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelearn.config import RunConfig
from pipelearn.data import load_dataset
from pipelearn.data.dealing import DeviceBatches, device_indices
from pipelearn.models.parts import make_model
from pipelearn.training import fedavg, make_optimizer, scaled_loss
from pipelearn.transport.credentials import make_credentials


def small_values(directory: Path, **overrides: Any) -> dict[str, Any]:
    """The settings of a small run writing into `directory`, with `overrides`."""
    values: dict[str, Any] = {
        "dataset": "synthetic",
        "model": "vgg5",
        "batchnorm": False,
        "devices": 2,
        "network": "unlimited",
        "device_slowdown": 1.0,
        "split": 2,
        "microbatches": 3,
        "epochs": 1,
        "batch_size": 20,
        "samples_per_device": 40,
        "test_samples": 200,
        "timeout_s": 60.0,
        "server_device": "cpu",  # the tests compare weights with references computed on the CPU
        "out": str(directory / overrides.get("mode", "pipelearn")),
    }
    values.update(overrides)
    return values


@pytest.fixture(scope="session")
def small_settings() -> Any:
    """small_values, for fixtures wider than one test (which have no tmp_path)."""
    return small_values


@pytest.fixture
def small_config(tmp_path: Path) -> Any:
    """A factory of small run configs writing into tmp_path."""

    def make(**overrides: Any) -> RunConfig:
        return RunConfig(**small_values(tmp_path, **overrides)).validate()

    return make


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A credentials directory (CA, server and devices 0..23) shared by the runtime tests."""
    directory = tmp_path_factory.mktemp("credentials") / "run"
    make_credentials(directory, 24)
    return directory


def _sgd_reference(config: RunConfig, rounds: int, per_round: int) -> dict[str, torch.Tensor]:
    """The whole model trained in this process: each device's mini-batch t takes its gradient at the weights of
    `config.staleness` steps before (the round's first weights at the latest), applied to its current weights;
    FedAvg of the devices' models after each round. A split run (no BatchNorm) computes the same, whatever its split
    and micro-batches."""
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


@pytest.fixture
def sgd_reference() -> Any:
    """The whole-model SGD a run computes, for its config, rounds and iterations a round."""
    return _sgd_reference
