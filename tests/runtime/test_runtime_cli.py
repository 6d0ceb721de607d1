"""`pipelearn credentials`, `pipelearn server` and `pipelearn device`, as separate commands, run a whole training
over mutual TLS; plain text only when asked for; a configuration the devices cannot serve is refused up front."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

COMMAND = [sys.executable, "-m", "pipelearn"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_toml(tmp_path: Path) -> Path:
    config = tmp_path / "run.toml"
    config.write_text(
        'mode = "sfl"\ndataset = "synthetic"\ndevices = 2\nnetwork = "wifi"\nsamples_per_device = 40\n'
        f'batch_size = 20\nepochs = 1\ntest_samples = 100\ntimeout_s = 60.0\nout = "{tmp_path / "out"}"\n'
    )
    return config


def test_server_and_device_commands_train_together_over_mutual_tls(tmp_path: Path):
    made = subprocess.run(
        [*COMMAND, "credentials", str(tmp_path / "keys"), "--devices", "2", "--host", "trainer.example"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert "device-1.pem" in made.stdout and "its own" in made.stderr
    address, keys = f"127.0.0.1:{_free_port()}", str(tmp_path / "keys")
    server = subprocess.Popen(
        [*COMMAND, "server", "--listen", address, str(_run_toml(tmp_path)), "--json", "--credentials", keys],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # one device names its own file (its id comes from the certificate), the other the directory and its id
    devices = [
        subprocess.Popen(
            [*COMMAND, "device", "--server", address, "--credentials", str(tmp_path / "keys/device-0.pem")]
        ),
        subprocess.Popen(
            [*COMMAND, "device", "--server", address, "--credentials", str(tmp_path / "keys"), "--id", "1"]
        ),
    ]
    out, err = server.communicate(timeout=120)
    assert server.returncode == 0, err
    assert all(d.wait(timeout=60) == 0 for d in devices)
    assert "(mutual TLS)" in err and "warning" not in err
    # stderr is a pipe, no terminal: the progress bar is plain lines, never a carriage-return frame
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert lines[0].startswith("server: listening on port ")
    joined = r"server: device [01] joined from ipv4:127\.0\.0\.1:\d+: split 2, 1 micro-batch"
    assert sorted(line[15] for line in lines if re.fullmatch(joined, line)) == ["0", "1"]
    progress = [line for line in lines if line.startswith("server: sfl server: ")]
    assert progress[-1].startswith("server: sfl server: 13/13 action (round 1/1, loss ") and len(progress) <= 11
    assert re.fullmatch(r"server: round 1/1, train loss \d\.\d{4}, test accuracy \d+\.\d\d%; at \d+\.\d s", lines[-1])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["mode"] == "sfl" and metrics["network"] == "wifi" and metrics["failed_devices"] == []
    assert json.loads(out)["test_accuracy"] == metrics["test_accuracy"]
    assert (tmp_path / "out" / "trace.json").exists() and (tmp_path / "out" / "model.safetensors").exists()


def test_plain_text_warns_off_loopback(tmp_path: Path):
    # (without either flag, both commands exit with status 2: tests/test_cli.py)
    server = subprocess.Popen(
        [*COMMAND, "server", "--listen", f"0.0.0.0:{_free_port()}", str(_run_toml(tmp_path)), "--insecure"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    lines = []
    while not lines or "listening" not in lines[-1]:
        lines.append(server.stderr.readline())
        assert lines[-1], "the server ended before it listened"
    server.kill()
    server.communicate()
    assert any("warning: plain text (--insecure) on 0.0.0.0" in line for line in lines)
    assert "(plain text)" in lines[-1]
    for host, warned in (("192.0.2.1", True), ("localhost", False)):
        device = subprocess.run(
            [*COMMAND, "device", "--server", f"{host}:{_free_port()}", "--id", "0", "--insecure", "--timeout-s", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert device.returncode == 2
        assert ("warning: plain text" in device.stderr) == warned


def test_a_device_with_the_wrong_credentials_gives_up_at_once_with_a_clear_error(tmp_path: Path):
    for name in ("ours", "theirs"):
        subprocess.run([*COMMAND, "credentials", str(tmp_path / name), "--devices", "1"], check=True, timeout=60)
    address = f"127.0.0.1:{_free_port()}"
    server = subprocess.Popen(
        [*COMMAND, "server", "--listen", address, str(_run_toml(tmp_path)), "--credentials", str(tmp_path / "ours")],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stranger = subprocess.run(
            [*COMMAND, "device", "--server", address, "--credentials", str(tmp_path / "theirs"), "--id", "0"],
            capture_output=True,
            text=True,
            timeout=100,  # less than the device's default --timeout of 120 s: a failed handshake is not waited out
        )
    finally:
        server.kill()
        server.communicate()
    assert stranger.returncode == 2
    assert "pipelearn: error: the TLS handshake" in stranger.stderr and "--credentials" in stranger.stderr


def test_a_device_with_no_server_gives_up_with_a_clear_error(tmp_path: Path):
    result = subprocess.run(
        [*COMMAND, "device", "--server", f"127.0.0.1:{_free_port()}", "--id", "0", "--insecure", "--timeout-s", "6"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert lines[0].startswith("device: connecting to 127.0.0.1:")
    assert any(line.startswith("device: still trying to reach 127.0.0.1:") for line in lines)  # not silent
    assert "no PipeLearn server answered" in lines[-1]


def test_a_configuration_the_devices_cannot_serve_is_refused_once_up_front(tmp_path: Path):
    result = subprocess.run(
        [*COMMAND, "run", "--samples-per-device", "100000", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("pipelearn: error:") and "samples_per_device 100000" in errors[0]
