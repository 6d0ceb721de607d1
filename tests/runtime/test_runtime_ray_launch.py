"""Launcher ray: the server and the devices as actors on a Ray cluster (one small local cluster for the module),
training as the local launcher's processes do, a device whose worker dies dropped and named, clear refusals."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from pipelearn.config import ConfigError, DeviceOverride
from pipelearn.config.loading import from_mapping
from pipelearn.runtime import launch, ray_launch

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray", reason="launcher ray needs Ray: pip install 'pipelearn[ray]'")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A Ray instance on this machine with three logical CPUs: the server and two devices at one each."""
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _actor(suffix: str) -> Any:
    """The running run's actor whose name ends with `suffix`, once Ray has made it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(suffix)]
        if names:
            return ray.get_actor(names[0])
        time.sleep(0.1)
    raise AssertionError(f"no actor named *{suffix} appeared")


def test_a_ray_run_trains_the_same_weights_as_a_local_run(cluster: Any, small_config: Any) -> None:
    local = launch.run_local(small_config(mode="pipelearn", out=small_config().out + "-local"), progress=False)
    config = small_config(mode="pipelearn", launcher="ray")
    metrics = ray_launch.run_ray(config, progress=False)
    assert metrics["failed_devices"] == [] == local["failed_devices"]
    ours, theirs = load_file(f"{config.out}/model.safetensors"), load_file(f"{config.out}-local/model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    node = ray.util.get_node_ip_address()
    assert metrics["ray"] == {"server": node, "devices": [node, node], "lost_workers": {}}
    written = json.loads(Path(config.out, "metrics.json").read_text())  # the results came back here
    assert written["ray"] == metrics["ray"] and Path(config.out, "trace.json").is_file()


def test_a_device_whose_ray_worker_dies_mid_round_is_dropped_and_named(cluster: Any, small_config: Any) -> None:
    # a 2 Mbit/s uplink makes each iteration last long enough to be caught in the middle of one
    config = small_config(mode="pipelearn", launcher="ray", epochs=2, up_mbps=2.0)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(metrics=ray_launch.run_ray(config, progress=False)))
    thread.start()
    try:
        server = _actor("-server")
        deadline = time.monotonic() + 60
        while not ray.get(server.started.remote()):
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        ray.kill(_actor("-device-1"))
    finally:
        thread.join(120)
    assert not thread.is_alive()
    metrics = result["metrics"]
    assert metrics["failed_devices"] == [1]
    assert [e["device"] for e in metrics["dropped"]] == [1]
    assert list(metrics["ray"]["lost_workers"]) == ["1"]
    assert "Ray worker died" in metrics["ray"]["lost_workers"]["1"]
    assert metrics["device"][0]["error"] is None and metrics["device"][0]["busy_s"] > 0


def test_an_unreachable_ray_address_is_a_config_error_naming_it(small_config: Any) -> None:
    config = small_config(launcher="ray", ray_address="127.0.0.1:1")
    with pytest.raises(ConfigError, match=r"no Ray head answers there .*ray start --head --port 1") as caught:
        ray_launch.run_ray(config, progress=False)
    assert caught.value.keys == ("ray_address",)


def test_a_run_asking_more_cpus_than_the_cluster_has_is_refused(cluster: Any, small_config: Any) -> None:
    config = small_config(launcher="ray", ray_device_cpus=1.5)
    asked = r"asks Ray for 4 CPUs \(1 for the server, .*; 1.5 for each of 2 devices, .* the cluster has 3: lower"
    with pytest.raises(ConfigError, match=asked):
        ray_launch.run_ray(config, progress=False)
    assert not ray.util.list_named_actors()  # refused before any actor started
    with pytest.raises(ConfigError, match=r"is 1, but the cluster has 0 GPUs"):
        ray_launch.run_ray(small_config(launcher="ray", ray_server_gpus=1), progress=False)


def test_without_ray_installed_the_launcher_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r"not installed here: pip install 'pipelearn\[ray\]'"):
        ray_launch.import_ray()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"ray_address": "auto"}, "ray_address"),
        ({"launcher": "ray", "netns": True}, "netns"),
        ({"launcher": "ray", "ray_address": "head-node"}, "ray_address"),
        ({"launcher": "ray", "device_overrides": {1: DeviceOverride(ray_cpus=-1)}}, "device_overrides.1.ray_cpus"),
    ],
)
def test_ray_settings_that_cannot_apply_are_refused(small_config: Any, settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        small_config(**settings)
    assert caught.value.keys[0] == named


def test_each_device_gets_its_own_cpus_from_its_override() -> None:
    config = from_mapping({"launcher": "ray", "ray_device_cpus": 0.5, "device_overrides": {"1": {"ray_cpus": 2}}})
    assert [config.ray_cpus(d) for d in range(3)] == [0.5, 2.0, 0.5]


def test_a_ray_instance_started_for_the_run_has_the_cpus_it_reserves(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[dict[str, Any]] = []

    class Unstarted:
        def is_initialized(self) -> bool:
            return False

        def init(self, **settings: Any) -> None:
            started.append(settings)

    monkeypatch.setattr(ray_launch.os, "cpu_count", lambda: 2)
    assert ray_launch._connect(Unstarted(), None, 7.5) is True
    assert ray_launch._connect(Unstarted(), None, 1.5) is True
    assert ray_launch._connect(Unstarted(), "auto", 7.5) is True
    assert [s.get("num_cpus") for s in started] == [8, 2, None]  # a cluster joined has the CPUs it has


def test_a_server_refuses_launcher_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelearn.cli import main

    toml = tmp_path / "run.toml"
    toml.write_text('launcher = "ray"\n')
    assert main(["server", "--listen", "127.0.0.1:0", "--insecure", str(toml)]) == 2
    assert "config key 'launcher' is for `pipelearn run`" in capsys.readouterr().err
