"""Run a whole experiment on one machine: the server here, each device a separate process on loopback."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from typing import Any

import torch

from pipelearn.config import RunConfig
from pipelearn.plugins import device_environment, device_flags
from pipelearn.runtime.checkpoint import Checkpoint
from pipelearn.runtime.server import Server
from pipelearn.transport.credentials import device_file, load_server_credentials, make_credentials


def run_local(config: RunConfig, progress: bool = True, resume: Checkpoint | None = None) -> dict[str, Any]:
    """Start the server and one process per device over loopback with mutual TLS; train (from a checkpoint if
    given); return the metrics.

    The credentials are made for this run alone in a private temporary directory, each device process is given
    only its own, and they are deleted when the run ends.
    """
    torch.set_num_threads(config.threads)
    server = Server(config, progress, resume)  # refuses a configuration the devices cannot serve before any starts
    environment = device_environment(config.model, config.dataset)
    with tempfile.TemporaryDirectory(prefix="pipelearn-credentials-") as credentials:
        make_credentials(credentials, config.devices)
        port = server.listen("127.0.0.1:0", load_server_credentials(credentials))
        data = ["--data-dir", config.data_dir] if config.data_dir is not None else []
        devices = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipelearn",
                    "device",
                    "--server",
                    f"127.0.0.1:{port}",
                    "--id",
                    str(d),
                    "--credentials",
                    str(device_file(credentials, d)),
                    "--timeout",
                    str(config.timeout_s),
                    *data,
                    *(["--download"] if config.download else []),
                    *device_flags(config.model, config.dataset),
                ],
                env=environment,
            )
            for d in range(config.devices)
        ]
        try:
            metrics = server.run()
        finally:
            for p in devices:
                try:
                    p.wait(timeout=config.timeout_s)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    failed = {d: p.returncode for d, p in enumerate(devices) if p.returncode not in (0, None)}
    if failed:
        print(f"run: device processes exited with errors: {failed}", file=sys.stderr)
    return metrics
