"""Measured speed-up maps: pipelearn against fl and sfl on a coarse grid of device slowdown and uplink rate, each
mode at its own best plan, drawn on the predicted map with the measured and the predicted speed-up in each measured
cell.

Usage: python benchmarks/measured_map.py --model vgg5 --out runs/measured-map [--resume] -- [pipelearn run flags]

Each cell runs fl, sfl and pipelearn with every device at the cell's slowdown and uplink (the downlink 2.5 times the
uplink, as the predicted map assumes). Where fl becomes very slow (slowdown at least --short-from), the cell's runs
train --short-samples per device instead of --samples-per-device, all three alike, and the cell says so: a cell is
always a ratio of runs of one workload, and its prediction is made for that same workload. fl's time is never
scaled from a shorter run (its weight exchange per round does not shrink with the samples, so scaling would be an
extrapolation). A cell not run (--budget-s spent, or a failed run) is drawn with its prediction alone.

One profile of the model, measured first, plans every run and the predictions (saved as profile.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

from pipelearn.bench.figures import draw_heat_map
from pipelearn.bench.runner import run_or_keep
from pipelearn.bench.speedup_map import predicted_epoch_s, speedup_map
from pipelearn.cli import _config, _parser
from pipelearn.config import RunConfig
from pipelearn.data.dealing import data_shape
from pipelearn.models import canonical_model_name
from pipelearn.models.parts import make_model
from pipelearn.planner.measure import profile_model
from pipelearn.planner.profile import load_profile, save_profile
from pipelearn.planner.resolve import at_best_plan

MODES = ("fl", "sfl", "pipelearn")


def cell_config(base: RunConfig, mode: str, slowdown: float, up: float, samples: int, out: Path) -> RunConfig:
    """One run of a cell: `mode` at its best plan, every device at this slowdown and uplink (downlink 2.5x)."""
    return at_best_plan(
        base,
        mode,
        device_slowdown=slowdown,
        up_mbps=up,
        down_mbps=2.5 * up,
        device_overrides={},
        samples_per_device=samples,
        out=str(out),
    )


def run_cell(
    base: RunConfig, slowdown: float, up: float, samples: int, out: Path, resume: bool
) -> dict[str, dict[str, Any]]:
    """fl, sfl and pipelearn of one cell: each mode's epoch time, bound and plan."""
    runs = {}
    for mode in MODES:
        run_dir = out / "runs" / f"s{slowdown:g}-up{up:g}-{mode}"
        label = f"slowdown {slowdown:g}, uplink {up:g} Mbit/s, {mode} ({samples} samples per device)"
        metrics, wall_s = run_or_keep(cell_config(base, mode, slowdown, up, samples, run_dir), resume, label)
        epochs = metrics["epoch_times_s"]
        runs[mode] = {
            "epoch_time_s": sum(epochs) / len(epochs),
            "bound": metrics["bottleneck"]["resource"],
            "split": metrics["split"],
            "microbatches": metrics["microbatches"],
            "wall_s": wall_s,
        }
        print(f"    {runs[mode]['epoch_time_s']:.2f} s per epoch, bound {runs[mode]['bound']}", file=sys.stderr)
    return runs


def draw(grid: dict[str, Any], cells: list[dict[str, Any]], out: Path, model: str) -> list[Path]:
    """The predicted maps over fl and sfl with each measured cell's measured and predicted speed-up written in."""
    drawn = []
    for mode in ("fl", "sfl"):
        marks = [
            (
                c["slowdown"],
                c["up_mbps"],
                f"measured {c[f'over_{mode}']:.2f}x\npredicted {c[f'predicted_over_{mode}']:.2f}x"
                + (f"\n({c['samples']} samples)" if c["shortened"] else "")
                if c.get(f"over_{mode}") is not None
                else f"predicted {c[f'predicted_over_{mode}']:.2f}x\nnot measured",
            )
            for c in cells
        ]
        drawn.append(
            draw_heat_map(
                grid[f"over_{mode}"],
                grid["slowdowns"],
                grid["uplinks_mbps"],
                (
                    "device slowdown (device compute time / server compute time)",
                    "uplink rate (Mbit/s); downlink 2.5x",
                    f"predicted speed-up of pipelearn over {mode} (x)",
                ),
                f"{model}, {grid['devices']} devices: pipelearn over {mode}, predicted (colour, numbers) and "
                "measured (blue)",
                out / f"map_measured_over_{mode}_{model}.png",
                marks,
                marks_in_cell=True,
            )
        )
    return drawn


def map_axis(measured: list[float]) -> list[float]:
    """One axis of the drawn map: the measured values and, between each two, their geometric mean (rounded)."""
    values = sorted(set(measured))
    between = [float(f"{(a * b) ** 0.5:.2g}") for a, b in itertools.pairwise(values)]
    return sorted(set(values) | set(between))


