"""Where the server and the devices compute: auto, cpu, cuda, cuda:N or mps, checked here; bf16 autocast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelearn.config import ConfigError
from pipelearn.runtime import hardware


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "_mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_auto_is_the_cpu_where_torch_sees_no_gpu(no_accelerator: None) -> None:
    assert hardware.resolve_device("auto") == torch.device("cpu")
    assert hardware.resolve_device("cpu") == torch.device("cpu")


def test_auto_is_the_gpu_where_torch_sees_one(two_gpus: None) -> None:
    assert hardware.resolve_device("auto") == torch.device("cuda", 0)
    assert hardware.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"'cuda:2' but torch sees 2 CUDA GPU\(s\), numbered 0..1"):
        hardware.resolve_device("cuda:2")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("cuda", "server_device is 'cuda' but torch sees no CUDA GPU"),
        ("cuda:0", "server_device is 'cuda:0' but torch sees no CUDA GPU"),
        ("mps", "torch sees no Apple GPU"),
        ("gpu", "expected auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_a_device_that_is_not_here_is_refused(no_accelerator: None, spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        hardware.resolve_device(spec)


def test_bf16_is_refused_where_the_gpu_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Tesla T4")
    with pytest.raises(ConfigError, match="the GPU Tesla T4 does not support bfloat16"):
        hardware.check_amp(torch.device("cuda", 0), "bf16")
    hardware.check_amp(torch.device("cuda", 0), "off")
    hardware.check_amp(torch.device("cpu"), "bf16")


def test_autocast_runs_forward_passes_in_bf16_only_when_asked() -> None:
    layer = torch.nn.Linear(4, 3)
    with hardware.autocast(torch.device("cpu"), "bf16"):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with hardware.autocast(torch.device("cpu"), "off"):
        assert layer(torch.randn(2, 4)).dtype == torch.float32


def test_tensors_cross_to_the_cpu_at_the_edges() -> None:
    grad = torch.ones(2, 3, requires_grad=True) * 2
    moved = hardware.to_cpu({"gradient": grad})
    assert moved["gradient"].device.type == "cpu" and not moved["gradient"].requires_grad
    assert hardware.to_device(moved, torch.device("cpu"))["gradient"].device.type == "cpu"


def _pipelearn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelearn", *args], capture_output=True, text=True, timeout=300)


def test_cuda_without_a_gpu_is_a_clear_error_for_the_server_and_a_device() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    server = _pipelearn("run", "--server-device", "cuda", "--dataset", "synthetic")
    assert server.returncode == 2
    assert "server_device is 'cuda' but torch sees no CUDA GPU" in server.stderr
    device = _pipelearn("device", "--server", "127.0.0.1:1", "--id", "0", "--insecure", "--compute", "cuda:1")
    assert device.returncode == 2
    assert "--compute is 'cuda:1' but torch sees no CUDA GPU" in device.stderr


def test_the_server_trains_on_the_cpu_in_bf16(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _pipelearn(
        "run",
        *("--server-device", "cpu", "--server-amp", "bf16", "--dataset", "synthetic", "--no-batchnorm"),
        *("--devices", "2", "--network", "unlimited", "--device-slowdown", "1", "--epochs", "1"),
        *("--samples-per-device", "40", "--batch-size", "20", "--test-samples", "100", "--out", str(out), "--quiet"),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["server_device"] == "cpu" and metrics["config"]["server_amp"] == "bf16"
    assert metrics["failed_devices"] == [] and all(loss > 0 for loss in metrics["train_loss"])
