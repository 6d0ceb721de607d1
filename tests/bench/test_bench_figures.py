"""The accuracy-over-time figure: one line per run, in percent against seconds, labelled, written as an image."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelearn.bench.figures import accuracy_figure, accuracy_points, plot_accuracy_over_time

PIPELEARN = {
    "mode": "pipelearn",
    "train_time_s": 30.0,
    "test_accuracy": 0.9,
    "rounds": [
        {"round": 0, "time_s": 10.0, "train_loss": 2.0, "test_accuracy": 0.5, "eval_s": 0.1},
        {"round": 1, "time_s": 20.0, "train_loss": 1.0, "test_accuracy": None, "eval_s": 0.0},
        {"round": 2, "time_s": 30.0, "train_loss": 0.5, "test_accuracy": 0.9, "eval_s": 0.1},
    ],
}
SL = {"mode": "sl", "train_time_s": 80.0, "test_accuracy": 0.95, "rounds": []}


def test_points_are_the_evaluated_rounds_or_else_the_final_model():
    assert accuracy_points(PIPELEARN) == ([10.0, 30.0], [0.5, 0.9])
    assert accuracy_points(SL) == ([80.0], [0.95])
    assert accuracy_points({"mode": "fl"}) == ([], [])


def test_the_figure_has_a_line_per_run_with_labelled_axes_and_a_legend_by_mode():
    figure = accuracy_figure([PIPELEARN, SL], target=0.9)
    (axes,) = figure.axes
    lines = axes.get_lines()
    assert list(lines[0].get_xdata()) == [10.0, 30.0]
    assert list(lines[0].get_ydata()) == pytest.approx([50.0, 90.0])
    assert list(lines[1].get_xdata()) == [80.0]
    assert "(s)" in axes.get_xlabel() and "(%)" in axes.get_ylabel()
    legend = axes.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["pipelearn", "sl", "target 90.0%"]
    assert legend.get_title().get_text() == "mode"
    relabelled = accuracy_figure([PIPELEARN, SL], labels=["pipelearn N=4", "sl"]).axes[0].get_legend()
    assert [t.get_text() for t in relabelled.get_texts()] == ["pipelearn N=4", "sl"]


def test_a_run_without_accuracy_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"run 1 \(fl\)"):
        accuracy_figure([PIPELEARN, {"mode": "fl", "rounds": []}])
    with pytest.raises(ValueError, match="at least one"):
        accuracy_figure([])


def test_the_figure_is_written_as_a_png(tmp_path: Path):
    path = plot_accuracy_over_time([PIPELEARN, SL], tmp_path / "figs" / "accuracy.png", target=0.9)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    height, width, _ = imread(path).shape
    assert width > 600 and height > 400
