"""Figures of runs from their metrics: test accuracy against wall-clock training time (matplotlib, Agg, lazily)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def accuracy_points(metrics: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """A run's (seconds of training, test accuracy) points: its evaluated rounds, else its final model alone."""
    rounds = [r for r in metrics.get("rounds", []) if r.get("test_accuracy") is not None]
    if rounds:
        return [r["time_s"] for r in rounds], [r["test_accuracy"] for r in rounds]
    if metrics.get("test_accuracy") is None:
        return [], []
    return [metrics["train_time_s"]], [metrics["test_accuracy"]]


def accuracy_figure(
    runs: Sequence[Mapping[str, Any]],
    labels: Sequence[str] = (),
    target: float | None = None,
    title: str | None = None,
) -> Figure:
    """A figure of each run's global-model test accuracy (%) against seconds since training started."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("accuracy_figure needs at least one run's metrics")
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for i, metrics in enumerate(runs):
        times, accuracies = accuracy_points(metrics)
        if not times:
            raise ValueError(f"run {i} ({metrics.get('mode', '?')}) has no test accuracy to draw")
        label = labels[i] if i < len(labels) else str(metrics.get("mode", f"run {i}"))
        axes.plot(times, [100 * a for a in accuracies], marker="o", markersize=3.5, linewidth=1.5, label=label)
    if target is not None:
        axes.axhline(100 * target, color="0.4", linestyle="--", linewidth=1, label=f"target {target:.1%}")
    axes.set_xlabel("wall-clock training time (s)")
    axes.set_ylabel("test accuracy of the global model (%)")
    axes.set_xlim(left=0)
    axes.grid(True, alpha=0.3)
    axes.legend(title="mode" if not labels else None, loc="lower right")
    if title:
        axes.set_title(title)
    return figure


def plot_accuracy_over_time(
    runs: Sequence[Mapping[str, Any]],
    path: str | Path,
    labels: Sequence[str] = (),
    target: float | None = None,
    title: str | None = None,
) -> Path:
    """Draw accuracy against wall-clock time for one or several runs into `path` (PNG, SVG or PDF); return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    accuracy_figure(runs, labels, target, title).savefig(path, dpi=150)
    return path
