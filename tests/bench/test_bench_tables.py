"""A bench's table and figures are drawn from bench.json alone; pipelearn's gains are ratios of measured times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelearn.bench.report import report
from pipelearn.bench.runner import measured_points
from pipelearn.bench.tables import bench_markdown, speedups


def _row(network: str, mode: str, epoch: float, idle: float) -> dict[str, object]:
    return {
        "model": "vgg5",
        "dataset": "mnist",
        "network": network,
        "mode": mode,
        "run_dir": f"vgg5-{network}-{mode}",
        "epoch_time_s": epoch,
        "train_time_s": 2 * epoch,
        "server_idle_s": idle,
        "device_idle_s": idle / 2,
        "bytes_up": 2_000_000,
        "bytes_down": 1_000_000,
        "bound_s": epoch,
        "bound_resource": "device0/uplink",
        "measured_over_bound": 2.0,
        "split": [2, 2],
        "microbatches": [4, 4] if mode == "pipelearn" else [1, 1],
        "predicted_epoch_s": None,
        "test_accuracy": 0.9,
        "failed_devices": [],
    }


ROWS = [_row("4g", "fl", 6.0, 10.0), _row("4g", "sfl", 9.0, 8.0), _row("4g", "pipelearn", 3.0, 2.0)]
BENCH: dict[str, Any] = {
    "settings": {
        "devices": 2,
        "dataset": "mnist",
        "device_slowdown": 4.0,
        "batch_size": 100,
        "seed": 0,
        "epochs": 2,
        "samples_per_device": {"vgg5": 300},
        "plans": "each split mode at its own best plan",
    },
    "runs": ROWS,
    "map": {
        "model": "vgg5",
        "dataset": "mnist",
        "devices": 2,
        "slowdowns": [1.0, 10.0],
        "uplinks_mbps": [2.0, 10.0],
        "over_fl": [[0.5, 1.5], [0.8, 3.0]],
        "over_sfl": [[1.1, 2.0], [1.5, 4.0]],
        "points": [
            {"network": "4g", "slowdown": 4.0, "up_mbps": 10.0, "over_fl": 2.0, "over_sfl": 3.0}
            | {"predicted_over_fl": 1.8, "predicted_over_sfl": 2.9}
        ],
    },
}


def test_speedups_are_the_other_modes_time_over_pipelearns() -> None:
    gains = {g["over"]: g for g in speedups(ROWS)}
    assert gains["fl"]["speedup"] == 2.0 and gains["sfl"]["speedup"] == 3.0
    assert gains["fl"]["server_idle_reduction"] == 5.0 and gains["sfl"]["device_idle_reduction"] == 4.0
    assert "| vgg5 | 4g | sfl | 3.00x | 4.00x | 4.00x |" in bench_markdown(BENCH)


def test_measured_points_sit_at_the_networks_uplink() -> None:
    (point,) = measured_points(ROWS, "vgg5", 4.0)
    where = {"regime": "strong", "network": "4g", "slowdown": 4.0, "up_mbps": 10}
    assert point == where | {"over_fl": 2.0, "over_sfl": 3.0}


def test_each_regimes_points_sit_at_its_own_slowdown_and_are_not_mixed() -> None:
    edge = [
        {**_row("4g", mode, epoch, 1.0), "regime": "edge", "device_slowdown": 40.0}
        for mode, epoch in (("fl", 30.0), ("sfl", 12.0), ("pipelearn", 6.0))
    ]
    strong, far = measured_points([*ROWS, *edge], "vgg5", 4.0)
    assert (strong["regime"], strong["slowdown"], strong["over_fl"]) == ("strong", 4.0, 2.0)
    assert (far["regime"], far["slowdown"], far["over_fl"], far["over_sfl"]) == ("edge", 40.0, 5.0, 2.0)


@pytest.mark.slow
def test_report_draws_a_recorded_bench_without_training(tmp_path: Path) -> None:
    (tmp_path / "bench.json").write_text(json.dumps(BENCH))
    drawn = {p.name for p in report(tmp_path)}
    assert drawn == {
        "bench.md",
        "fig2_epoch_time_vgg5.png",
        "fig3_idle_vgg5.png",
        "map_speedup_over_fl_vgg5.png",
        "map_speedup_over_sfl_vgg5.png",
    }
    for name in drawn - {"bench.md"}:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "speed-up per epoch" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_maps_are_drawn_per_model_and_failed_runs_are_listed(tmp_path: Path) -> None:
    grid = BENCH["map"]
    bench = {k: v for k, v in BENCH.items() if k != "map"} | {
        "maps": {"vgg5": grid, "resnet18": {**grid, "model": "resnet18"}},
        "failed": [{"model": "resnet18", "network": "4g", "mode": "sl", "run_dir": "r", "error": "device 1 died"}],
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    drawn = {p.name for p in report(tmp_path)}
    assert {f"map_speedup_over_{m}_{model}.png" for m in ("fl", "sfl") for model in ("vgg5", "resnet18")} <= drawn
    assert "| resnet18 | 4g | sl | failed: device 1 died |" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_the_bench_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelearn.bench import runner
    from pipelearn.config import RunConfig

    def one_run(config: RunConfig, resume: bool, label: str, progress: bool) -> tuple[dict[str, object], float]:
        if config.mode == "sfl":
            raise RuntimeError("device 1 exited with status 1")
        row = _row(config.network, config.mode, 3.0, 1.0)
        metrics = {
            **row,
            "epoch_times_s": [3.0],
            "device": [{"idle_s": 0.5}],
            "server": {"idle_s": 1.0},
            "bottleneck": {"busy_s": 3.0, "resource": "server"},
            "plan": None,
        }
        return metrics, 4.0

    monkeypatch.setattr(runner, "run_or_keep", one_run)
    monkeypatch.setattr(runner, "speedup_map", lambda config, points: {**BENCH["map"], "points": list(points)})
    plan = runner.BenchPlan(models=("vgg5",), networks=("4g",), modes=("fl", "sfl", "pipelearn"), epochs=1)
    result = runner.bench(RunConfig(devices=2).validate(), plan, tmp_path, progress=False)
    assert [r["mode"] for r in result["runs"]] == ["fl", "pipelearn"]
    assert result["failed"] == [
        {
            "model": "vgg5",
            "network": "4g",
            "mode": "sfl",
            "run_dir": "vgg5-4g-sfl",
            "error": "device 1 exited with status 1",
            "regime": "strong",
            "device_slowdown": 4.0,
        }
    ]
    assert json.loads((tmp_path / "bench.json").read_text())["failed"] == result["failed"]
    assert "failed: device 1 exited" in (tmp_path / "bench.md").read_text()


def test_a_bench_of_two_regimes_labels_each_in_its_table_figures_and_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelearn.bench import runner
    from pipelearn.config import RunConfig

    seen: list[tuple[str, float]] = []
    times = {("strong", "fl"): 2.0, ("strong", "sfl"): 2.2, ("strong", "pipelearn"): 2.4}
    times |= {("edge", "fl"): 20.0, ("edge", "sfl"): 8.0, ("edge", "pipelearn"): 4.0}

    def one_run(config: RunConfig, resume: bool, label: str, progress: bool) -> tuple[dict[str, object], float]:
        regime = Path(config.out).name.split("-")[0] if Path(config.out).name.startswith("edge-") else "strong"
        seen.append((Path(config.out).name, config.device_slowdown))
        row = _row(config.network, config.mode, times[regime, config.mode], 1.0)
        bound = "device0/compute" if config.mode != "pipelearn" else "server/compute"
        metrics = {
            **row,
            "epoch_times_s": [row["epoch_time_s"]],
            "device": [{"idle_s": 0.5}],
            "server": {"idle_s": 1.0},
            "bottleneck": {"busy_s": row["epoch_time_s"], "resource": bound},
            "plan": None,
        }
        return metrics, 4.0

    monkeypatch.setattr(runner, "run_or_keep", one_run)
    predicted = {"predicted_over_fl": 1.0, "predicted_over_sfl": 1.0}
    monkeypatch.setattr(
        runner, "speedup_map", lambda config, points: {**BENCH["map"], "points": [p | predicted for p in points]}
    )
    plans = [runner.BenchPlan.quick("strong"), runner.BenchPlan.quick("edge")]
    result = runner.bench(RunConfig(devices=2).validate(), plans, tmp_path, progress=False)
    assert seen[0] == ("vgg5-wifi-fl", 4.0) and seen[-1] == ("edge-vgg5-wifi-pipelearn", 40.0)
    assert [r["regime"] for r in result["runs"]] == ["strong"] * 3 + ["edge"] * 3
    strong, edge = result["verdicts"]
    assert strong.startswith("strong devices (slowdown 4), vgg5 under wifi: pipelining did not pay")
    assert edge.startswith("edge devices (slowdown 40), vgg5 under wifi: pipelining paid")
    assert [p["slowdown"] for p in result["maps"]["vgg5"]["points"]] == [4.0, 40.0]
    table = (tmp_path / "bench.md").read_text()
    assert "## strong devices (slowdown 4)" in table and "## edge devices (slowdown 40)" in table
    assert table.index("## edge devices") < table.index("| vgg5 | wifi | fl | 5.00x |")  # edge: 20 s / 4 s
    assert f"- {edge}" in table
    assert "samples per device {'vgg5': 300}." in table and "resnet18" not in table  # each regime's own sizes
    for name in ("fig2_epoch_time_vgg5.png", "fig2_epoch_time_vgg5_edge.png", "fig3_idle_vgg5_edge.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_heat_map_cells_are_centred_on_their_points_on_the_log_axis() -> None:
    from pipelearn.bench.figures import log_edges

    edges = log_edges([1.0, 100.0, 10000.0])
    assert [round(e, 6) for e in edges] == [0.1, 10.0, 1000.0, 100000.0]
    assert log_edges([4.0]) == [2.0, 8.0]


def test_a_bench_into_an_earlier_benchs_directory_is_refused_unless_kept_or_replaced(tmp_path: Path) -> None:
    from pipelearn.bench import runner
    from pipelearn.bench.accuracy import Table, accuracy_bench
    from pipelearn.config import ConfigError, RunConfig

    for results in ("bench.json", "accuracy.json"):
        (tmp_path / results).write_text("{}")
    plan = runner.BenchPlan(models=("vgg5",), networks=("4g",), modes=("fl",), epochs=1)
    with pytest.raises(ConfigError, match=r"holds an earlier bench \(bench.json\): give --resume .* or --replace"):
        runner.bench(RunConfig(devices=2).validate(), plan, tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"holds an earlier bench \(accuracy.json\)"):
        accuracy_bench(RunConfig(devices=2).validate(), Table.chosen(["mnist"], ["vgg5"], ["fl"]), tmp_path)
    assert all((tmp_path / r).read_text() == "{}" for r in ("bench.json", "accuracy.json"))
    runner.refuse_earlier(tmp_path, "bench.json", resume=True, replace=False)  # kept, or replaced: on it goes
    runner.refuse_earlier(tmp_path, "bench.json", resume=False, replace=True)
