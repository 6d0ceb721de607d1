"""`pipelearn report DIR`: the figures and tables of a recorded run or bench, drawn again without training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelearn.bench.figures import draw_timeline, iteration_window, plot_accuracy_over_time
from pipelearn.metrics.trace import read_trace


def report(directory: str | Path) -> list[Path]:
    """Draw what a run directory (metrics.json, trace.json) or a bench directory (bench.json, accuracy.json) holds;
    return the files."""
    root = Path(directory)
    drawn: list[Path] = []
    if (root / "accuracy.json").exists():
        from pipelearn.bench.accuracy_table import redraw_accuracy_report

        drawn += redraw_accuracy_report(root)
    if (root / "bench.json").exists():
        from pipelearn.bench.tables import write_bench_report

        return drawn + write_bench_report(root, json.loads((root / "bench.json").read_text()))
    if (root / "metrics.json").exists():
        return report_run(root)
    if drawn:
        return drawn
    raise ValueError(
        f"{root} holds neither metrics.json (a run) nor bench.json or accuracy.json (a bench); give a run's --out"
    )


def report_run(root: Path) -> list[Path]:
    """A run's timeline.png (every resource over one steady-state iteration) and accuracy.png where it has rounds."""
    metrics = json.loads((root / "metrics.json").read_text())
    events = read_trace(root / "trace.json")
    if not events:
        raise ValueError(f"{root / 'trace.json'} records no event; the run did not train")
    iteration = steady_iteration(metrics)
    title = (
        f"{metrics['mode']}, {metrics['model']} on {metrics['dataset']}, network {metrics['network']}: "
        f"iteration {iteration}"
    )
    rates = link_rates(metrics)
    replans = metrics.get("replans") or []
    marks = [(r["at_s"], f"re-plan {i + 1}") for i, r in enumerate(replans) if r.get("at_s") is not None]
    try:
        if any(len(steps) > 1 for steps in rates.values()) or marks:
            raise ValueError("a link's rate or the plan changes: draw the whole run")
        window: tuple[float, float] | None = iteration_window(events, iteration)
    except ValueError:
        window, title = None, title.rsplit(":", 1)[0] + ": the whole run"
    drawn = [draw_timeline(events, root / "timeline.png", title, window, rates, marks)]
    if metrics.get("rounds"):
        drawn.append(plot_accuracy_over_time([metrics], root / "accuracy.png", target=metrics.get("target_accuracy")))
    return drawn


def steady_iteration(metrics: dict[str, Any]) -> int:
    """An iteration away from start-up and aggregation: the middle one of the last epoch."""
    samples = min(d["samples"] for d in metrics["device"])
    per_epoch = max(1, -(-samples // metrics["batch_size"]))
    return (metrics["epochs"] - 1) * per_epoch + per_epoch // 2


def link_rates(metrics: dict[str, Any]) -> dict[str, list[list[float]]]:
    """Each device link's rate steps ([seconds since training start, Mbit/s]) as metrics.json records them."""
    return {
        f"device{d}/{kind}": device[f"{kind}_mbps"]
        for d, device in enumerate(metrics["device"])
        for kind in ("uplink", "downlink")
        if f"{kind}_mbps" in device
    }
