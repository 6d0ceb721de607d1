"""Devices lost mid-iteration (killed, or frozen until the deadline trips) are dropped, and one may come back."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from pipelearn.runtime.server import Server, prepare
from pipelearn.training import optimizer_tensors

pytestmark = pytest.mark.slow

# With a 2 Mbit/s uplink, one 7-sample activation of VGG5 split at 2 takes about 0.2 s: an iteration lasts long
# enough for a test to catch a device in the middle of one.
SLOW_UPLINK = {"up_mbps": 2.0}


def _start(
    config: Any, state: Path | None = None
) -> tuple[Server, str, threading.Thread, dict[str, Any], list[subprocess.Popen[bytes]]]:
    """A server in this process and its devices as processes (keeping their state in `state`/N if given); training
    starts once every device has joined."""
    server = Server(prepare(config), progress=False)
    address = f"127.0.0.1:{server.listen('127.0.0.1:0', insecure=True)}"
    devices = [_device(address, d, state) for d in range(config.devices)]
    # process start-up on a busy machine may take longer than the short deadlines some tests set
    _until(lambda: len(server.sessions) == config.devices, "every device has joined")
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(metrics=server.run()), daemon=True)
    thread.start()
    return server, address, thread, result, devices


def _device(address: str, device: int, state: Path | None = None, **kwargs: Any) -> subprocess.Popen[Any]:
    disk = ["--state-dir", str(state / str(device))] if state is not None else []
    return subprocess.Popen(
        [sys.executable, "-m", "pipelearn", "device", "--insecure", "--server", address, "--id", str(device), *disk],
        **kwargs,
    )


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def _server_trained(server: Server, prefix: str) -> bool:
    return any(e.name.startswith(prefix) for e in list(server.recorder.events))


def _finite_model(out: str) -> dict[str, torch.Tensor]:
    weights = load_file(f"{out}/model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    return weights


def _lose_device_1(small_config: Any, how: signal.Signals, timeout_s: float) -> dict[str, Any]:
    config = small_config(mode="pipelearn", epochs=2, timeout_s=timeout_s, **SLOW_UPLINK)
    server, _, thread, result, devices = _start(config)
    try:
        _until(lambda: _server_trained(server, "d1.server.T.i0m0"), "device 1 is in its first iteration")
        os.kill(devices[1].pid, how)
        thread.join(120)
        assert not thread.is_alive()
        assert devices[0].wait(60) == 0
    finally:
        for p in devices:
            if p.poll() is None:
                p.kill()
                p.wait()
    metrics = result["metrics"]
    assert metrics["failed_devices"] == [1]
    assert [(e["device"], e["round"]) for e in metrics["dropped"]] == [(1, 0)]
    assert metrics["dropped"][0]["time_s"] > 0 and metrics["dropped"][0]["reason"]
    assert metrics["rejoined"] == []
    assert metrics["device"][0]["error"] is None and metrics["device"][0]["busy_s"] > 0
    _finite_model(config.out)
    return metrics


def test_a_device_killed_mid_iteration_is_dropped_and_the_run_completes(small_config):
    metrics = _lose_device_1(small_config, signal.SIGKILL, timeout_s=60.0)
    assert "disconnected" in metrics["dropped"][0]["reason"] or "broke" in metrics["dropped"][0]["reason"]


def test_a_frozen_device_is_dropped_when_its_deadline_trips_and_the_run_completes(small_config):
    metrics = _lose_device_1(small_config, signal.SIGSTOP, timeout_s=10.0)
    reason = metrics["dropped"][0]["reason"]
    assert "unreachable" in reason or "sent nothing" in reason  # no heartbeat, or past its deadline


def test_a_killed_device_rejoins_at_the_next_round_with_the_global_model(small_config, caplog):
    # 2 iterations an epoch, FedAvg after every iteration: 4 rounds; device 1 rejoins in the middle of epoch 0
    caplog.set_level(logging.INFO, logger="pipelearn")
    config = small_config(mode="pipelearn", epochs=2, aggregate_every=1, **SLOW_UPLINK)
    server, address, thread, result, devices = _start(config)
    try:
        _until(lambda: _server_trained(server, "d1.server.T.i0m0"), "device 1 is in its first iteration")
        os.kill(devices[0].pid, signal.SIGSTOP)  # hold round 0 open until device 1 is back
        os.kill(devices[1].pid, signal.SIGKILL)
        _until(lambda: server.membership.is_out(1), "the server drops device 1")
        devices.append(_device(address, 1, stderr=subprocess.PIPE, text=True))  # no terminal: a plain log
        _until(lambda: bool(server.membership.rejoined), "device 1 rejoins")
        os.kill(devices[0].pid, signal.SIGCONT)
        thread.join(120)
        assert not thread.is_alive()
        assert devices[0].wait(60) == 0 and devices[2].wait(60) == 0
    finally:
        for p in devices:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()
    metrics = result["metrics"]
    assert [(e["device"], e["round"]) for e in metrics["dropped"]] == [(1, 0)]
    assert [(e["device"], e["round"]) for e in metrics["rejoined"]] == [(1, 1)]
    assert metrics["rejoined"][0]["time_s"] >= metrics["dropped"][0]["time_s"]
    assert metrics["device"][1]["busy_s"] > 0  # the timeline of the rejoined process came back at the end
    trained = [e.name for e in server.recorder.events if e.name.startswith("d1.server.T.")]
    for iteration in (1, 2, 3):  # every micro-batch of the rounds after its return, once each
        assert sorted(n for n in trained if f".i{iteration}m" in n) == [
            f"d1.server.T.i{iteration}m{m}" for m in range(3)
        ]
    aggregations = [e for e in server.recorder.events if ".A." in e.name]
    assert len(aggregations) == 4
    _finite_model(config.out)
    assert Path(config.out, "checkpoint.json").exists()
    # the server's log: each join with its address and plan, the drop, the new connection and the rejoin
    said = [r.getMessage() for r in caplog.records if r.name == "pipelearn.server"]
    joins = [
        m for m in said if re.fullmatch(r"device \d joined from ipv4:127\.0\.0\.1:\d+: split 2, 3 micro-batches", m)
    ]
    assert sorted(m.split()[1] for m in joins) == ["0", "1"]
    drop = next(i for i, m in enumerate(said) if m.startswith("device 1 failed in round 0 and was dropped"))
    back = said.index(next(m for m in said if m.startswith("device 1 connected again from ipv4:127.0.0.1:")))
    assert drop < back < said.index("device 1 rejoined; it takes part again from round 1")
    rounds = [m for m in said if m.startswith("round ")]
    assert [m.split(",")[0].split(";")[0] for m in rounds] == [f"round {r}/4" for r in (1, 2, 3, 4)]
    assert "test accuracy" in rounds[-1]  # the last round is evaluated
    # the rejoined device's own log, on a pipe: admission, training from round 2 (of 1..4), each round, the end
    log = devices[2].stderr.read()
    assert "\r" not in log
    lines = log.splitlines()
    assert lines[0] == f"device: connecting to {address} as device 1 (plain text)"
    assert "device: admitted as device 1 of 2: pipelearn, split 2, 3 micro-batches" in lines
    assert "device: training 40 samples from round 2/4" in lines
    assert [line for line in lines if line.endswith(" done")] == [f"device: round {r}/4 done" for r in (2, 3, 4)]
    assert lines[-1] == "device: done: the server ended the run"


def _norm(tensors: dict[str, torch.Tensor]) -> float:
    return sum(float(t.double().square().sum()) for t in tensors.values()) ** 0.5


def test_a_restarted_device_rejoins_with_the_optimizer_state_of_its_last_finished_round(small_config, tmp_path):
    # 4 rounds; device 1 finishes round 0, is killed in round 1 and comes back, with its disk, for rounds 2 and 3;
    # device 0, frozen meanwhile, must outlast a busy machine's start of a new device process
    patience = {"timeout_s": 180.0, "liveness_s": 180.0}
    config = small_config(mode="pipelearn", epochs=2, aggregate_every=1, **SLOW_UPLINK, **patience)
    state = tmp_path / "disks"
    server, address, thread, result, devices = _start(config, state)
    restored: dict[str, Any] = {}
    reset = server.aggregator.reset

    def reset_and_note(device: int) -> int | None:
        restore = reset(device)
        replica = server.aggregator.replicas[device]
        restored.update(round=restore, replica=optimizer_tensors(replica.optimizer, replica.part))
        restored["snapshot"] = server.aggregator.optimizer_states[device]
        return restore

    server.aggregator.reset = reset_and_note  # type: ignore[method-assign]
    try:
        _until(lambda: _server_trained(server, "d1.server.T.i1m0"), "device 1 is in round 1")
        os.kill(devices[0].pid, signal.SIGSTOP)  # hold round 1 open until device 1 is back
        os.kill(devices[1].pid, signal.SIGKILL)
        _until(lambda: server.membership.is_out(1), "the server drops device 1")
        (saved,) = (state / "1").glob("optimizer-*-round0.safetensors")  # what it kept of round 0
        kept = _norm({k: v for k, v in load_file(saved).items() if k.startswith("optimizer/")})
        devices.append(_device(address, 1, state))
        _until(lambda: bool(server.membership.rejoined), "device 1 rejoins")
        os.kill(devices[0].pid, signal.SIGCONT)
        thread.join(120)
        assert not thread.is_alive()
        assert devices[0].wait(60) == 0 and devices[2].wait(60) == 0
    finally:
        for p in devices:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()
    metrics = result["metrics"]
    assert [(e["device"], e["round"]) for e in metrics["dropped"]] == [(1, 1)]
    assert [(e["device"], e["round"]) for e in metrics["rejoined"]] == [(1, 2)]
    # the device took back its momentum of round 0 from its disk ...
    (event,) = [e for e in server.recorder.events if e.name == "d1.optimizer"]
    assert event.args["restored_round"] == 0 and kept > 0
    assert event.args["norm"] == pytest.approx(kept, rel=1e-9)
    # ... and its server replica the momentum it had after that round, not what it gathered in round 1
    assert restored["round"] == 0 and restored["replica"].keys() == restored["snapshot"].keys() != set()
    assert all(torch.equal(restored["replica"][k], v) for k, v in restored["snapshot"].items())
    _finite_model(config.out)
