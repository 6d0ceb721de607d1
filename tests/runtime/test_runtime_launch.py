"""`pipelearn run` is mutual TLS by default: throw-away credentials, each device given only its own, removed after."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipelearn.runtime import launch
from pipelearn.runtime.server import Server
from pipelearn.transport.credentials import load_device_credentials, make_credentials
from pipelearn.transport.service import open_session


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
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(Server, "listen", listen)
    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    metrics = launch.run_local(small_config(mode="sfl"), progress=False)
    assert metrics["failed_devices"] == []
    assert seen["credentials"] is not None and seen["insecure"] is False and seen["address"].startswith("127.0.0.1:")
    assert [(d, path.name, certified) for d, path, certified in seen["devices"]] == [
        (0, "device-0.pem", 0),
        (1, "device-1.pem", 1),
    ]
    directory = seen["devices"][0][1].parent
    assert not directory.exists()  # removed when the run ended
