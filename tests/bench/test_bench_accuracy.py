"""`pipelearn bench --accuracy`: its cells, their configurations, resuming and the checks of its flags."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pipelearn.bench import accuracy
from pipelearn.bench.accuracy import Table, accuracy_bench, cell_config, cells_of, run_name, settings_of
from pipelearn.bench.runner import WALL_FILE
from pipelearn.cli import main
from pipelearn.config import ConfigError, RunConfig


def _plan(splits: list[int], microbatches: list[int]) -> dict[str, Any]:
    return {"splits": splits, "microbatches": microbatches, "predicted_epoch_s": 1.0}


PLANS = {
    "mnist/vgg5": {
        "planning_s": 3.0,
        "networks": {
            "4g": {"sfl": _plan([1, 1], [1, 1]), "pipelearn": _plan([2, 2], [8, 8])},
            "4g+": {"sfl": _plan([2, 2], [1, 1]), "pipelearn": _plan([2, 2], [8, 8])},
            "wifi": {"sfl": _plan([2, 2], [1, 1]), "pipelearn": _plan([3, 2], [4, 5])},
        },
    }
}
TABLE = Table.chosen(["mnist"], ["vgg5"])
BASE = RunConfig(devices=2, samples_per_device=100, epochs=1, eval_every=0).validate()


def _vgg5_cells() -> list[dict[str, Any]]:
    return [c for c in cells_of(TABLE, PLANS) if (c["dataset"], c["model"]) == ("mnist", "vgg5")]


def test_networks_whose_plans_coincide_share_one_pipelearn_cell() -> None:
    cells = _vgg5_cells()
    assert [(c["mode"], c["networks"]) for c in cells] == [
        ("fl", ["4g", "4g+", "wifi"]),
        ("sfl", ["4g"]),  # sfl at the planner's split under the first network
        ("pipelearn", ["4g", "4g+"]),
        ("pipelearn", ["wifi"]),
    ]
    assert [c["run_dir"] for c in cells] == [
        "mnist-vgg5-fl",
        "mnist-vgg5-sfl-split1",
        "mnist-vgg5-pipelearn-split2-mb8",
        "mnist-vgg5-pipelearn-split3_2-mb4_5",
    ]


def test_the_whole_table_is_listed_and_unplanned_models_have_one_placeholder_per_mode() -> None:
    cells = cells_of(TABLE, PLANS)
    columns = list(dict.fromkeys((c["dataset"], c["model"]) for c in cells))
    assert columns == [(d, m) for d in ("mnist", "fashion-mnist") for m in ("vgg5", "resnet18", "mobilenetv3-small")]
    resnet = [c for c in cells if (c["dataset"], c["model"]) == ("mnist", "resnet18")]
    assert [(c["mode"], c["splits"]) for c in resnet] == [("fl", None), ("sfl", None), ("pipelearn", None)]
    assert len({c["run_dir"] for c in cells}) == len(cells)


def test_a_cell_trains_at_its_plan_over_an_unlimited_link_without_slowdown(tmp_path: Path) -> None:
    fl, sfl, shared, wifi = _vgg5_cells()
    slow = RunConfig(devices=2, network="4g", device_slowdown=40.0, microbatches=4).validate()
    config = cell_config(slow, shared, tmp_path)
    assert (config.mode, config.network, config.device_slowdown) == ("pipelearn", "unlimited", 1.0)
    assert (config.split, config.microbatches, config.device_overrides) == (2, 8, {})
    assert config.out == str(tmp_path / "runs" / "mnist-vgg5-pipelearn-split2-mb8")
    per_device = cell_config(slow, wifi, tmp_path)
    assert [(o.split, o.microbatches) for o in per_device.device_overrides.values()] == [(3, 4), (2, 5)]
    assert (cell_config(slow, sfl, tmp_path).split, cell_config(slow, sfl, tmp_path).microbatches) == (1, 1)
    assert cell_config(slow, fl, tmp_path).mode == "fl"


def _record(out: Path, base: RunConfig, cell: dict[str, Any], accuracy_value: float, wall_s: float) -> None:
    """A finished run of `cell` as the runtime leaves it: metrics.json with its configuration, and its wall time."""
    config = cell_config(base, cell, out)
    run = Path(config.out)
    run.mkdir(parents=True)
    metrics = {
        "test_accuracy": accuracy_value,
        "epochs": config.epochs,
        "train_time_s": 2.0,
        "config": json.loads(config.to_json()),
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / WALL_FILE).write_text(json.dumps({"wall_s": wall_s}))


def _nothing_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("pipelearn.runtime.launch.run_local", refuse)
    monkeypatch.setattr(accuracy, "make_plans", refuse)


def test_resume_keeps_finished_cells_and_their_wall_times_without_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fl, sfl, *_ = _vgg5_cells()
    earlier = {"settings": settings_of(BASE), "network": "unlimited", "plans": PLANS, "cells": []}
    (tmp_path / "accuracy.json").write_text(json.dumps(earlier))
    _record(tmp_path, BASE, fl, 0.91, 30.0)
    _record(tmp_path, BASE, sfl, 0.92, 40.0)
    _nothing_trains(monkeypatch)
    result = accuracy_bench(BASE, Table.chosen(["mnist"], ["vgg5"], ["fl", "sfl"]), tmp_path, resume=True)
    done = {c["run_dir"]: c for c in result["cells"] if c["status"] != "not run"}
    assert {k: (c["status"], c["test_accuracy"], c["wall_s"]) for k, c in done.items()} == {
        "mnist-vgg5-fl": ("kept", 0.91, 30.0),
        "mnist-vgg5-sfl-split1": ("kept", 0.92, 40.0),
    }
    assert json.loads((tmp_path / "accuracy.json").read_text())["cells"] == result["cells"]
    assert (
        "| mnist | vgg5 | FL | any | - | - | 91.00 | 2.0 | 30 s | ran in an earlier call |"
        in (tmp_path / "accuracy.md").read_text()
    )


def test_a_later_call_keeps_an_earlier_calls_cells_and_records_a_failed_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fl, *_ = _vgg5_cells()
    _record(tmp_path, BASE, fl, 0.91, 30.0)
    earlier_cell = {**fl, "status": "run", "test_accuracy": 0.91, "wall_s": 30.0, "train_time_s": 2.0}
    earlier = {"settings": settings_of(BASE), "network": "unlimited", "plans": PLANS, "cells": [earlier_cell]}
    (tmp_path / "accuracy.json").write_text(json.dumps(earlier))

    def fails(config: RunConfig, progress: bool) -> None:
        raise RuntimeError(f"every device has failed in {config.model}")

    monkeypatch.setattr("pipelearn.runtime.launch.run_local", fails)
    result = accuracy_bench(BASE, Table.chosen(["mnist"], ["resnet18"], ["fl"]), tmp_path, resume=True)
    cells = {c["run_dir"]: c for c in result["cells"]}
    assert cells["mnist-vgg5-fl"]["status"] == "kept"  # not run by this call, kept from the earlier one
    assert (cells["mnist-resnet18-fl"]["status"], cells["mnist-resnet18-fl"]["error"]) == (
        "failed",
        "every device has failed in resnet18",
    )
    assert cells["mnist-vgg5-pipelearn-split2-mb8"]["status"] == "not run"


def test_resume_refuses_a_table_made_with_other_settings(tmp_path: Path) -> None:
    earlier = {"settings": {**settings_of(BASE), "epochs": 5}, "plans": {}, "cells": []}
    (tmp_path / "accuracy.json").write_text(json.dumps(earlier))
    with pytest.raises(ConfigError, match=r"epochs 5 \(now 1\).*another --out"):
        accuracy_bench(BASE, TABLE, tmp_path, resume=True)


def test_resume_refuses_a_finished_run_made_with_other_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fl, *_ = _vgg5_cells()
    _record(tmp_path, dataclasses.replace(BASE, lr=0.1), fl, 0.9, 1.0)
    _nothing_trains(monkeypatch)
    with pytest.raises(ValueError, match=r"mnist-vgg5-fl was made with other settings: lr 0.1 \(now 0.01\)"):
        accuracy_bench(BASE, Table.chosen(["mnist"], ["vgg5"], ["fl"]), tmp_path, resume=True)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--datasets", "mnist"], "--datasets chooses cells of the accuracy table: add --accuracy"),
        (["--models", "vgg6"], "unknown model 'vgg6'"),
        (["--accuracy", "--modes", "sl"], "unknown mode 'sl' for the accuracy table; expected some of fl, sfl"),
        (["--accuracy", "--models", "vgg6"], "unknown model 'vgg6'"),
        (["--accuracy", "--datasets", "imagenet"], "unknown data set 'imagenet'"),
        (["--accuracy", "--quick"], "--quick is for the timing bench"),
        (["--accuracy", "--up-mbps", "5"], "trains over an unlimited link; leave out up_mbps"),
    ],
)
def test_bad_accuracy_flags_get_a_clear_error(
    flags: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *flags, "--out", str(tmp_path / "out")]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_run_names_are_safe_directory_names() -> None:
    cell = {"dataset": "my.module:data", "model": "vgg5", "mode": "fl", "splits": None, "microbatches": None}
    assert run_name(cell) == "my.module_data-vgg5-fl"


@pytest.mark.slow
def test_a_real_cell_is_planned_trained_recorded_and_then_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = RunConfig(
        dataset="synthetic", batchnorm=False, devices=2, samples_per_device=40, batch_size=20, epochs=1,
        test_samples=100, eval_every=0, timeout_s=60.0,
    ).validate()  # fmt: skip
    table = Table.chosen(["synthetic"], ["vgg5"], ["sfl"])
    result = accuracy_bench(base, table, tmp_path, progress=False)
    ran = [c for c in result["cells"] if c["status"] == "run"]
    assert [(c["dataset"], c["mode"], c["networks"]) for c in ran] == [("synthetic", "sfl", ["4g"])]
    assert ran[0]["splits"] == result["plans"]["synthetic/vgg5"]["networks"]["4g"]["sfl"]["splits"]
    metrics = json.loads((tmp_path / "runs" / ran[0]["run_dir"] / "metrics.json").read_text())
    assert (metrics["network"], metrics["test_accuracy"]) == ("unlimited", ran[0]["test_accuracy"])
    assert ran[0]["wall_s"] > ran[0]["train_time_s"] > 0
    _nothing_trains(monkeypatch)
    again = accuracy_bench(base, table, tmp_path, resume=True, progress=False)
    assert [c["status"] for c in again["cells"] if c["run_dir"] == ran[0]["run_dir"]] == ["kept"]
    assert "| synthetic | vgg5 | SFL | 4g |" in (tmp_path / "accuracy.md").read_text()
