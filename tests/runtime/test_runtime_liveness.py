"""A slow device is not a dead one: slow devices finish, frozen ones are dropped for silence, stuck ones for no
progress, each with a message that says which."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import torch

from pipelearn.config import DeviceOverride, RunConfig
from pipelearn.data.dealing import data_shape
from pipelearn.events import Event, now
from pipelearn.models.parts import device_part, make_model
from pipelearn.planner.resolve import resolve_plan
from pipelearn.runtime.agreement import fingerprint
from pipelearn.runtime.checks import device_threads
from pipelearn.runtime.server import Server, prepare
from pipelearn.training import make_optimizer, scaled_loss
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.inbox import Inbox
from pipelearn.transport.link import Outbox
from pipelearn.transport.service import envelope, open_session

pytestmark = pytest.mark.slow

# A device builds its optimizer once training starts, and torch imports its compiler stack (seconds, on a busy
# machine) when the first optimizer is built: these devices import it before joining, as a warm-up would, so that
# the short timeout_s of these tests is held against training and not against that import.
_WARM_DEVICE = "import sys, torch._dynamo; from pipelearn.cli import main; sys.exit(main(sys.argv[1:]))"


def _device(address: str, device: int, warm: bool = True) -> subprocess.Popen[bytes]:
    command = ["-c", _WARM_DEVICE] if warm else ["-m", "pipelearn"]
    flags = ["device", "--insecure", "--server", address, "--id", str(device)]
    return subprocess.Popen([sys.executable, *command, *flags])


def _slowdown_for(config: RunConfig, action_s: float) -> float:
    """The device slowdown at which one fl training step of this run takes about action_s on this machine."""
    shape, classes = data_shape(config)
    model = make_model(config, shape, classes)
    optimizer = make_optimizer(model, config)
    assert optimizer is not None
    x, y = torch.randn(config.batch_size, *shape), torch.randint(0, classes, (config.batch_size,))
    threads = torch.get_num_threads()
    torch.set_num_threads(device_threads(config))  # as a device computes: its CPU time is its thread's
    try:
        seconds = []
        for _ in range(6):
            cpu = time.thread_time()
            scaled_loss(model(x), y, config.batch_size).backward()
            optimizer.step()
            seconds.append(time.thread_time() - cpu)
    finally:
        torch.set_num_threads(threads)
    return max(1.0, action_s / max(statistics.median(seconds[1:]), 1e-4))


def _until(condition: Any, limit_s: float = 60.0) -> None:
    """Poll until condition() holds (a guard against hanging, not a measurement)."""
    give_up = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < give_up, "the run never got there"
        time.sleep(0.02)


class Run:
    """A server in a thread, started once every device has joined, so that joining is not part of a deadline."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.server = Server(prepare(config), progress=False)
        self.address = f"127.0.0.1:{self.server.listen('127.0.0.1:0', insecure=True)}"
        self.result: dict[str, Any] = {}
        self.thread = threading.Thread(target=lambda: self.result.update(metrics=self.server.run()), daemon=True)

    def start_when_joined(self) -> None:
        _until(lambda: len(self.server.sessions) == self.config.devices)
        self.thread.start()

    def metrics(self) -> dict[str, Any]:
        self.thread.join(120)
        assert not self.thread.is_alive()
        return self.result["metrics"]


def test_an_fl_device_computing_for_many_timeouts_between_messages_finishes(small_config):
    # 30 iterations of 5 samples, each slowed down to about 0.2 s on this machine, keep device 1 computing for
    # about 6 timeout_s without sending; each action on its own takes less than timeout_s, the floor of a deadline
    # before anything is measured. Device 0, not slowed down, then waits on the server, which waits on device 1, for
    # about as long.
    shape = {"mode": "fl", "samples_per_device": 150, "batch_size": 5}
    config = small_config(
        **shape,
        device_slowdown=_slowdown_for(small_config(**shape), 0.2),
        device_overrides={0: DeviceOverride(device_slowdown=1.0)},
        timeout_s=1.0,
        heartbeat_s=0.2,
        liveness_s=2.0,
    )
    run = Run(config)
    devices = [_device(run.address, d) for d in range(2)]
    run.start_when_joined()
    metrics = run.metrics()
    assert [p.wait(60) for p in devices] == [0, 0]
    assert metrics["failed_devices"] == []
    events = run.server.recorder.events

    def compute(d: int, op: str) -> Event:
        return next(e for e in events if e.track == f"device{d}/compute" and f".{op}." in e.name)

    # what the test is about did happen: device 1 went that long without a message ...
    assert compute(1, "W").start - compute(1, "L").end > 3 * config.timeout_s
    # ... and device 0 waited that long for the server, busy waiting on device 1, before aggregation
    aggregate = next(e for e in events if e.name == "coord.server.A.r0")
    assert aggregate.start - compute(0, "W").end > 2 * config.timeout_s


