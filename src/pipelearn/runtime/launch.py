"""Run a whole experiment on one machine: the server here, each device a separate process on loopback, or the
server and every device as separate hosts in network namespaces with kernel-shaped links (`netns`)."""

from __future__ import annotations

import json
import logging
import shutil
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
from pipelearn.metrics.results import add_metrics
from pipelearn.planner.adapt import Adapter
from pipelearn.plugins import device_environment, device_flags
from pipelearn.runtime.checkpoint import Checkpoint
from pipelearn.runtime.server import Server
from pipelearn.runtime.setup import claim_for, prepare_into
from pipelearn.transport.credentials import device_file, load_server_credentials, make_credentials

CREDENTIALS_DIR = ".credentials"
"""Where in the run's output directory the launcher keeps the run's throw-away credentials (mode 0700, private keys
0600), removed when the run ends and, after a launcher that was killed, when the next run there starts."""
STATE_DIR = "device-state"
"""Where in the run's output directory each local device keeps its optimizer state (device-state/N)."""


def device_command(
    address: str, device: int, config: RunConfig, credentials: str | Path, quiet: bool = False
) -> list[str]:
    """The command line of one device process joining the server at HOST:PORT with its own file of `credentials`,
    keeping its state in the run's output directory (`quiet`: logging only warnings and errors)."""
    data = ["--data-dir", config.data_dir] if config.data_dir is not None else []
    return [
        sys.executable,
        "-m",
        "pipelearn",
        "device",
        "--server",
        address,
        "--id",
        str(device),
        "--credentials",
        str(device_file(credentials, device)),
        "--timeout-s",
        str(config.timeout_s),
        "--state-dir",
        str(Path(config.out) / STATE_DIR / str(device)),
        *data,
        *(["--download"] if config.download else []),
        *device_flags(config.model, config.dataset),
        *(["--quiet"] if quiet else []),
    ]


def run_local(
    config: RunConfig, progress: bool = True, resume: Checkpoint | None = None, adapter: Adapter | None = None
) -> dict[str, Any]:
    """Start the server and one process per device over loopback (or in namespaces, `netns`) with mutual TLS; train
    (from a checkpoint if given, into the directory it was read from; re-planned by `adapter` where given, else as
    the configuration says); return the metrics.

    The output directory is claimed first (pipelearn.metrics.outdir.claim): another run's results there are refused,
    a finished run is not resumed. The credentials are made for this run alone in its output directory
    (CREDENTIALS_DIR), each device process is given only its own, and they are deleted when the run ends.
    """
    torch.set_num_threads(config.threads)
    if config.netns:
        return _run_in_namespaces(config, progress, resume)
    # refuses a configuration the devices cannot serve before any starts (and before its directory is claimed)
    server = Server(prepare_into(config, resume), progress, resume, adapter)
    config = server.config
    environment = device_environment(config.model, config.dataset)
    with _credentials(config, []) as credentials:
        port = server.listen("127.0.0.1:0", load_server_credentials(credentials))
        devices = [
            subprocess.Popen(device_command(f"127.0.0.1:{port}", d, config, credentials, not progress), env=environment)
            for d in range(config.devices)
        ]
        metrics = None
        try:
            with _exit_on_terminate():
                metrics = server.run()
        finally:
            _stop(devices, config.timeout_s, kill=metrics is None)  # interrupted or failed: stop them now
    return metrics


def _run_in_namespaces(config: RunConfig, progress: bool, resume: Checkpoint | None) -> dict[str, Any]:
    """The run with its server and devices as hosts in network namespaces; a resumed run's server process reads the
    checkpoint from the run's output directory, where `--resume` found it."""
    from pipelearn.runtime.netns import Network
    from pipelearn.runtime.shaper import KernelLinks, link_mtu

    # says at once, before any data is loaded, if namespaces cannot be made here
    network = Network(config.devices, [link_mtu(config, d) for d in range(config.devices)])
    environment = device_environment(config.model, config.dataset)
    config = claim_for(config, resume)
    # the devices dial the server at its address in the namespaces: its certificate must name it
    with _exit_on_terminate(), _credentials(config, [network.server_address]) as credentials, network:
        links = KernelLinks(network, config)
        # the server is a process of its own in its namespace, like the devices: a thread of this process that
        # entered the namespace would also put there the threads gRPC starts from it, for every later connection
        command = [
            *("-m", "pipelearn.runtime.netns_server", "--address", network.server_address),
            *("--credentials", str(credentials)),
            *([] if progress else ["--quiet"]),
            *(["--resume"] if resume is not None else []),
        ]
        server = subprocess.Popen(
            [*network.exec_in(None), sys.executable, *command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
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
                        device = [*network.exec_in(d), *device_command(address, d, config, credentials, not progress)]
                        devices.append(subprocess.Popen(device, env=environment))
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


@contextmanager
def _credentials(config: RunConfig, ips: list[str]) -> Iterator[Path]:
    """This run's throw-away credentials, in its output directory for as long as the with-block lasts."""
    directory = Path(config.out) / CREDENTIALS_DIR
    shutil.rmtree(directory, ignore_errors=True)  # a killed launcher's
    make_credentials(directory, config.devices, ips=ips)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


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
        logging.getLogger("pipelearn.run").warning("device processes exited with errors: %s", failed)


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
