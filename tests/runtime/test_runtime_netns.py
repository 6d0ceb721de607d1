"""Runs with the server and devices as hosts in network namespaces, links shaped by the kernel; rate schedules.

The tests that make namespaces skip, saying why, where this machine does not allow them (not root, no iproute2).
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelearn import cli
from pipelearn.plan import RunPlan, fixed_setups, schedule_for
from pipelearn.runtime import launch, netns
from pipelearn.runtime.launch import run_local
from pipelearn.runtime.netns import NetnsError, Network
from pipelearn.runtime.shaper import shape
from pipelearn.schedule import Resource
from pipelearn.transport.rates import RateSchedule

# namespaces and their links are the machine's, not this process's: one worker at a time makes them
pytestmark = pytest.mark.xdist_group("netns")


def _why_not() -> str | None:
    reason = netns.unavailable_reason()
    if reason is not None:
        return reason
    try:
        with Network(1) as network:
            shape(*network.uplink(0), 10.0, shaped=False)
    except NetnsError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def namespaces() -> None:
    """Skip where this machine cannot make network namespaces, saying why."""
    reason = _why_not()
    if reason is not None:
        pytest.skip(f"network namespaces are not available here: {reason}")


def _namespaces(pid: int) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(f"pl{pid}-")]


def _root_links() -> set[str]:
    return {
        line.split(":")[1].strip()
        for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
    }


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def nothing_left_behind(namespaces: None) -> Iterator[None]:
    """Check that the test leaves no namespace of this process, no interface outside and no device process."""
    links = _root_links()
    yield
    assert _namespaces(os.getpid()) == []
    assert _root_links() == links
    assert _children(os.getpid()) == []


# --- without namespaces: a clear message ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        (lambda mp: mp.setattr(os, "geteuid", lambda: 1000), "needs root, and this process runs as user id 1000"),
        (lambda mp: mp.setattr(sys, "platform", "darwin"), "a Linux feature, and this is darwin"),
        (lambda mp: mp.setattr(netns.shutil, "which", lambda c: None if c == "tc" else "/bin/" + c), "tc (from"),
    ],
)
def test_without_namespaces_the_message_says_why_and_how_to_run_without(
    patch: Callable[[pytest.MonkeyPatch], None], words: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # every check but the one under test passes, whoever runs the tests and on whatever system
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    monkeypatch.setattr(netns.shutil, "which", lambda command: "/bin/" + command)
    patch(monkeypatch)
    with pytest.raises(NetnsError, match="drop --netns to shape the links in user space") as info:
        Network(2)
    assert words in str(info.value)
    # the command line says so at once, before loading any data, and exits 2
    assert cli.main(["run", "--netns", "--dataset", "no-such-data"]) == 2
    err = capsys.readouterr().err
    assert words in err and "drop --netns" in err


# --- the namespaces themselves -------------------------------------------------------------------------------------


def _ip(namespace: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", namespace, *args], capture_output=True, text=True, check=True).stdout


def test_each_host_has_its_own_namespace_and_address_and_all_go_away(nothing_left_behind: None) -> None:
    with Network(2) as network:
        assert sorted(_namespaces(os.getpid())) == sorted([network.server, *network.devices])
        assert f"inet {network.server_address}/24" in _ip(network.server, "addr", "show", "br0")
        for d, namespace in enumerate(network.devices):
            assert f"inet {network.device_address(d)}/24" in _ip(namespace, "addr", "show", "eth0")
            assert "default" not in _ip(namespace, "route")  # no way out of the namespace
            shape(*network.uplink(d), 10.0, shaped=False)
            assert "htb" in subprocess.run(["tc", "-n", namespace, "qdisc"], capture_output=True, text=True).stdout
        assert "default" not in _ip(network.server, "route")
        assert network.device_address(1) != network.device_address(0) != network.server_address
    network.remove()  # again: nothing to do


def test_an_error_inside_removes_everything(nothing_left_behind: None) -> None:
    with pytest.raises(KeyboardInterrupt), Network(1):
        raise KeyboardInterrupt


# --- runs ----------------------------------------------------------------------------------------------------------


def _on_track(events: list[dict[str, Any]], track: str) -> list[dict[str, Any]]:
    """The complete events of one track ("device0/uplink") of a trace, in the order they started."""
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["name"] == "thread_name"}
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    named = [e for e in events if e["ph"] == "X" and f"{processes[e['pid']]}/{threads[(e['pid'], e['tid'])]}" == track]
    return sorted(named, key=lambda e: e["ts"])


def _rates(metrics: dict[str, Any], events: list[dict[str, Any]], track: str) -> list[tuple[float, float]]:
    """(start in seconds from training start, Mbit/s) of each transfer on a track of the trace."""
    return [(e["ts"] / 1e6, e["args"]["bytes"] * 8 / e["dur"]) for e in _on_track(events, track) if e["dur"] > 0]


def _transfers(events: list[dict[str, Any]], track: str) -> list[tuple[float, float, int]]:
    """(start and end in seconds from training start, bytes) of each transfer on a track of the trace, in order."""
    return [(e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6, e["args"]["bytes"]) for e in _on_track(events, track)]


@pytest.mark.slow
def test_a_netns_run_is_shaped_by_the_kernel_and_leaves_nothing_behind(small_config, nothing_left_behind) -> None:
    config = small_config(netns=True, up_mbps=8.0, down_mbps=16.0, latency_ms=5.0, epochs=1)
    metrics = run_local(config, progress=False)
    assert metrics["shaper"] == "kernel" and math.isfinite(metrics["train_loss"][0])
    assert metrics["netns"]["server"] == "10.210.0.1"
    assert metrics["netns"]["devices"] == ["10.210.0.2", "10.210.0.3"]
    assert metrics["failed_devices"] == []
    assert json.loads((Path(config.out) / "metrics.json").read_text())["netns"] == metrics["netns"]
    # every scheduled transfer was timed where it arrived; the kernel held each link to its rate
    events = json.loads((Path(config.out) / "trace.json").read_text())["traceEvents"]
    schedule = schedule_for(config, RunPlan(fixed_setups(config, [2, 2], [3, 3])), [40, 40])
    for d in range(2):
        for direction, mbps in (("uplink", 8.0), ("downlink", 16.0)):
            lane = schedule.lane(Resource.UPLINK if direction == "uplink" else Resource.DOWNLINK, d)
            assert [e["name"] for e in _on_track(events, f"device{d}/{direction}")] == [str(a.key) for a in lane]
            rates = [r for _, r in _rates(metrics, events, f"device{d}/{direction}")]
            assert 0.7 * mbps < statistics.median(rates) < 1.15 * mbps, (direction, rates)


@pytest.mark.slow
def test_a_failed_run_leaves_nothing_behind(small_config, nothing_left_behind, monkeypatch) -> None:
    # devices that die at once: the server gives up waiting for them, and the run fails
    monkeypatch.setattr(launch, "device_command", lambda *_: [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match=r"devices \[0, 1\] did not join within 3 s"):
        run_local(small_config(netns=True, timeout_s=3.0), progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_leaves_nothing_behind(signum: int, namespaces: None, tmp_path: Path) -> None:
    links = _root_links()
    flags = "--dataset synthetic --no-batchnorm --devices 2 --epochs 50 --samples-per-device 40 --batch-size 20"
    run = subprocess.Popen(
        [sys.executable, "-m", "pipelearn", "run", "--netns", *flags.split(), "--up-mbps", "1", "--out", str(tmp_path)],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal, not a background job
        stderr=subprocess.PIPE,
        text=True,
    )
    hosts: list[str] = []
    deadline = time.time() + 90
    while time.time() < deadline and len(hosts) < 3:  # wait for the server and both devices to run
        time.sleep(0.2)
        hosts = [
            pid
            for namespace in _namespaces(run.pid)
            for pid in subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
        ]
    assert len(hosts) == 3, "the run did not start its server and devices in time"
    run.send_signal(signum)
    _, err = run.communicate(timeout=60)
    assert run.returncode != 0
    assert _namespaces(run.pid) == []
    assert _root_links() == links
    assert not [pid for pid in hosts if Path(f"/proc/{pid}").exists()], err


@pytest.mark.slow
@pytest.mark.parametrize("kernel", [False, True], ids=["user space", "kernel"])
def test_an_uplink_that_drops_from_10_to_2_mbits_midway(small_config, kernel: bool, request) -> None:
    # one device whose epochs are mostly uplink: about 150 kB each (activations and weights), 0.12 s at 10 Mbit/s
    # and 0.6 s at 2 Mbit/s; the downlink is unlimited. Its first transfer leaves within milliseconds of the start
    # of training, so the first rate carries some; the eight epochs take seconds, so the second carries the rest.
    if kernel:
        request.getfixturevalue("nothing_left_behind")
    change_s = 1.0
    config = small_config(
        netns=kernel,
        devices=1,
        network="unlimited",
        up_schedule=[[0, 10], [change_s, 2]],
        batch_size=4,
        microbatches=2,
        samples_per_device=8,
        epochs=8,
        test_samples=50,
    )
    metrics = run_local(config, progress=False)
    assert metrics["device"][0]["uplink_mbps"] == [[0.0, 10.0], [change_s, 2.0]]
    trace = json.loads((Path(config.out) / "trace.json").read_text())["traceEvents"]
    transfers = _transfers(trace, "device0/uplink")
    schedule = schedule_for(config, RunPlan(fixed_setups(config, [2], [2])), [8])
    assert len(transfers) == len(schedule.lane(Resource.UPLINK, 0))  # every transfer of the run was timed
    assert sum(b for *_, b in transfers) == metrics["device"][0]["bytes_up"]
    # the kernel's rate changes once it is told to, never before; the user-space link at the scheduled time
    drop_s = change_s
    if kernel:
        [change] = metrics["netns"]["rate_changes"]
        assert change["device"] == 0 and change["direction"] == "up" and change["mbps"] == 2.0
        assert change["applied_s"] >= change_s
        drop_s = change["applied_s"]
    before = [b * 8 / (end - start) / 1e6 for start, end, b in transfers if end <= change_s and end > start]
    after = [b * 8 / (end - start) / 1e6 for start, end, b in transfers if start >= drop_s and end > start]
    assert before and after, f"no transfer fell wholly on one side of the drop: {transfers}"
    if kernel:  # timed on arrival: near each rate, and far from the other
        assert 6 < statistics.median(before) < 12, before
        assert 1.4 < statistics.median(after) < 2.8, after
    else:  # paced by the schedule: each transfer's end is its bytes at the rates in force
        rates = RateSchedule.from_mbps(((0.0, 10.0), (change_s, 2.0)))  # the trace's 0 s is training start
        for start, end, b in transfers:
            assert end == pytest.approx(rates.finish(start, b), abs=1e-5), (start, end, b)
        assert before == pytest.approx([10.0] * len(before), rel=1e-4)  # the trace keeps microseconds
        assert after == pytest.approx([2.0] * len(after), rel=1e-4)
    # the rate drawn as a counter
    counters = [(e["ts"] / 1e6, e["args"]["Mbit/s"]) for e in trace if e["ph"] == "C" and e["name"] == "uplink Mbit/s"]
    assert counters == [(0.0, 10.0), (change_s, 2.0), (pytest.approx(metrics["train_time_s"]), 2.0)]
