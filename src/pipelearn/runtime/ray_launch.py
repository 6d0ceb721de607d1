"""Run an experiment on a Ray cluster: Ray places the server and every device as actors with the CPUs (and GPUs)
the configuration asks, starts, watches and stops them, and brings back their logs and the run's results.

The data path is the local launcher's: each device actor runs the same `pipelearn device` entry point, dialling the
server over gRPC with mutual TLS and holding only its own credential. Ray carries only what places and starts them
(the run's configuration as JSON, each actor's credential, the results at the end), within the cluster's own trust.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelearn.config import ConfigError, RunConfig
from pipelearn.metrics.results import add_metrics
from pipelearn.plugins import device_environment, is_plugin
from pipelearn.transport.credentials import (
    ServerCredentials,
    device_file,
    load_device_credentials,
    load_server_credentials,
    make_credentials,
)

if TYPE_CHECKING:
    from pipelearn.runtime.checkpoint import Checkpoint

INSTALL = "pip install 'pipelearn[ray]'"
"""How to install what launcher ray needs."""


def import_ray() -> Any:
    """The `ray` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        message = f"{{0}} is ray, but Ray is not installed here: {INSTALL}, or give local"
        raise ConfigError(message, "launcher") from None
    return ray


class ServerActor:
    """The run's server inside a Ray worker: it listens on its node's address and returns the output directory."""

    def __init__(self) -> None:
        self._directory = tempfile.mkdtemp(prefix="pipelearn-ray-run-")
        self._server: Any = None
        self._started = False

    def host(self) -> str:
        """The address of the node this actor was placed on."""
        import ray

        return str(ray.util.get_node_ip_address())

    def listen(self, config_json: str, ca: bytes, certificate: bytes, key: bytes, progress: bool) -> int:
        """Prepare the run (refusing what the devices cannot serve) and listen with mutual TLS; return the port."""
        import torch

        from pipelearn.runtime.server import Server, prepare

        config = RunConfig.from_json(config_json)
        config.out = str(Path(self._directory) / "out")
        torch.set_num_threads(config.threads)
        try:
            self._server = Server(prepare(config), progress)
            self._server.on_start = lambda clock: setattr(self, "_started", True)
            return int(self._server.listen(f"{self.host()}:0", ServerCredentials(ca, certificate, key)))
        except BaseException:
            shutil.rmtree(self._directory, ignore_errors=True)
            raise

    def started(self) -> bool:
        """Whether training has started (every device joined)."""
        return self._started

    def run(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Train; return the metrics and every file of the output directory, by its path there."""
        try:
            metrics = self._server.run()
            out = Path(self._directory) / "out"
            files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        finally:
            shutil.rmtree(self._directory, ignore_errors=True)  # a killed worker leaves it to the node's clean-up
        return metrics, files


class DeviceActor:
    """One device inside a Ray worker, run by the device entry point of `pipelearn device` (`run_device`) with only
    its own credential: the worker is the device process, so a worker that dies is a device that died."""

    def host(self) -> str:
        """The address of the node this actor was placed on."""
        import ray

        return str(ray.util.get_node_ip_address())

    def run(self, address: str, device: int, config_json: str, credential: bytes) -> int:
        """Join the server at HOST:PORT as `device` and train until the run is over; return 0."""
        from pipelearn.runtime.joining import run_device

        config = RunConfig.from_json(config_json)
        with tempfile.TemporaryDirectory(prefix="pipelearn-credentials-") as directory:
            path = device_file(directory, device)
            path.touch(mode=stat.S_IRUSR | stat.S_IWUSR)
            path.write_bytes(credential)
            credentials = load_device_credentials(path)
        run_device(
            address,
            device,
            config.timeout_s,
            model=config.model if is_plugin(config.model) else None,  # a device names plug-ins itself
            dataset=config.dataset if is_plugin(config.dataset) else None,
            credentials=credentials,
            data_dir=config.data_dir,  # this node's own
            download=config.download,
        )
        return 0


def run_ray(config: RunConfig, progress: bool = True, resume: Checkpoint | None = None) -> dict[str, Any]:
    """Place the server and one actor per device on a Ray cluster; train over gRPC with mutual TLS; return the
    metrics, written to `config.out` as by the local launcher, with the host of the server and of every device."""
    ray = import_ray()
    if resume is not None:
        raise ConfigError("--resume with {0} ray is not supported yet: resume with launcher local", "launcher")
    started_here = _connect(ray, config.ray_address, _cpus(config))
    try:
        _check_resources(ray, config)
        return _train(ray, config, progress)
    finally:
        if started_here:
            ray.shutdown()


def _cpus(config: RunConfig) -> float:
    """The CPUs the run reserves: the server's and every device's."""
    return config.ray_server_cpus + sum(config.ray_cpus(d) for d in range(config.devices))


def _connect(ray: Any, address: str | None, cpus: float) -> bool:
    """Join the cluster at `address`, or start one here when none, with as many CPUs as the run reserves (at least
    this machine's: as the local launcher, it then runs every process here); whether this call started Ray."""
    if address not in (None, "auto"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise ConfigError(
                f"{{0}} is {address}, but no Ray head answers there ({exc}): start one with `ray start --head "
                f"--port {port}` on {host}, or give auto on a node of a running cluster",
                "ray_address",
            ) from None
    if ray.is_initialized():
        return False
    try:
        here = {} if address is not None else {"num_cpus": max(os.cpu_count() or 1, math.ceil(cpus))}
        ray.init(address=address, log_to_driver=True, include_dashboard=False, configure_logging=False, **here)
    except (ConnectionError, RuntimeError) as exc:
        where = "no address" if address is None else address
        raise ConfigError(f"{{0}} is {where}, but Ray cannot join a cluster there: {exc}", "ray_address") from None
    return True


def _check_resources(ray: Any, config: RunConfig) -> None:
    """Refuse a run that asks for more CPUs or GPUs than the whole cluster has: Ray would wait for them forever."""
    have = ray.cluster_resources()
    cpus = _cpus(config)
    if cpus > have.get("CPU", 0) + 1e-9:
        raise ConfigError(
            f"the run asks Ray for {cpus:g} CPUs ({config.ray_server_cpus:g} for the server, {{0}}; "
            f"{config.ray_device_cpus:g} for each of {config.devices} devices, {{1}}, or their override) but the "
            f"cluster has {have.get('CPU', 0):g}: lower {{1}} (a fraction such as 0.25 shares a CPU) or add nodes",
            "ray_server_cpus",
            "ray_device_cpus",
        )
    if config.ray_server_gpus > have.get("GPU", 0) + 1e-9:
        raise ConfigError(
            f"{{0}} is {config.ray_server_gpus:g}, but the cluster has {have.get('GPU', 0):g} GPUs: lower it to fit",
            "ray_server_gpus",
        )


def _train(ray: Any, config: RunConfig, progress: bool) -> dict[str, Any]:
    """Start the server actor, then the devices once it listens; collect the results and stop every actor."""
    environment = device_environment(config.model, config.dataset)
    options: dict[str, Any] = {}
    if environment is not None:  # plug-ins importable here are importable there (on a node that has them)
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": environment["PYTHONPATH"]}}
    run = f"pipelearn-{secrets.token_hex(4)}"
    server = (
        ray.remote(ServerActor)
        .options(
            name=f"{run}-server",
            num_cpus=config.ray_server_cpus,
            num_gpus=config.ray_server_gpus,
            max_concurrency=2,  # `started` is answered while `run` trains
            **options,
        )
        .remote()
    )
    devices = [
        ray.remote(DeviceActor).options(name=f"{run}-device-{d}", num_cpus=config.ray_cpus(d), **options).remote()
        for d in range(config.devices)
    ]
    try:
        hosts = _placed(ray, [server, *devices], config.timeout_s)
        with tempfile.TemporaryDirectory(prefix="pipelearn-credentials-") as credentials:
            # the devices dial the server at its node's address: its certificate must name it
            make_credentials(credentials, config.devices, ips=[hosts[0]])
            tls = load_server_credentials(credentials)
            port = _get(ray, server.listen.remote(config.to_json(), tls.ca, tls.certificate, tls.key, progress))
            own = [device_file(credentials, d).read_bytes() for d in range(config.devices)]
        training = server.run.remote()
        address = f"{hosts[0]}:{port}"
        joined = [a.run.remote(address, d, config.to_json(), own[d]) for d, a in enumerate(devices)]
        metrics, files = _get(ray, training)
        lost = _outcomes(ray, joined, config.timeout_s)
    finally:
        for actor in [server, *devices]:
            ray.kill(actor)
    out = Path(config.out)
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    placed = {"server": hosts[0], "devices": hosts[1:], "lost_workers": lost}
    return add_metrics(out, metrics, ray=placed)


def _placed(ray: Any, actors: list[Any], timeout_s: float) -> list[str]:
    """The node address of each actor once Ray has placed it; RuntimeError when it cannot in `timeout_s`."""
    pending = [a.host.remote() for a in actors]
    ready, waiting = ray.wait(pending, num_returns=len(pending), timeout=timeout_s)
    if waiting:
        raise RuntimeError(
            f"Ray placed {len(ready)} of the run's {len(pending)} actors in {timeout_s:g} s (timeout_s): the cluster "
            "lacks the CPUs or GPUs asked on any one node, or its workers are slow to start (raise timeout_s); see "
            "`ray status`"
        )
    return [str(_get(ray, p)) for p in pending]


def _outcomes(ray: Any, joined: list[Any], timeout_s: float) -> dict[str, str]:
    """The devices whose Ray worker died or whose entry point failed, by id, and how (the server named them too)."""
    deadline = time.monotonic() + timeout_s
    lost: dict[str, str] = {}
    for d, ref in enumerate(joined):
        try:
            status = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        except ray.exceptions.GetTimeoutError:
            lost[str(d)] = f"still running {timeout_s:g} s after the run ended; stopped"
        except ray.exceptions.RayActorError as exc:
            lost[str(d)] = f"its Ray worker died: {str(exc).splitlines()[0]}"
        except ray.exceptions.RayTaskError as exc:
            lost[str(d)] = f"failed: {exc.cause!r}"
        else:
            if status not in (0, None):
                lost[str(d)] = f"exited with status {status}"
    if lost:
        print(f"run: device actors lost or failed: {lost}", file=sys.stderr)
    return lost


def _get(ray: Any, ref: Any) -> Any:
    """`ray.get`, raising what the actor raised (a ConfigError stays one) rather than Ray's wrapper."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise exc.cause from None
    except ray.exceptions.RayActorError as exc:
        raise RuntimeError(f"a Ray worker of the run died: {str(exc).splitlines()[0]}") from None
