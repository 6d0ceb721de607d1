"""Small, fast runs for the runtime tests: synthetic data, VGG5 without BatchNorm, 2 devices, the server on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelearn.config import RunConfig
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
