"""A device trains only the plug-ins its own command line names, and the server refuses one whose part differs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pipelearn.config import RunConfig
from pipelearn.models.parts import device_part, make_model
from pipelearn.planner.resolve import resolve_plan
from pipelearn.plugins import PluginError
from pipelearn.runtime.agreement import adopt, differences, fingerprint
from pipelearn.runtime.server import Server, prepare
from pipelearn.transport.inbox import PeerError

TESTS = Path(__file__).parents[1]
SRC = Path(__file__).parents[2] / "src"


def test_a_device_adopts_only_what_it_was_given() -> None:
    plan = RunConfig(model="nets:net", dataset="/srv/run/data.py:load")
    own = adopt(plan, "nets:net", "/home/me/data.py:load")
    assert (own.model, own.dataset) == ("nets:net", "/home/me/data.py:load")
    assert adopt(RunConfig(model="vgg5"), "VGG5", None).model == "VGG5"
    with pytest.raises(PluginError, match="start this device with --model nets:net"):
        adopt(plan, None, "/home/me/data.py:load")
    with pytest.raises(PluginError, match="uses model 'nets:net' but this device was started with --model vgg5"):
        adopt(plan, "vgg5", "data.py:load")
    with pytest.raises(PluginError, match="uses dataset 'mnist' but this device was started with --dataset x:y"):
        adopt(RunConfig(), None, "x:y")


def test_fingerprints_differ_in_words(plugin_nets: str) -> None:
    config = RunConfig(model=f"{plugin_nets}:tiny_net", split=5)
    model = make_model(config, (1, 12, 12), 4)
    mine = fingerprint(device_part(model, resolve_plan(config, model, (1, 12, 12)).devices[0].split), (1, 12, 12), 4)
    assert differences(mine, mine) == []
    wide = RunConfig(model=f"{plugin_nets}:wide_net", split=5)
    other = make_model(wide, (1, 10, 10), 4)
    theirs = fingerprint(device_part(other, resolve_plan(wide, other, (1, 10, 10)).devices[0].split), (1, 10, 10), 4)
    found = differences(mine, theirs)
    assert found[0] == "samples of shape: the server's [1, 12, 12], the device's [1, 10, 10]"
    assert "tensor '0.weight': the server's float32 [6, 1, 3, 3], the device's float32 [12, 1, 3, 3]" in found
    assert differences(mine, None) == ["it sent no fingerprint of its model part with READY"]


def _serve(config: RunConfig) -> tuple[str, threading.Thread, dict[str, Any]]:
    server = Server(prepare(config), progress=False)
    address = f"127.0.0.1:{server.listen('127.0.0.1:0', insecure=True)}"
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["metrics"] = server.run()
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return address, thread, result


def _device(address: str, device: int, path: Path, *flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(SRC)])}
    command = [
        sys.executable,
        "-m",
        "pipelearn",
        "device",
        "--insecure",
        "--server",
        address,
        "--id",
        str(device),
        *flags,
    ]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_device_whose_plugin_differs_from_the_servers_is_refused(small_config, plugin_nets, tmp_path):
    # device 1 has another version of the same module: the same names, a wider network
    skewed = tmp_path / "skewed"
    skewed.mkdir()
    (skewed / "plugin_nets.py").write_text((TESTS / "plugin_nets.py").read_text() + "\ntiny_net = wide_net\n")
    flags = ("--model", f"{plugin_nets}:tiny_net", "--dataset", f"{plugin_nets}:tiny_data")
    config = small_config(model=flags[1], dataset=flags[3], split=3, samples_per_device=40, test_samples=None)
    address, thread, result = _serve(config)
    honest, other = _device(address, 0, TESTS, *flags), _device(address, 1, skewed, *flags)
    _, complaint = other.communicate(timeout=120)
    thread.join(120)
    assert honest.wait(60) == 0
    assert other.returncode != 0
    assert "tensor '0.weight': the server's float32 [6, 1, 3, 3], the device's float32 [12, 1, 3, 3]" in complaint
    metrics = result["metrics"]
    assert metrics["failed_devices"] == [1]
    assert "does not train what the server expects" in metrics["device"][1]["error"]
    assert metrics["device"][0]["error"] is None and metrics["device"][0]["busy_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ((), "start this device with --model plugin_nets:tiny_net"),
        (("--model", "plugin_nets:wide_net"), "this device was started with --model plugin_nets:wide_net"),
    ],
)
def test_a_device_refuses_a_plan_naming_a_plugin_it_was_not_given(small_config, plugin_nets, flags, words):
    config = small_config(model=f"{plugin_nets}:tiny_net", devices=1, split=3)
    address, thread, result = _serve(config)
    device = _device(address, 0, TESTS, *flags)
    _, complaint = device.communicate(timeout=120)
    thread.join(120)
    assert device.returncode != 0 and words in complaint
    assert isinstance(result["error"], PeerError) and words in str(result["error"])