def main() -> None:
    """Run the grid's cells (within --budget-s), then draw the two maps and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vgg5")
    parser.add_argument("--slowdowns", nargs="+", type=float, default=[1.0, 10.0, 60.0])
    parser.add_argument(
        "--uplinks", nargs="+", type=float, default=[10.0, 50.0, 2.0], help="Mbit/s, run in this order (outer loop)"
    )
    parser.add_argument("--short-from", type=float, default=30.0, help="slowdown from which a cell trains less")
    parser.add_argument("--short-samples", type=int, default=100, help="samples per device in those cells")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no cell after this many seconds")
    parser.add_argument("--out", default="runs/measured-map")
    parser.add_argument("--resume", action="store_true", help="keep the runs an earlier call finished in --out")
    parser.add_argument(
        "--draw-only", action="store_true", help="draw the maps and print the table of the cells in --out again"
    )
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = _config(_parser().parse_args(["run", "--model", args.model, "--eval-every", "0", *rest]))
    if args.draw_only:
        cells = json.loads((out / "measured_map.json").read_text())["cells"]
        base = dataclasses.replace(base, profile_in=str(out / "profile.json")).validate()
        finish(base, cells, out, args, load_profile(out / "profile.json"))
        return
    shape, classes = data_shape(base)
    print("profiling the model once for every plan and prediction ...", file=sys.stderr)
    profile = profile_model(canonical_model_name(base.model), make_model(base, shape, classes), shape, base.batch_size)
    save_profile(profile, out / "profile.json")
    base = dataclasses.replace(base, profile_in=str(out / "profile.json")).validate()
    model = make_model(base, shape, classes)
    full = base.samples_per_device or 0
    began, cells = time.monotonic(), []
    for up in args.uplinks:  # every slowdown at the first uplink, then the next: a short budget spans the slowdowns
        for slowdown in sorted(args.slowdowns):
            samples = args.short_samples if slowdown >= args.short_from else full
            sized = dataclasses.replace(base, samples_per_device=samples)
            ours = predicted_epoch_s(sized, model, "pipelearn", slowdown, up, profile)
            cell: dict[str, Any] = {"slowdown": slowdown, "up_mbps": up, "samples": samples}
            cell |= {"shortened": samples != full}
            for mode in ("fl", "sfl"):
                cell[f"predicted_over_{mode}"] = predicted_epoch_s(sized, model, mode, slowdown, up, profile) / ours
            if time.monotonic() - began > args.budget_s:
                cell["not_measured"] = "--budget-s spent"
            else:
                try:
                    runs = run_cell(base, slowdown, up, samples, out, args.resume)
                except RuntimeError as exc:
                    cell["not_measured"] = f"a run failed: {exc}"
                else:
                    cell["runs"] = runs
                    for mode in ("fl", "sfl"):
                        cell[f"over_{mode}"] = runs[mode]["epoch_time_s"] / runs["pipelearn"]["epoch_time_s"]
            cells.append(cell)
            (out / "measured_map.json").write_text(json.dumps({"cells": cells}, indent=1) + "\n")
    finish(base, cells, out, args, profile)


def finish(base: RunConfig, cells: list[dict[str, Any]], out: Path, args: argparse.Namespace, profile: Any) -> None:
    """The predicted map around the cells, measured_map.json, the two figures and the table."""
    full = base.samples_per_device
    grid = speedup_map(base, (), map_axis(args.slowdowns), map_axis(args.uplinks), profile=profile)
    result = {"model": base.model, "devices": base.devices, "samples_per_device": full, "cells": cells, "map": grid}
    (out / "measured_map.json").write_text(json.dumps(result, indent=1) + "\n")
    for path in draw(grid, cells, out, base.model):
        print(path, file=sys.stderr)
    print("| slowdown | uplink (Mbit/s) | samples per device | over fl: measured | predicted | over sfl: measured "
          "| predicted | bound: fl / sfl / pipelearn |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for c in cells:
        got = c.get("runs")
        shown = {m: f"{c[f'over_{m}']:.2f}x" if got else "not measured" for m in ("fl", "sfl")}
        bounds = " / ".join(got[m]["bound"] for m in MODES) if got else c["not_measured"]
        print(
            f"| {c['slowdown']:g} | {c['up_mbps']:g} | {c['samples']}{' (shortened)' if c['shortened'] else ''} "
            f"| {shown['fl']} | {c['predicted_over_fl']:.2f}x | {shown['sfl']} | {c['predicted_over_sfl']:.2f}x "
            f"| {bounds} |"
        )


if __name__ == "__main__":
    main()
