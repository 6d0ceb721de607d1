"""Tests for the metrics: the Recorder, busy and idle accounting, per-epoch times and losses, Chrome traces."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelearn.config import RunConfig
from pipelearn.events import Event, Recorder, compute_track, link_track
from pipelearn.metrics.accounting import busy_seconds, compression_totals, epoch_times, track_usage, train_losses
from pipelearn.metrics.results import write_results
from pipelearn.metrics.trace import trace_events, write_trace
from pipelearn.plan import RunPlan, fixed_setups

# --- busy and idle -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("intervals", "start", "end", "busy"),
    [
        ([], 0, 10, 0),
        ([(1, 2), (3, 5)], 0, 10, 3),  # disjoint
        ([(3, 5), (1, 2)], 0, 10, 3),  # unsorted
        ([(1, 4), (2, 6)], 0, 10, 5),  # overlapping
        ([(1, 10), (2, 3), (4, 5)], 0, 10, 9),  # nested
        ([(1, 2), (2, 3)], 0, 10, 2),  # touching
        ([(2, 2)], 0, 10, 0),  # empty
        ([(-5, 2), (8, 20)], 0, 10, 4),  # clipped at both ends
        ([(-5, -1)], 0, 10, 0),  # wholly before
        ([(12, 15)], 5, 10, 0),  # wholly after
        ([(6, 7), (12, 15), (11, 30)], 5, 10, 1),  # some after
        ([(-3, 30)], 5, 10, 5),  # covering the window
    ],
)
def test_busy_seconds(intervals: list[tuple[float, float]], start: float, end: float, busy: float) -> None:
    assert busy_seconds(intervals, start, end) == pytest.approx(busy)


def test_busy_seconds_matches_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(300):
        start, end = 0, 20
        intervals = []
        for _ in range(rng.randint(0, 8)):
            lo = rng.randint(-5, 25)
            intervals.append((lo, lo + rng.randint(0, 10)))
        covered = {t for lo, hi in intervals for t in range(lo, hi) if start <= t < end}
        got = busy_seconds(intervals, start, end)
        assert got == len(covered), intervals
        assert 0 <= got <= end - start


def _event(track: str, start: float, end: float, **args: object) -> Event:
    return Event(track, "x", start, end, dict(args))


def test_track_usage_adds_up_to_wall() -> None:
    events = [
        _event("device0/compute", 1, 3),
        _event("device0/compute", 2, 4),
        _event("device0/compute", 9, 15),
        _event("device0/uplink", 0, 10),
        _event("server/compute", 4, 5),
    ]
    usage = track_usage(events, "device0/compute", 0, 10)
    assert usage == {"busy_s": pytest.approx(4), "idle_s": pytest.approx(6)}
    for track in ("device0/compute", "device0/uplink", "server/compute", "device1/compute"):
        u = track_usage(events, track, 0, 10)
        assert u["busy_s"] + u["idle_s"] == pytest.approx(10)
        assert u["busy_s"] >= 0 and u["idle_s"] >= 0
    assert track_usage(events, "device1/compute", 0, 10) == {"busy_s": 0, "idle_s": 10}


def test_epoch_times_sum_to_the_span() -> None:
    start = 100.0
    events = [
        _event("device0/compute", 100, 103, epoch=0),
        _event("device1/compute", 101, 104, epoch=0),
        _event("server/compute", 104, 109, epoch=1),
        _event("device0/uplink", 105, 110, epoch=1),
        _event("device0/compute", 110, 111, epoch=2),
        _event("server/compute", 111, 150),  # no epoch: ignored
        _event("server/compute", 111, 160, epoch=7),  # outside the run: ignored
    ]
    times = epoch_times(events, start, 115.0, 3)
    assert times == pytest.approx([4, 6, 5])  # the last epoch runs to the end of training
    assert sum(times) == pytest.approx(115 - start)


def test_epoch_times_with_an_epoch_ending_before_the_last() -> None:
    # a straggler's epoch-0 event ends after epoch 1's last event: epoch 1 then takes no time, never negative
    events = [_event("d", 0, 8, epoch=0), _event("d", 1, 5, epoch=1), _event("d", 9, 12, epoch=3)]
    times = epoch_times(events, 0.0, 12.0, 4)
    assert times == pytest.approx([8, 0, 0, 4])
    assert all(t >= 0 for t in times)
    assert sum(times) == pytest.approx(12)
    assert epoch_times([], 5.0, 7.0, 2) == [0.0, 2.0]
    assert epoch_times([], 5.0, 7.0, 1) == [2.0]


def test_train_losses() -> None:
    events = [
        _event("server/compute", 0, 1, epoch=0, loss_sum=20.0, samples=10),
        _event("server/compute", 1, 2, epoch=0, loss_sum=10.0, samples=20),
        _event("server/compute", 2, 3, epoch=2, loss_sum=3.0, samples=4),
        _event("device0/compute", 2, 3, epoch=1),  # no loss
    ]
    assert train_losses(events, 3) == pytest.approx([1.0, None, 0.75])  # type: ignore[arg-type]
    assert train_losses([], 2) == [None, None]


# --- recorder ------------------------------------------------------------------------------------------------------


def test_recorder_offset_and_span() -> None:
    recorder = Recorder(offset=-50.0)
    recorder.record("device1/compute", "F", 100.0, 101.5, epoch=0)
    assert recorder.events[0] == Event("device1/compute", "F", 50.0, 51.5, {"epoch": 0})
    before = time.time()
    with recorder.span("server/compute", "T", epoch=1) as args:
        args["loss_sum"] = 2.5
    after = time.time()
    event = recorder.events[1]
    assert event.args == {"epoch": 1, "loss_sum": 2.5}
    assert before - 50.0 <= event.start <= event.end <= after - 50.0


def test_recorder_json_round_trip_keeps_server_clock() -> None:
    device = Recorder(offset=3.0)
    device.record("device0/compute", "B", 1.0, 2.0, epoch=0, bytes=5)
    server = Recorder(offset=1000.0)
    server.extend_json(json.loads(json.dumps(device.to_json())))
    assert server.events == [Event("device0/compute", "B", 4.0, 5.0, {"epoch": 0, "bytes": 5})]


def test_recorder_is_thread_safe() -> None:
    recorder = Recorder()

    def work(i: int) -> None:
        for j in range(200):
            recorder.record(f"device{i}/compute", str(j), j, j + 1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(recorder.events) == 800


def test_track_names() -> None:
    assert compute_track(None) == "server/compute"
    assert compute_track(2) == "device2/compute"
    assert link_track(1, "uplink") == "device1/uplink"


# --- chrome trace --------------------------------------------------------------------------------------------------


def _trace_input() -> list[Event]:
    return [
        Event("device1/compute", "F", 10.5, 10.75, {"epoch": 0}),
        Event("device0/uplink", "a", 10.25, 10.5, {"bytes": 9}),
        Event("server/compute", "T", 11.0, 11.5, {}),
        Event("device0/compute", "F", 10.0, 10.25, {}),
        Event("device0/compute", "B", 12.0, 12.5, {}),
        Event("device1/compute", "odd", 13.0, 12.0, {}),  # negative duration: shown as zero
    ]


def test_trace_has_one_thread_per_track_and_microseconds() -> None:
    events = _trace_input()
    out = trace_events(events, origin=10.0)
    processes = [e for e in out if e["ph"] == "M" and e["name"] == "process_name"]
    threads = [e for e in out if e["ph"] == "M" and e["name"] == "thread_name"]
    complete = [e for e in out if e["ph"] == "X"]
    assert len(out) == len(processes) + len(threads) + len(complete)
    # processes: the server first, then devices
    assert [p["args"]["name"] for p in processes] == ["server", "device0", "device1"]  # type: ignore[index]
    pid = {p["args"]["name"]: p["pid"] for p in processes}  # type: ignore[index]
    assert len(set(pid.values())) == 3
    # one thread per track, each with a distinct id and named for its resource within its process
    tracks = {e.track for e in events}
    assert len(threads) == len(tracks)
    assert len({t["tid"] for t in threads}) == len(tracks)
    thread_of = {}
    for t in threads:
        name = t["args"]["name"]  # type: ignore[index]
        process = next(p for p, i in pid.items() if i == t["pid"])
        thread_of[f"{process}/{name}"] = (t["pid"], t["tid"])
    assert set(thread_of) == tracks
    # complete events: microseconds from the origin, on their track's thread, args kept
    assert len(complete) == len(events)
    for e, x in zip(events, complete, strict=True):
        assert x["name"] == e.name
        assert (x["pid"], x["tid"]) == thread_of[e.track]
        assert x["ts"] == pytest.approx((e.start - 10.0) * 1e6)
        assert x["dur"] == pytest.approx(max(e.end - e.start, 0) * 1e6)
        assert x["cat"] == e.track.split("/")[1]
        assert x["args"] == e.args
    assert complete[0]["ts"] == pytest.approx(500_000) and complete[0]["dur"] == pytest.approx(250_000)
    assert complete[-1]["dur"] == 0


def test_write_trace_is_json(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    write_trace(_trace_input(), path, origin=10.0)
    data = json.loads(path.read_text())
    assert data["displayTimeUnit"] == "ms"
    assert data["traceEvents"] == json.loads(json.dumps(trace_events(_trace_input(), 10.0)))
    assert trace_events([], 0.0) == []


def test_link_rates_become_counter_events() -> None:
    rates = {
        "device0/uplink": ((0.0, 10.0), (30.0, 2.0), (60.0, 10.0), (500.0, 1.0)),
        "device0/downlink": ((0.0, float("inf")),),  # unlimited: nothing to draw
        "device7/uplink": ((0.0, 5.0),),  # a link without events of its own still gets its process
    }
    out = trace_events(_trace_input(), origin=10.0, rates=rates, end=110.0)
    processes = {e["args"]["name"]: e["pid"] for e in out if e["name"] == "process_name"}  # type: ignore[index]
    counters = [e for e in out if e["ph"] == "C"]
    assert [(e["pid"], e["name"], e["ts"], e["args"]) for e in counters] == [
        (processes["device0"], "uplink Mbit/s", 0.0, {"Mbit/s": 10.0}),
        (processes["device0"], "uplink Mbit/s", 30e6, {"Mbit/s": 2.0}),
        (processes["device0"], "uplink Mbit/s", 60e6, {"Mbit/s": 10.0}),
        (processes["device0"], "uplink Mbit/s", 100e6, {"Mbit/s": 10.0}),  # held to the end; 500 s is after it
        (processes["device7"], "uplink Mbit/s", 0.0, {"Mbit/s": 5.0}),
        (processes["device7"], "uplink Mbit/s", 100e6, {"Mbit/s": 5.0}),
    ]
    assert all(e["cat"] == "rate" for e in counters)
    json.loads(json.dumps(out, allow_nan=False))  # valid JSON: no infinities


# --- results -------------------------------------------------------------------------------------------------------


def test_write_results(tmp_path: Path) -> None:
    config = RunConfig(mode="pipelearn", devices=2, epochs=2, split=1, microbatches=3).validate()
    events = [
        Event("device0/compute", "F", 1.0, 2.0, {"epoch": 0}),
        Event("device1/compute", "F", 1.0, 4.0, {"epoch": 0}),
        Event("device0/uplink", "a", 2.0, 3.0, {"epoch": 0, "bytes": 10}),
        Event("server/compute", "T", 3.0, 5.0, {"epoch": 1, "loss_sum": 6.0, "samples": 3}),
    ]
    state = {"w": torch.arange(6.0).reshape(2, 3).t()}
    metrics = write_results(
        tmp_path / "out",
        config,
        events,
        0.0,
        6.0,
        0.5,
        state,
        plan=RunPlan(fixed_setups(config, [1, 1], [3, 3]), predicted_epoch_s=5.5, bound_s=2.5),
        samples=[10, 20],
        bytes_up=[10, 0],
        bytes_down=[3, 4],
        errors={1: "gone"},
    )
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["train_time_s"] == 6.0
    assert metrics["epoch_times_s"] == pytest.approx([4.0, 2.0])
    assert metrics["train_loss"] == [None, 2.0]
    assert metrics["bytes_up"] == 10 and metrics["bytes_down"] == 7
    assert metrics["server"] == {"busy_s": 2.0, "idle_s": 4.0}
    assert metrics["failed_devices"] == [1]
    d0, d1 = metrics["device"]
    assert d0["busy_s"] == 1.0 and d0["idle_s"] == 5.0 and d0["uplink_busy_s"] == 1.0 and d0["error"] is None
    assert d1["busy_s"] == 3.0 and d1["error"] == "gone"
    assert metrics["split"] == [1, 1] and metrics["microbatches"] == [3, 3]
    assert metrics["plan"]["predicted_epoch_s"] == 5.5 and metrics["plan"]["bound_s"] == 2.5
    assert RunPlan.from_dict(metrics["plan"]).microbatches == [3, 3]
    assert metrics["config"]["devices"] == 2
    assert metrics["shaper"] == "user space"
    assert d0["uplink_mbps"] == [[0.0, 10.0]] and d0["downlink_mbps"] == [[0.0, 25.0]]
    trace = json.loads((tmp_path / "out" / "trace.json").read_text())
    assert sum(e["ph"] == "X" for e in trace["traceEvents"]) == len(events)
    assert sum(e["ph"] == "C" for e in trace["traceEvents"]) == 2 * 2 * 2  # two links of two devices, start and end
    assert torch.equal(load_file(str(tmp_path / "out" / "model.safetensors"))["w"], state["w"])


def test_compression_totals_and_per_device_bytes(tmp_path: Path) -> None:
    def flow(codec: str, raw: int, wire: int) -> dict[str, object]:
        return {"codec": codec, "raw_bytes": raw, "wire_bytes": wire}

    per_device = [
        {"up": flow("int8", 400, 100), "down": flow("none", 50, 50)},
        {"up": flow("int8", 800, 220), "down": flow("none", 0, 0)},
    ]
    totals = compression_totals(per_device)
    assert totals["up"] == {"codec": "int8", "raw_bytes": 1200, "wire_bytes": 320, "ratio": 3.75}
    assert totals["down"] == {"codec": "none", "raw_bytes": 50, "wire_bytes": 50, "ratio": 1.0}
    assert compression_totals([{"up": flow("fp16", 0, 0), "down": flow("fp16", 0, 0)}])["up"]["ratio"] is None
    config = RunConfig(devices=2, epochs=1).validate()
    metrics = write_results(
        tmp_path,
        config,
        [],
        0.0,
        1.0,
        0.5,
        {"w": torch.zeros(2)},
        samples=[1, 1],
        bytes_up=[120, 240],
        bytes_down=[60, 10],
        errors={},
        compression=per_device,
        plan=RunPlan(fixed_setups(config, [1, 1], [1, 1])),
    )
    assert metrics["compression"] == totals
    assert [d["compression"] for d in metrics["device"]] == per_device
    assert json.loads((tmp_path / "metrics.json").read_text())["compression"]["up"]["ratio"] == 3.75
