"""Table 1 is drawn from accuracy.json alone: entries, shared runs, not-run and failed cells, gaps, wall times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelearn.bench.accuracy_table import accuracy_markdown
from pipelearn.cli import main

SETTINGS = {
    "devices": 4,
    "samples_per_device": 2500,
    "batch_size": 100,
    "epochs": 10,
    "lr": 0.01,
    "momentum": 0.9,
    "optimizer_state": "keep",
    "seed": 0,
    "partition": "iid",
    "dirichlet_alpha": 0.5,
    "aggregate_every": None,
    "test_samples": None,
    "batchnorm": True,
    "compress": "none",
    "compress_up": None,
    "compress_down": None,
    "device_slowdown": 4.0,
}


def _cell(mode: str, networks: list[str], status: str, accuracy: float | None = None, **more: Any) -> dict[str, Any]:
    split = None if mode == "fl" else [2, 2, 2, 2]
    cell = {
        "dataset": "mnist",
        "model": "vgg5",
        "mode": mode,
        "networks": networks,
        "splits": split,
        "microbatches": [8, 8, 8, 8] if mode == "pipelearn" else (None if mode == "fl" else [1, 1, 1, 1]),
        "run_dir": f"mnist-vgg5-{mode}-{'-'.join(networks)}",
        "status": status,
        **more,
    }
    if accuracy is not None:
        cell.update(test_accuracy=accuracy, train_time_s=50.0, wall_s=65.0, epochs=10)
    return cell


RESULT = {
    "settings": SETTINGS,
    "network": "unlimited",
    "plans": {"mnist/vgg5": {"planning_s": 12.0, "networks": {}}},
    "cells": [
        _cell("fl", ["4g", "4g+", "wifi"], "run", 0.9712),
        _cell("sfl", ["4g"], "kept", 0.9708),
        _cell("pipelearn", ["4g", "4g+"], "run", 0.9730),
        _cell("pipelearn", ["wifi"], "failed", error="device 2 stopped | for a reason"),
        {
            **_cell("fl", ["4g", "4g+", "wifi"], "not run"),
            "model": "resnet18",
            "run_dir": "mnist-resnet18-fl",
        },
        {
            **_cell("pipelearn", ["4g", "4g+", "wifi"], "not run"),
            "model": "resnet18",
            "splits": None,
            "microbatches": None,
            "run_dir": "mnist-resnet18-pipelearn",
        },
    ],
}


def _rows(text: str) -> dict[str, list[str]]:
    """Table 1's rows by technique, each a list of its entries."""
    rows = {}
    for line in text.split("## Cells")[0].splitlines():
        if line.startswith("| ") and not line.startswith("| technique"):
            parts = [p.strip() for p in line.strip("|").split("|")]
            rows[parts[0]] = parts[1:]
    return rows


def test_table_1_has_a_column_per_data_set_and_model_and_a_row_per_technique_and_network() -> None:
    text = accuracy_markdown(RESULT)
    assert "| technique | mnist vgg5 | mnist resnet18 |" in text
    rows = _rows(text)
    assert rows["FL"] == ["97.12", "not run"]
    assert rows["SFL"] == ["97.08", "-"]  # resnet18 has no sfl cell at all here
    assert rows["PipeLearn, 4g"] == ["97.30", "not run"]
    assert rows["PipeLearn, 4g+"] == ["97.30 (as 4g)", "not run"]  # shares 4g's run
    assert rows["PipeLearn, wifi"] == ["failed", "not run"]
    assert rows["PipeLearn - FL, largest gap (points)"] == ["+0.18", "-"]
    assert rows["PipeLearn - SFL, largest gap (points)"] == ["+0.22", "-"]
    assert "10 epoch(s)" in text and "4 devices x 2500 training samples" in text


def test_the_cells_list_says_which_ran_how_long_and_which_did_not() -> None:
    text = accuracy_markdown(RESULT).split("## Cells")[1]
    assert "| mnist | vgg5 | FL | any | - | - | 97.12 | 50.0 | 1 min 5 s | ran |" in text
    assert "| mnist | vgg5 | SFL | 4g | 2 | 1 | 97.08 | 50.0 | 1 min 5 s | ran in an earlier call |" in text
    assert "| mnist | vgg5 | PipeLearn | 4g, 4g+ | 2 | 8 | 97.30 | 50.0 | 1 min 5 s | ran |" in text
    assert "| failed: device 2 stopped / for a reason |" in text  # a | in a message cannot break the table
    assert "| mnist | resnet18 | PipeLearn | (not planned) | - | - | not run | - | - | not run |" in text
    assert "3 of 6 cells trained, 3 min 15 s of wall time in all." in text
    assert "mnist/vgg5 12 s" in text


def test_per_device_plans_are_listed_device_by_device() -> None:
    cell = _cell("pipelearn", ["wifi"], "run", 0.97)
    cell.update(splits=[1, 2, 2, 2], microbatches=[4, 8, 8, 8])
    text = accuracy_markdown({**RESULT, "cells": [cell]})
    assert "| 1/2/2/2 | 4/8/8/8 |" in text


def test_report_redraws_table_1_from_accuracy_json_without_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "accuracy.json").write_text(json.dumps(RESULT))
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "accuracy.md")
    assert (tmp_path / "accuracy.md").read_text() == accuracy_markdown(RESULT)
