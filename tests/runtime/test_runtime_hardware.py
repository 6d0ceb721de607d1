"""Where the server and the devices compute: auto, cpu, cuda, cuda:N or mps, checked here; bf16 autocast."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch

from pipelearn.config import ConfigError
from pipelearn.runtime import hardware
from pipelearn.runtime.server import Server, prepare


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


@pytest.mark.slow
def test_cuda_without_a_gpu_is_a_clear_error_for_the_server_and_a_device() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    server = _pipelearn("run", "--server-device", "cuda", "--dataset", "synthetic")
    assert server.returncode == 2
    assert "server_device is 'cuda' but torch sees no CUDA GPU" in server.stderr
    device = _pipelearn("device", "--server", "127.0.0.1:1", "--id", "0", "--insecure", "--compute", "cuda:1")
    assert device.returncode == 2
    assert "--compute is 'cuda:1' but torch sees no CUDA GPU" in device.stderr


def _no_cpu_bf16() -> str | None:
    """Why torch cannot run forward passes in bf16 under autocast on this CPU, or None where it can."""
    if not torch.amp.autocast_mode.is_autocast_available("cpu"):
        return "this torch has no autocast on the CPU"
    try:
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            dtype = torch.nn.Linear(4, 3)(torch.randn(2, 4)).dtype
    except RuntimeError as exc:
        return f"bf16 autocast fails on this CPU: {exc}"
    return None if dtype == torch.bfloat16 else f"bf16 autocast on this CPU computes in {dtype}"


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_the_server_part_computes_in_bf16_exactly_when_asked(small_config, amp: str) -> None:
    reason = _no_cpu_bf16()
    if reason is not None:
        pytest.skip(reason)
    config = small_config(mode="sfl", server_amp=amp)
    server = Server(prepare(config), progress=False)
    address = f"127.0.0.1:{server.listen('127.0.0.1:0', insecure=True)}"
    outputs: list[tuple[torch.nn.Module, torch.dtype]] = []  # each forward pass in this process during training
    training = threading.Event()
    server.on_start = lambda _: training.set()  # before it, building models runs their layers in float32

    def record(module: torch.nn.Module, inputs: object, output: object) -> None:
        if training.is_set() and isinstance(output, torch.Tensor):
            outputs.append((module, output.dtype))

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    flags = ["device", "--insecure", "--server", address, "--id"]
    devices = [subprocess.Popen([sys.executable, "-m", "pipelearn", *flags, str(d)]) for d in range(2)]
    try:
        metrics = server.run()
    finally:
        hook.remove()
        codes = [p.wait(60) for p in devices]
    assert codes == [0, 0] and metrics["failed_devices"] == []
    assert metrics["config"]["server_amp"] == amp
    # every training step of the server's part ran its forward pass in the precision asked for
    steps = [e for e in server.recorder.events if e.track == "server/compute" and ".server.T." in e.name]
    for d in range(2):
        part = server.aggregator.replicas[d].part
        ran = [dtype for module, dtype in outputs if module is part]
        assert len(ran) == sum(e.name.startswith(f"d{d}.") for e in steps) > 0
        assert set(ran) == {torch.bfloat16 if amp == "bf16" else torch.float32}
        layers = {dtype for module, dtype in outputs if module is part[-1]}
        assert layers == set(ran)  # its layers computed so, not only its output was cast
