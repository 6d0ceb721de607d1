"""`pipelearn run` is mutual TLS by default: throw-away credentials in the run's directory, each device given only its
own, removed after."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipelearn.runtime import launch
from pipelearn.runtime.server import Server
from pipelearn.transport.credentials import load_device_credentials, make_credentials
from pipelearn.transport.service import open_session

pytestmark = pytest.mark.slow


def test_a_local_run_is_mutual_tls_with_throw_away_credentials(small_config, monkeypatch, tmp_path: Path):
    seen: dict[str, Any] = {"devices": []}
    real_listen, real_popen = Server.listen, subprocess.Popen

    def listen(self: Server, address: str, credentials: Any = None, *, insecure: bool = False) -> int:
        port = real_listen(self, address, credentials, insecure=insecure)
        seen.update(address=address, credentials=credentials, insecure=insecure)
        make_credentials(tmp_path / "stranger", 1)
        for stranger in (None, load_device_credentials(tmp_path / "stranger", 0)):
            with pytest.raises(ConnectionError, match="TLS handshake"):
                open_session(f"127.0.0.1:{port}", iter(()), 30.0, stranger)
        return port

    def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        path = Path(argv[argv.index("--credentials") + 1])
        seen["devices"].append((int(argv[argv.index("--id") + 1]), path, load_device_credentials(path).device))
        seen.setdefault("modes", []).append((path.parent.stat().st_mode & 0o777, path.stat().st_mode & 0o777))
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(Server, "listen", listen)
    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    config = small_config(mode="sfl")
    metrics = launch.run_local(config, progress=False)
    assert metrics["failed_devices"] == []
    assert seen["credentials"] is not None and seen["insecure"] is False and seen["address"].startswith("127.0.0.1:")
    assert [(d, path.name, certified) for d, path, certified in seen["devices"]] == [
        (0, "device-0.pem", 0),
        (1, "device-1.pem", 1),
    ]
    directory = seen["devices"][0][1].parent
    assert directory == Path(config.out) / ".credentials"  # in the run's own directory, never the system's temporary
    assert seen["modes"] == [(0o700, 0o600), (0o700, 0o600)]  # for their owner alone
    assert not directory.exists()  # removed when the run ended


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_local_run_stops_its_device_processes(signum: int, tmp_path: Path) -> None:
    flags = "--dataset synthetic --no-batchnorm --devices 2 --epochs 200 --samples-per-device 40 --batch-size 20"
    run = subprocess.Popen(
        [sys.executable, "-m", "pipelearn", "run", *flags.split(), "--up-mbps", "1", "--out", str(tmp_path)],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal, not a background job
        stderr=subprocess.PIPE,
        text=True,
    )
    devices: list[str] = []
    deadline = time.time() + 90
    while time.time() < deadline and len(devices) < 2:  # wait for both device processes to be training
        time.sleep(0.2)
        children = Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
        devices = [pid for pid in children if b"device" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    time.sleep(3)  # past start-up
    assert len(devices) == 2, "the run did not start its devices in time"
    run.send_signal(signum)
    _, err = run.communicate(timeout=60)
    assert run.returncode != 0
    assert not [pid for pid in devices if Path(f"/proc/{pid}").exists()], err  # stopped with it, not orphaned
