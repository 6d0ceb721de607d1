"""Run a whole experiment on one machine: the server here, each device a separate process on loopback, or the
server and every device as separate hosts in network namespaces with kernel-shaped links (`netns`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pipelearn.config import ConfigError, RunConfig
from pipelearn.metrics.report import add_metrics
from pipelearn.runtime.server import Server


def device_command(address: str, device: int, config: RunConfig) -> list[str]:
    """The command line of one device process joining the server at HOST:PORT."""
    return [
        sys.executable,
        "-m",
        "pipelearn",
        "device",
        "--server",
        address,
        "--id",
        str(device),
        "--timeout",
        str(config.timeout_s),
    ]


def run_local(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Start the server and one process per device over loopback (or in namespaces); train; return the metrics."""
    torch.set_num_threads(config.threads)
    if config.netns:
        return _run_in_namespaces(config, progress)
    server = Server(config, progress)
    port = server.listen("127.0.0.1:0")
    devices = [subprocess.Popen(device_command(f"127.0.0.1:{port}", d, config)) for d in range(config.devices)]
    try:
        metrics = server.run()
    finally:
        _stop(devices, config.timeout_s, kill=False)
    return metrics


def _run_in_namespaces(config: RunConfig, progress: bool) -> dict[str, Any]:
    from pipelearn.runtime.netns import Network
    from pipelearn.runtime.shaper import KernelLinks, link_mtu

    # says at once, before any data is loaded, if namespaces cannot be made here
    network = Network(config.devices, [link_mtu(config, d) for d in range(config.devices)])
    with _exit_on_terminate(), network:
        links = KernelLinks(network, config)
        # the server is a process of its own in its namespace, like the devices: a thread of this process that
        # entered the namespace would also put there the threads gRPC starts from it, for every later connection
        command = ["-m", "pipelearn.runtime.netns_server", "--address", network.server_address]
        server = subprocess.Popen(
            [*network.exec_in(None), sys.executable, *command, *([] if progress else ["--quiet"])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdin is not None and server.stdout is not None
        devices: list[subprocess.Popen[bytes]] = []
        metrics: dict[str, Any] | None = None
        try:
            server.stdin.write(config.to_json())
            server.stdin.close()
            for line in server.stdout:
                message = json.loads(line)
                if "port" in message:
                    address = f"{network.server_address}:{message['port']}"
                    for d in range(config.devices):
                        devices.append(subprocess.Popen([*network.exec_in(d), *device_command(address, d, config)]))
                elif "start" in message:
                    links.start(message["start"])
                elif "metrics" in message:
                    metrics = message["metrics"]
                elif "error" in message:
                    raise (ConfigError if message["kind"] == "config" else RuntimeError)(message["error"])
            if metrics is None:
                raise RuntimeError(f"the server exited with status {server.wait()} before the run was over")
        finally:
            links.stop()
            if metrics is None:
                server.kill()
            server.wait()
            _stop(devices, config.timeout_s, kill=metrics is None)
    hosts = {
        "server": network.server_address,
        "devices": [network.device_address(d) for d in range(config.devices)],
        "rate_changes": links.applied,
        "rate_change_errors": links.errors,
    }
    metrics = add_metrics(Path(config.out), metrics, netns=hosts)
    if links.errors:
        raise RuntimeError(f"scheduled rate changes failed, so the run did not follow its schedule: {links.errors}")
    return metrics


def _stop(devices: list[subprocess.Popen[bytes]], timeout_s: float, kill: bool) -> None:
    for p in devices:
        if kill:
            p.kill()
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    failed = {d: p.returncode for d, p in enumerate(devices) if p.returncode not in (0, None)}
    if failed and not kill:
        print(f"run: device processes exited with errors: {failed}", file=sys.stderr)


@contextmanager
def _exit_on_terminate() -> Iterator[None]:
    """Turn SIGTERM into SystemExit for the with-block, so that cleanup runs as it does on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