def test_a_frozen_device_is_dropped_for_silence_within_the_liveness_limit(small_config):
    # 20 iterations of about 0.2 s each on this machine: the device is still training when it is frozen
    shape = {"mode": "fl", "samples_per_device": 100, "batch_size": 5}
    config = small_config(
        **shape,
        device_slowdown=_slowdown_for(small_config(**shape), 0.2),
        timeout_s=30.0,
        heartbeat_s=0.2,
        liveness_s=1.5,
    )
    run = Run(config)
    honest, frozen = _device(run.address, 0, warm=False), _device(run.address, 1, warm=False)
    try:
        run.start_when_joined()
        _until(lambda: run.server.sessions[1].inbox.state.done >= 2)  # it is training, and its server lane waits
        os.kill(frozen.pid, signal.SIGSTOP)
        stopped = now()
        _until(lambda: run.server.membership.is_out(1))
        # dropped for silence, well before any progress deadline (at least timeout_s) could have dropped it
        assert now() - stopped < config.timeout_s / 3
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        frozen.kill()
        frozen.wait(30)
    metrics = run.metrics()
    assert honest.wait(60) == 0
    assert metrics["failed_devices"] == [1]
    error = metrics["device"][1]["error"]
    assert "device 1 is unreachable" in error and "not even a heartbeat" in error and "liveness_s 1.5" in error
    assert metrics["device"][0]["error"] is None


class Stuck:
    """A hand-driven device over real gRPC that joins, takes its weights, then only sends heartbeats."""

    def __init__(self, address: str, device: int, heartbeat_s: float) -> None:
        self.outbox = Outbox()
        self.channel, replies = open_session(address, iter(self.outbox))  # plain text: the Run serves insecure
        self.inbox = Inbox(replies, "the server", 30.0)
        self.outbox.beat(heartbeat_s, device)
        self.outbox.control(envelope(pb.HELLO, device, clock=now()))

    def play(self, device: int, samples: int, config: Any) -> None:
        self._take(pb.PLAN)
        model = make_model(config, (1, 28, 28), 10)
        honest = fingerprint(
            device_part(model, resolve_plan(config, model, (1, 28, 28)).devices[device].split), (1, 28, 28), 10
        )
        self.outbox.control(envelope(pb.READY, device, text=json.dumps({"samples": samples, "fingerprint": honest})))
        self._take(pb.START)
        self._take(pb.WEIGHTS)

    def _take(self, kind: int) -> None:
        message = self.inbox.take()
        assert message.kind == kind, pb.Kind.Name(message.kind)

    def close(self) -> None:
        self.outbox.close()
        self.channel.close()


def test_a_device_alive_but_stuck_is_warned_about_then_dropped_after_its_deadline(small_config, capfd):
    config = small_config(mode="fl", timeout_s=2.0, heartbeat_s=0.1, liveness_s=1.0)
    run = Run(config)
    honest = _device(run.address, 0)
    stuck = Stuck(run.address, 1, config.heartbeat_s)
    try:
        run.start_when_joined()
        stuck.play(1, 40, config)
        _until(lambda: run.server.membership.is_out(1))
    finally:
        stuck.close()
    metrics = run.metrics()
    assert honest.wait(60) == 0
    assert metrics["failed_devices"] == [1]
    error = metrics["device"][1]["error"]
    assert error.startswith("device 1 is alive but stuck: no progress towards WEIGHTS round 0 iteration -1")
    assert "past its deadline of 2 s (timeout_s)" in error
    assert run.server.sessions[1].inbox.state.beats > 10  # its heartbeats kept coming all along
    warning = capfd.readouterr().err
    assert "warning: device 1 is" in warning and "late: no progress towards WEIGHTS round 0" in warning
    assert warning.index("warning: device 1") < warning.index("device 1 failed in round 0 and was dropped")
