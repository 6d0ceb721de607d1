"""Table 1 as markdown (accuracy.md), from accuracy.json alone: the poster's layout, then every cell and its time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TECHNIQUES = {"fl": "FL", "sfl": "SFL", "pipelearn": "PipeLearn"}


def write_accuracy_report(root: Path, result: dict[str, Any]) -> list[Path]:
    """Write accuracy.json and accuracy.md into `root`; return the files."""
    (root / "accuracy.json").write_text(json.dumps(result, indent=1) + "\n")
    (root / "accuracy.md").write_text(accuracy_markdown(result))
    return [root / "accuracy.json", root / "accuracy.md"]


def redraw_accuracy_report(root: Path) -> list[Path]:
    """accuracy.md again from `root`/accuracy.json, without training."""
    result = json.loads((root / "accuracy.json").read_text())
    (root / "accuracy.md").write_text(accuracy_markdown(result))
    return [root / "accuracy.md"]


def accuracy_markdown(result: dict[str, Any]) -> str:
    """Table 1 (test accuracy in %, techniques by rows, data set and model by columns), then the cells list."""
    s, cells = result["settings"], result["cells"]
    columns = list(dict.fromkeys((c["dataset"], c["model"]) for c in cells))
    networks = list(dict.fromkeys(n for c in cells if c["mode"] == "pipelearn" for n in c["networks"]))
    aggregation = "once per epoch" if s["aggregate_every"] is None else f"every {s['aggregate_every']} iterations"
    tested = "the whole test split" if s["test_samples"] is None else f"{s['test_samples']} test samples"
    lines = [
        "# Table 1: test accuracy",
        "",
        f"{s['devices']} devices x {s['samples_per_device']} training samples ({s['partition']}), batch "
        f"{s['batch_size']}, {s['epochs']} epoch(s), SGD lr {s['lr']} momentum {s['momentum']}, FedAvg {aggregation}, "
        f"seed {s['seed']}, BatchNorm {'on' if s['batchnorm'] else 'off'}: the same in every cell. Test accuracy (%) "
        f"of the final global model on {tested}.",
        "",
        "| technique | " + " | ".join(f"{d} {m}" for d, m in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for mode in ("fl", "sfl"):
        if any(c["mode"] == mode for c in cells):
            lines.append(
                f"| {TECHNIQUES[mode]} | " + " | ".join(_entry(_cell(cells, col, mode)) for col in columns) + " |"
            )
    for network in networks:
        entries = [_pipelearn_entry(cells, col, network) for col in columns]
        lines.append(f"| PipeLearn, {network} | " + " | ".join(entries) + " |")
    for other in ("fl", "sfl"):
        gaps = [_gap(cells, col, other) for col in columns]
        if any(g != "-" for g in gaps):
            lines.append(f"| PipeLearn - {TECHNIQUES[other]}, largest gap (points) | " + " | ".join(gaps) + " |")
    lines += [
        "",
        f"PipeLearn's split and micro-batch count, and SFL's split, are the planner's (devices {s['device_slowdown']}"
        f" times slower than the server) under each network; every cell then trained at its plan over an "
        f"{result['network']} link with no device slowdown: the network and the slowdown change when things happen, "
        'not what is computed. Networks whose plans coincide share one PipeLearn run ("as 4g": that run). SFL takes'
        f" the planner's split under {_first_network(cells)}: with one micro-batch and FedAvg of both halves it "
        'computes what FL computes, at any split. "not run": not trained yet (see the cells below).',
        "",
        "## Cells",
        "",
        "| data set | model | technique | networks | split | micro-batches | test accuracy (%) | training (s) "
        "| wall time | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c['dataset']} | {c['model']} | {TECHNIQUES[c['mode']]} | {_networks(c)} | {_values(c['splits'])} "
            f"| {_values(c['microbatches'])} | {_entry(c)} | {_seconds(c.get('train_time_s'))} "
            f"| {_duration(c.get('wall_s'))} | {_status(c)} |"
        )
    ran = [c for c in cells if c["status"] in ("run", "kept")]
    total = sum(c.get("wall_s") or 0.0 for c in ran)
    lines += ["", f"{len(ran)} of {len(cells)} cells trained, {_duration(total)} of wall time in all."]
    planned = result.get("plans", {})
    if planned:
        lines += ["", "Profiling and planning (not counted in any cell): " + ", ".join(
            f"{key} {_duration(p['planning_s'])}" for key, p in planned.items()) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _cell(cells: list[dict[str, Any]], column: tuple[str, str], mode: str, network: str | None = None) -> Any:
    return next(
        (
            c
            for c in cells
            if (c["dataset"], c["model"]) == column
            and c["mode"] == mode
            and (network is None or network in c["networks"])
        ),
        None,
    )


def _entry(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    if cell["status"] in ("run", "kept"):
        return f"{100 * cell['test_accuracy']:.2f}"
    return cell["status"]


def _pipelearn_entry(cells: list[dict[str, Any]], column: tuple[str, str], network: str) -> str:
    cell = _cell(cells, column, "pipelearn", network)
    entry = _entry(cell)
    if cell is not None and cell["networks"][0] != network and cell["splits"] is not None:
        entry += f" (as {cell['networks'][0]})"
    return entry


def _gap(cells: list[dict[str, Any]], column: tuple[str, str], other: str) -> str:
    base = _cell(cells, column, other)
    ours = [c for c in cells if (c["dataset"], c["model"]) == column and c["mode"] == "pipelearn"]
    done = [c for c in ours if c["status"] in ("run", "kept")]
    if base is None or base["status"] not in ("run", "kept") or not done:
        return "-"
    gap = max((c["test_accuracy"] - base["test_accuracy"] for c in done), key=abs)
    return f"{100 * gap:+.2f}"


def _first_network(cells: list[dict[str, Any]]) -> str:
    return next((c["networks"][0] for c in cells if c["mode"] == "sfl" and c["splits"] is not None), "4g")


def _networks(cell: dict[str, Any]) -> str:
    if cell["mode"] == "fl":
        return "any"
    if cell["splits"] is None:
        return "(not planned)"
    return ", ".join(cell["networks"])


def _values(values: list[int] | None) -> str:
    if values is None:
        return "-"
    distinct = list(dict.fromkeys(values))
    return str(distinct[0]) if len(distinct) == 1 else "/".join(str(v) for v in values)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _status(cell: dict[str, Any]) -> str:
    if cell["status"] == "run":
        return "ran"
    if cell["status"] == "kept":
        return "ran in an earlier call"
    if cell["status"] == "failed":
        return f"failed: {cell.get('error', '')}"[:200].replace("|", "/").replace("\n", " ")
    return "not run"
