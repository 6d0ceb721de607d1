"""The bench's table (bench.md) and figures, from bench.json alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelearn.bench.figures import (
    draw_grouped_bars,
    draw_heat_map,
    draw_timeline,
    iteration_window,
    plot_accuracy_over_time,
)
from pipelearn.metrics.trace import read_trace


def speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each model and network: pipelearn's speed-up and idle-time reduction over each other mode."""
    out = []
    for row in rows:
        if row["mode"] == "pipelearn":
            continue
        ours = next(
            (
                r
                for r in rows
                if r["mode"] == "pipelearn" and (r["model"], r["network"]) == (row["model"], row["network"])
            ),
            None,
        )
        if ours is None:
            continue
        out.append(
            {
                "model": row["model"],
                "network": row["network"],
                "over": row["mode"],
                "speedup": row["epoch_time_s"] / ours["epoch_time_s"],
                "server_idle_reduction": row["server_idle_s"] / max(ours["server_idle_s"], 1e-9),
                "device_idle_reduction": row["device_idle_s"] / max(ours["device_idle_s"], 1e-9),
            }
        )
    return out


def bench_markdown(bench: dict[str, Any]) -> str:
    """The bench's results as markdown: one row per run, then pipelearn's gains over each other mode."""
    settings, rows = bench["settings"], bench["runs"]
    lines = [
        "# Bench",
        "",
        f"{settings['devices']} devices, data set {settings['dataset']}, "
        f"device slowdown {settings['device_slowdown']}, "
        f"batch {settings['batch_size']}, {settings['epochs']} epoch(s), samples per device "
        f"{settings['samples_per_device']}, seed {settings['seed']}"
        + (f", test samples {settings['test_samples']}" if settings.get("test_samples") else "")
        + (f", rounds between evaluations {settings['eval_every']}" if settings.get("eval_every") else "")
        + f". Plans: {settings['plans']}.",
        "",
        "| model | network | mode | split | micro-batches | epoch time (s) | server idle (s) | mean device idle (s) "
        "| MB up | MB down | bound (s) | measured / bound | test accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['network']} | {r['mode']} | {_compact(r['split'])} | {_compact(r['microbatches'])} "
            f"| {r['epoch_time_s']:.2f} | {r['server_idle_s']:.1f} | {r['device_idle_s']:.1f} "
            f"| {r['bytes_up'] / 1e6:.1f} | {r['bytes_down'] / 1e6:.1f} | {r['bound_s']:.1f} "
            f"| {r['measured_over_bound']:.2f} | {r['test_accuracy']:.4f} |"
        )
    for f in bench.get("failed", []):
        lines.append(f"| {f['model']} | {f['network']} | {f['mode']} | failed: {f['error']} |")
    gains = speedups(rows)
    if gains:
        lines += [
            "",
            "pipelearn against each other mode (ratios of the other mode's time to pipelearn's):",
            "",
            "| model | network | over | speed-up per epoch | server idle reduction | device idle reduction |",
            "|---|---|---|---|---|---|",
        ]
        for g in gains:
            lines.append(
                f"| {g['model']} | {g['network']} | {g['over']} | {g['speedup']:.2f}x "
                f"| {g['server_idle_reduction']:.2f}x | {g['device_idle_reduction']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def write_bench_report(root: Path, bench: dict[str, Any]) -> list[Path]:
    """Write bench.md, the per-model epoch-time and idle figures and one timeline per run; return the files."""
    rows = bench["runs"]
    written = [root / "bench.md"]
    written[0].write_text(bench_markdown(bench))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        written.append(
            draw_grouped_bars(
                mine,
                "epoch_time_s",
                "time per epoch (s)",
                f"{model}: time per epoch by mode and network (lower is better)",
                root / f"fig2_epoch_time_{model}.png",
            )
        )
        idle = [
            {**r, "mode": f"{r['mode']} {who}", "idle": r[f"{who}_idle_s"]}
            for who in ("server", "device")
            for r in mine
        ]
        written.append(
            draw_grouped_bars(
                idle,
                "idle",
                "idle time over the run (s)",
                f"{model}: server and mean device idle time by mode and network",
                root / f"fig3_idle_{model}.png",
            )
        )
        for r in mine:
            trace = root / "runs" / r["run_dir"] / "trace.json"
            if trace.exists():
                events = read_trace(trace)
                window = _middle_iteration_window(events)
                title = f"{model}, {r['network']}, {r['mode']}: one iteration, every resource"
                written.append(draw_timeline(events, root / f"fig1_timeline_{r['run_dir']}.png", title, window))
        for network in dict.fromkeys(r["network"] for r in mine):
            runs = [root / "runs" / r["run_dir"] / "metrics.json" for r in mine if r["network"] == network]
            recorded = [json.loads(p.read_text()) for p in runs if p.exists()]
            if any(m.get("rounds") for m in recorded):
                path = root / f"fig4_accuracy_{model}_{network}.png"
                title = f"{model}, {network}: test accuracy of the global model against training time"
                written.append(plot_accuracy_over_time(recorded, path, title=title))
    for model, grid in speedup_maps(bench).items():
        written += draw_speedup_maps(grid, root, model)
    return written


def speedup_maps(bench: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The bench's speed-up maps by model; a bench.json written before maps were per model holds one, "map"."""
    if "map" in bench:
        return {bench["map"]["model"]: bench["map"]}
    return dict(bench.get("maps", {}))


def draw_speedup_maps(grid: dict[str, Any], root: Path, model: str) -> list[Path]:
    """The two heat maps of pipelearn's predicted speed-up, over fl and over sfl, with the measured points."""
    drawn = []
    for mode in ("fl", "sfl"):
        marks = [
            (p["slowdown"], p["up_mbps"], f"{p['network']}: measured {p[f'over_{mode}']:.2f}x, "
             f"predicted {p[f'predicted_over_{mode}']:.2f}x")
            for p in grid.get("points", [])
        ]  # fmt: skip
        drawn.append(
            draw_heat_map(
                grid[f"over_{mode}"],
                grid["slowdowns"],
                grid["uplinks_mbps"],
                (
                    "device slowdown (device compute time / server compute time)",
                    "uplink rate (Mbit/s)",
                    f"predicted speed-up of pipelearn over {mode} (x)",
                ),
                f"{grid['model']} on {grid['dataset']}, {grid['devices']} devices: where pipelearn beats {mode} "
                "(black line: 1x)",
                root / f"map_speedup_over_{mode}_{model}.png",
                marks,
            )
        )
    return drawn


def _middle_iteration_window(events: list[Any]) -> tuple[float, float] | None:
    iterations = sorted({int(e.name.rsplit(".i", 1)[1].split("m")[0]) for e in events if ".i" in e.name})
    if not iterations:
        return None
    return iteration_window(events, iterations[len(iterations) // 2])


def _compact(values: list[Any]) -> str:
    distinct = list(dict.fromkeys(values))
    return "-" if distinct == [None] else "/".join(str(v) for v in distinct)
