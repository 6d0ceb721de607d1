"""`pipelearn server` and `pipelearn device`, as separate commands, run a whole training over the network."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_and_device_commands_train_together(tmp_path: Path):
    config = tmp_path / "run.toml"
    config.write_text(
        'mode = "sfl"\ndataset = "synthetic"\ndevices = 2\nnetwork = "wifi"\nsamples_per_device = 40\n'
        f'batch_size = 20\nepochs = 1\ntest_samples = 100\ntimeout_s = 60.0\nout = "{tmp_path / "out"}"\n'
    )
    address = f"127.0.0.1:{_free_port()}"
    command = [sys.executable, "-m", "pipelearn"]
    server = subprocess.Popen(
        [*command, "server", "--listen", address, str(config), "--quiet", "--json"], stdout=subprocess.PIPE, text=True
    )
    devices = [subprocess.Popen([*command, "device", "--server", address, "--id", str(d)]) for d in range(2)]
    out, _ = server.communicate(timeout=120)
    assert server.returncode == 0
    assert all(d.wait(timeout=60) == 0 for d in devices)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["mode"] == "sfl" and metrics["network"] == "wifi"
    assert json.loads(out)["test_accuracy"] == metrics["test_accuracy"]
    assert (tmp_path / "out" / "trace.json").exists() and (tmp_path / "out" / "model.safetensors").exists()


def test_a_device_with_no_server_gives_up_with_a_clear_error(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelearn",
            "device",
            "--server",
            f"127.0.0.1:{_free_port()}",
            "--id",
            "0",
            "--timeout",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "server" in result.stderr
