"""The trace of a pipelearn run shows the pipeline: upload, device compute and server compute at the same time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelearn.runtime.launch import run_local

pytestmark = pytest.mark.slow


def _spans(trace: dict, track_process: str, track_thread: str) -> dict[str, tuple[float, float]]:
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    return {
        e["name"]: (e["ts"], e["ts"] + e["dur"])
        for e in trace["traceEvents"]
        if e["ph"] == "X" and names[e["pid"]] == track_process and threads[(e["pid"], e["tid"])] == track_thread
    }


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_upload_overlaps_the_next_forward_and_the_server_work_on_the_one_before(small_config):
    # One device whose forward passes take about as long as an upload of 10 samples (250 kB at 13 Mbit/s, 0.15 s),
    # so that every resource is busy at once. Every span below comes from the recorded trace.
    config = small_config(
        devices=1,
        split=1,
        batch_size=40,
        microbatches=4,
        samples_per_device=120,
        device_slowdown=40.0,
        up_mbps=13.0,
        down_mbps=100.0,
        latency_ms=0.0,
    )
    run_local(config, progress=False)
    trace = json.loads((Path(config.out) / "trace.json").read_text())
    forward = _spans(trace, "device0", "compute")
    upload = _spans(trace, "device0", "uplink")
    server = _spans(trace, "server", "compute")
    witnessed = []
    for i in range(3):
        for m in range(1, 3):
            up = upload[f"d0.uplink.a.i{i}m{m}"]
            if _overlap(up, forward[f"d0.device.F.i{i}m{m + 1}"]) and _overlap(up, server[f"d0.server.T.i{i}m{m - 1}"]):
                witnessed.append((i, m))
    assert witnessed, "no upload overlapped both the next forward pass and the server's work on the one before"
