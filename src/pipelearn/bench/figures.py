"""Figures drawn from recorded runs with matplotlib (Agg, no display): timelines, epoch times, idle time, maps,
accuracy against training time."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelearn.events import Event

OP_COLOURS = {
    "F": ("#4C72B0", "device forward"),
    "B": ("#DD8452", "device backward"),
    "T": ("#55A868", "train (forward + backward)"),
    "S": ("#8C8C8C", "optimizer step"),
    "W": ("#8172B3", "weights out"),
    "L": ("#937860", "weights in"),
    "A": ("#C44E52", "FedAvg"),
    "a": ("#64B5CD", "activation up"),
    "g": ("#DA8BC3", "gradient down"),
    "w": ("#CCB974", "weights transfer"),
}
"""Colour and legend label of each schedule operation (the letter in an action's name)."""

_ITERATION = re.compile(r"\.i(\d+)m\d+$")


def _op(name: str) -> str:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 else "?"


def iteration_window(events: Sequence[Event], iteration: int) -> tuple[float, float]:
    """The span of time from the first to the last action of one iteration, over every device and the server."""
    spans = [(e.start, e.end) for e in events if (m := _ITERATION.search(e.name)) and int(m.group(1)) == iteration]
    if not spans:
        raise ValueError(f"the run recorded no action of iteration {iteration}")
    return min(s for s, _ in spans), max(e for _, e in spans)


def track_order(tracks: Sequence[str]) -> list[str]:
    """The server first, then each device's compute, uplink and downlink."""
    kinds = {"compute": 0, "uplink": 1, "downlink": 2}

    def key(track: str) -> tuple[int, int, int]:
        owner, kind = track.split("/")
        number = int(owner[6:]) if owner.startswith("device") else -1
        return (0 if owner == "server" else 1, number, kinds.get(kind, 3))

    return sorted(set(tracks), key=key)


def draw_timeline(
    events: Sequence[Event],
    path: Path,
    title: str,
    window: tuple[float, float] | None = None,
    rates: Mapping[str, Sequence[Sequence[float]]] | None = None,
    marks: Sequence[tuple[float, str]] = (),
) -> Path:
    """A Gantt chart: one row per resource, one bar per action, coloured by what it does; `window` crops it.

    `rates` (a link track's [seconds, Mbit/s] steps) that change during the run are drawn in a panel below; `marks`
    (seconds, label), such as re-plans, as vertical lines."""
    lo, hi = window if window else (min(e.start for e in events), max(e.end for e in events))
    shown = [e for e in events if e.end > lo and e.start < hi]
    tracks = track_order([e.track for e in events])
    changing = {track: steps for track, steps in (rates or {}).items() if len(steps) > 1}
    height = 0.4 * len(tracks) + 1.4
    if changing:
        fig, (ax, below) = plt.subplots(
            2, 1, figsize=(12, height + 2.2), sharex=True, gridspec_kw={"height_ratios": [height, 2.2]}
        )
        _draw_rates(below, changing, lo, hi)
    else:
        fig, ax = plt.subplots(figsize=(12, height))
    used: dict[str, str] = {}
    for e in shown:
        op = _op(e.name)
        colour, label = OP_COLOURS.get(op, ("#333333", op))
        used[op] = label
        row = len(tracks) - 1 - tracks.index(e.track)
        width = max(e.end - e.start, (hi - lo) * 1e-3)
        ax.barh(row, width, left=e.start - lo, height=0.7, color=colour, edgecolor="white", linewidth=0.4)
    for at, text in marks:
        if lo <= at <= hi:
            ax.axvline(at - lo, color="#d62728", linewidth=1.2, linestyle="--")
            ax.text(at - lo, len(tracks) - 0.4, f" {text}", color="#d62728", fontsize=7, va="bottom")
    ax.set_yticks(range(len(tracks)), list(reversed(tracks)), fontsize=8)
    ax.set_xlim(0, hi - lo)
    (below if changing else ax).set_xlabel("time (s)")
    ax.set_title(title, fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=OP_COLOURS[op][0]) for op in used if op in OP_COLOURS]
    labels = [OP_COLOURS[op][1] for op in used if op in OP_COLOURS]
    ax.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _draw_rates(ax: Any, rates: Mapping[str, Sequence[Sequence[float]]], lo: float, hi: float) -> None:
    """Each link's rate over the window as steps (an unlimited step is left out)."""
    for track in track_order(list(rates)):
        steps = [(float(t), float(r)) for t, r in rates[track]]
        xs = [max(t, lo) - lo for t, _ in steps if t < hi] + [hi - lo]
        ys = [r if math.isfinite(r) else math.nan for t, r in steps if t < hi]
        if any(math.isfinite(y) for y in ys):
            ax.step(xs, [*ys, ys[-1]], where="post", label=track)
    ax.set_ylabel("link rate (Mbit/s)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def draw_grouped_bars(
    rows: Sequence[dict[str, Any]], value: str, ylabel: str, title: str, path: Path, group: str = "network"
) -> Path:
    """Bars of `value` per mode, grouped by `group` (e.g. epoch time per mode under each network)."""
    groups = list(dict.fromkeys(r[group] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    width = 0.8 / len(modes)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, mode in enumerate(modes):
        values = [next((r[value] for r in rows if r[group] == g and r["mode"] == mode), 0.0) for g in groups]
        bars = ax.bar([x + i * width for x in range(len(groups))], values, width, label=mode)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(len(groups))], groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_edges(centres: Sequence[float]) -> list[float]:
    """The edges of cells around `centres` on a log axis: halfway between neighbours, as far out at both ends."""
    logs = [math.log(c) for c in centres]
    if len(logs) == 1:
        return [centres[0] / 2, centres[0] * 2]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(logs)]
    return [math.exp(e) for e in [2 * logs[0] - mids[0], *mids, 2 * logs[-1] - mids[-1]]]


def draw_heat_map(
    values: Sequence[Sequence[float]],
    xs: Sequence[float],
    ys: Sequence[float],
    labels: tuple[str, str, str],
    title: str,
    path: Path,
    marks: Sequence[tuple[float, float, str]] = (),
    marks_in_cell: bool = False,
) -> Path:
    """A heat map of values[y][x] on log axes, with measured points marked and annotated; with `marks_in_cell`
    (marks on grid points) each mark's text is written in its cell in place of the cell's value."""
    xlabel, ylabel, bar = labels
    fig, ax = plt.subplots(figsize=(9, 6) if marks_in_cell else (7, 5))
    mesh = ax.pcolormesh(
        log_edges(xs), log_edges(ys), values, shading="flat", cmap="RdYlGn", norm=matplotlib.colors.LogNorm(0.1, 10)
    )
    ax.contour(xs, ys, values, levels=[1.0], colors="black", linewidths=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_yticks(ys, [f"{y:g}" for y in ys])
    ax.minorticks_off()
    written = {(x, y) for x, y, _ in marks} if marks_in_cell else set()
    for row, y in zip(values, ys, strict=True):
        for value, x in zip(row, xs, strict=True):
            if (x, y) not in written:
                ax.text(x, y, f"{value:.1f}", ha="center", va="center", fontsize=7, color="black")
    box = {"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.75, "lw": 0}
    for x, y, text in marks if marks_in_cell else ():
        ax.text(x, y, text, ha="center", va="center", fontsize=7, color="blue", bbox=box)
    for x, y, text in () if marks_in_cell else marks:
        ax.plot(x, y, "o", color="blue", ms=6)
        ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(5, -5),
            va="top",
            fontsize=7,
            color="blue",
            bbox=box,
        )
    fig.colorbar(mesh, ax=ax, label=bar)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
