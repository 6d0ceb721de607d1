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


def setting(row: dict[str, Any]) -> tuple[str, str, str]:
    """A run's setting: its regime (strong in a bench before regimes), model and network."""
    return (row.get("regime", "strong"), row["model"], row["network"])


def speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each regime, model and network: pipelearn's speed-up and idle-time reduction over each other mode."""
    out = []
    for row in rows:
        if row["mode"] == "pipelearn":
            continue
        ours = next((r for r in rows if r["mode"] == "pipelearn" and setting(r) == setting(row)), None)
        if ours is None:
            continue
        out.append(
            {
                "regime": setting(row)[0],
                "model": row["model"],
                "network": row["network"],
                "over": row["mode"],
                "speedup": row["epoch_time_s"] / ours["epoch_time_s"],
                "server_idle_reduction": row["server_idle_s"] / max(ours["server_idle_s"], 1e-9),
                "device_idle_reduction": row["device_idle_s"] / max(ours["device_idle_s"], 1e-9),
            }
        )
    return out


def regimes(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The regimes of a bench's settings; a bench before regimes ran one, "strong", at its device slowdown."""
    if "regimes" in settings:
        return list(settings["regimes"])
    keys = ("device_slowdown", "epochs", "samples_per_device", "test_samples", "eval_every")
    only = {k: settings[k] for k in keys if k in settings}
    return [{"regime": "strong", "label": f"strong devices (slowdown {settings['device_slowdown']:g})", **only}]


def bench_markdown(bench: dict[str, Any]) -> str:
    """The bench's results as markdown, a section per regime: one row per run, pipelearn's gains over each other
    mode, and one sentence per setting on where pipelining paid."""
    from pipelearn.bench.verdicts import verdicts

    settings = bench["settings"]
    lines = [
        "# Bench",
        "",
        f"{settings['devices']} devices, data set {settings['dataset']}, batch {settings['batch_size']}, "
        f"seed {settings['seed']}. Plans: {settings['plans']}.",
    ]
    for regime in regimes(settings):
        rows = [r for r in bench["runs"] if r.get("regime", "strong") == regime["regime"]]
        failed = [f for f in bench.get("failed", []) if f.get("regime", "strong") == regime["regime"]]
        lines += ["", f"## {regime['label']}", "", _regime_line(regime), ""]
        lines += _regime_tables(rows, failed)
        said = verdicts(rows)
        if said:
            lines += ["", "Where pipelining paid, and where it did not:", "", *(f"- {s}" for s in said)]
    return "\n".join(lines) + "\n"


def _regime_line(regime: dict[str, Any]) -> str:
    return (
        f"Device slowdown {regime['device_slowdown']:g}, {regime['epochs']} epoch(s), samples per device "
        f"{regime['samples_per_device']}"
        + (f", test samples {regime['test_samples']}" if regime.get("test_samples") else "")
        + (f", rounds between evaluations {regime['eval_every']}" if regime.get("eval_every") else "")
        + "."
    )


def _regime_tables(rows: list[dict[str, Any]], failed: list[dict[str, Any]]) -> list[str]:
    lines = [
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
    for f in failed:
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
    return lines


def write_bench_report(root: Path, bench: dict[str, Any]) -> list[Path]:
    """Write bench.md, the per-model epoch-time and idle figures and one timeline per run; return the files."""
    written = [root / "bench.md"]
    written[0].write_text(bench_markdown(bench))
    for regime in regimes(bench["settings"]):
        rows = [r for r in bench["runs"] if r.get("regime", "strong") == regime["regime"]]
        written += _regime_figures(root, rows, regime)
    for model, grid in speedup_maps(bench).items():
        written += draw_speedup_maps(grid, root, model)
    return written


def _regime_figures(root: Path, rows: list[dict[str, Any]], regime: dict[str, Any]) -> list[Path]:
    """Figures 1-4 of one regime's runs (the strong regime's keep the names of benches before regimes)."""
    written: list[Path] = []
    suffix = "" if regime["regime"] == "strong" else f"_{regime['regime']}"
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        written.append(
            draw_grouped_bars(
                mine,
                "epoch_time_s",
                "time per epoch (s)",
                f"{model}, {regime['label']}: time per epoch by mode and network (lower is better)",
                root / f"fig2_epoch_time_{model}{suffix}.png",
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
                f"{model}, {regime['label']}: server and mean device idle time by mode and network",
                root / f"fig3_idle_{model}{suffix}.png",
            )
        )
        for r in mine:
            trace = root / "runs" / r["run_dir"] / "trace.json"
            if trace.exists():
                events = read_trace(trace)
                window = _middle_iteration_window(events)
                title = f"{model}, {regime['label']}, {r['network']}, {r['mode']}: one iteration, every resource"
                written.append(draw_timeline(events, root / f"fig1_timeline_{r['run_dir']}.png", title, window))
        for network in dict.fromkeys(r["network"] for r in mine):
            runs = [root / "runs" / r["run_dir"] / "metrics.json" for r in mine if r["network"] == network]
            recorded = [json.loads(p.read_text()) for p in runs if p.exists()]
            if any(m.get("rounds") for m in recorded):
                path = root / f"fig4_accuracy_{model}_{network}{suffix}.png"
                title = f"{model}, {regime['label']}, {network}: test accuracy of the global model against time"
                written.append(plot_accuracy_over_time(recorded, path, title=title))
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
            (p["slowdown"], p["up_mbps"], f"{p.get('regime', 'strong')} {p['network']}\n"
             f"measured {p[f'over_{mode}']:.2f}x\npredicted {p[f'predicted_over_{mode}']:.2f}x")
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
