"""Run a whole experiment on one machine: the server here, each device a separate process on loopback."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import torch

from pipelearn.config import RunConfig
from pipelearn.plugins import device_environment, device_flags
from pipelearn.runtime.checkpoint import Checkpoint
from pipelearn.runtime.server import Server


def run_local(config: RunConfig, progress: bool = True, resume: Checkpoint | None = None) -> dict[str, Any]:
    """Start the server and one process per device over loopback; train (from a checkpoint if given); return metrics."""
    torch.set_num_threads(config.threads)
    server = Server(config, progress, resume)
    port = server.listen("127.0.0.1:0")
    environment = device_environment(config.model, config.dataset)
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
                "--timeout",
                str(config.timeout_s),
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
    failed = {d: p.returncode for d, p in enumerate(devices) if p.returncode not in (0, None)}
    if failed:
        print(f"run: device processes exited with errors: {failed}", file=sys.stderr)
    return metrics
