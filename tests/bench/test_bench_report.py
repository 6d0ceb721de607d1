"""`pipelearn report` draws a recorded run's figures from its files alone, without training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelearn.bench.report import report, steady_iteration
from pipelearn.cli import main
from pipelearn.events import Event
from pipelearn.metrics.trace import read_trace, write_trace

EVENTS = [
    Event("server/compute", "d0.server.T.i1m0", 10.30, 10.40, {"epoch": 0}),
    Event("device0/compute", "d0.device.F.i1m0", 10.10, 10.20, {"epoch": 0}),
    Event("device0/uplink", "d0.uplink.a.i1m0", 10.20, 10.30, {"epoch": 0, "bytes": 100}),
    Event("device0/downlink", "d0.downlink.g.i1m0", 10.40, 10.45, {"epoch": 0, "bytes": 100}),
    Event("device0/compute", "d0.device.B.i1m0", 10.45, 10.50, {"epoch": 0}),
    Event("device0/compute", "d0.device.F.i2m0", 10.50, 10.60, {"epoch": 0}),
]


def _recorded_run(root: Path) -> Path:
    root.mkdir()
    metrics = {
        "mode": "pipelearn",
        "model": "vgg5",
        "dataset": "mnist",
        "network": "4g",
        "epochs": 1,
        "batch_size": 10,
        "device": [{"samples": 30}],
    }
    (root / "metrics.json").write_text(json.dumps(metrics))
    write_trace(EVENTS, root / "trace.json", origin=10.0)
    return root


def test_a_trace_reads_back_as_the_events_written(tmp_path: Path) -> None:
    run = _recorded_run(tmp_path / "run")
    events = read_trace(run / "trace.json")
    assert [(e.track, e.name, e.args) for e in events] == [(e.track, e.name, e.args) for e in EVENTS]
    assert [round(e.start, 6) for e in events] == [round(e.start - 10.0, 6) for e in EVENTS]


def test_report_draws_a_timeline_png_from_a_recorded_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _recorded_run(tmp_path / "run")
    assert main(["report", str(run)]) == 0
    png = run / "timeline.png"
    assert capsys.readouterr().out.strip() == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not (run / "accuracy.png").exists()


def test_report_draws_the_accuracy_curve_of_a_run_with_rounds(tmp_path: Path) -> None:
    run = _recorded_run(tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(rounds=[{"round": 0, "time_s": 1.0, "test_accuracy": 0.5}], test_accuracy=0.5, train_time_s=1.0)
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert [p.name for p in report(run)] == ["timeline.png", "accuracy.png"]


def test_the_steady_iteration_is_the_middle_of_the_last_epoch() -> None:
    metrics = {"epochs": 2, "batch_size": 10, "device": [{"samples": 30}, {"samples": 50}]}
    assert steady_iteration(metrics) == 3 + 1


def test_a_directory_without_results_gets_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"neither metrics\.json"):
        report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert "neither metrics.json" in capsys.readouterr().err


def _png_height(png: Path) -> int:
    return int.from_bytes(png.read_bytes()[20:24], "big")


@pytest.mark.slow
def test_a_run_whose_link_rate_changes_is_drawn_whole_with_the_rates_below(tmp_path: Path) -> None:
    steady = _recorded_run(tmp_path / "steady")
    report(steady)
    changing = _recorded_run(tmp_path / "changing")
    metrics = json.loads((changing / "metrics.json").read_text())
    metrics["device"][0].update(uplink_mbps=[[0.0, 10.0], [0.3, 2.0]], downlink_mbps=[[0.0, float("inf")]])
    (changing / "metrics.json").write_text(json.dumps(metrics))
    report(changing)
    assert _png_height(changing / "timeline.png") > _png_height(steady / "timeline.png") + 200  # the rate panel
