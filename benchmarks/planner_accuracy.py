"""The planner against measurement: predicted and measured epoch time of the auto plan, measured time over the
bound, and the auto plan against the best of a small measured grid of (split, micro-batches).

Usage:
  python benchmarks/planner_accuracy.py                       # everything (about 35 minutes on a quiet machine)
  python benchmarks/planner_accuracy.py --workloads vgg5-mnist --networks wifi --fleets homogeneous \\
      --grid-splits 2 --grid-microbatches 2 --samples-per-device 40 --epochs 1        # a smoke test

Workloads: vgg5 on MNIST and resnet18 on CIFAR-shaped (3x32x32) synthetic data, 4 devices, device slowdown 4. The
global model is evaluated only at the end (eval_every 0): the planner times training, and an evaluation during it
would share the cores with what is timed.
Calibration: per workload, the profile is measured once, then calibrated by three runs (CALIBRATION) on a link that
no measured row uses (30/30 Mbit/s, 10 ms), as `pipelearn plan --calibrate` does; the auto runs plan from that
profile (profile_in), and every prediction is from it. Each row also keeps the prediction of the profile as
measured, before calibration.
Fleets: homogeneous, and heterogeneous (device slowdowns 4, 8, 2, 4; device 3 at half the preset's uplink rate).
Every grid point runs the same (split, micro-batches) on every device; its prediction is the simulator's for that
plan from a profile measured once per workload by this script. Rows and a summary go to stdout as markdown, each
run's metrics under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from pipelearn.config import NETWORK_PRESETS, DeviceOverride, RunConfig
from pipelearn.models import canonical_model_name
from pipelearn.plan import RunPlan
from pipelearn.planner.calibrate import RecordedRun, calibrate, describe
from pipelearn.planner.command import compact
from pipelearn.planner.costs import CostModel
from pipelearn.planner.profile import Profile, profile_model, save_profile
from pipelearn.planner.search import run_simulation
from pipelearn.runtime.launch import run_local
from pipelearn.runtime.work import data_shape, make_model

WORKLOADS: dict[str, dict[str, Any]] = {
    "vgg5-mnist": {
        "model": "vgg5",
        "dataset": "mnist",
        "samples_per_device": 300,
        "batch_size": 100,
        "epochs": 2,
        "test_samples": 1000,
        "eval_every": 0,
    },
    "resnet18-cifar": {
        "model": "resnet18",
        "dataset": "synthetic",
        "synthetic_shape": (3, 32, 32),
        "samples_per_device": 100,
        "batch_size": 50,
        "epochs": 1,
        "test_samples": 200,
        "eval_every": 0,
    },
}
GRIDS = {"vgg5-mnist": ([1, 2, 3], [1, 4, 8]), "resnet18-cifar": ([2, 5, 8], [1, 2, 4])}
"""Per workload: the splits and micro-batch counts of the measured grid."""
CALIBRATION = {"vgg5-mnist": [(2, 1), (2, 8), (2, 25)], "resnet18-cifar": [(5, 1), (5, 4), (5, 12)]}
"""Per workload: the (split, micro-batches) of the runs that calibrate its profile, on CALIBRATION_LINK: from one
micro-batch to micro-batches of 4 samples, the range the planner chooses from, so that both the factor and the
fixed cost of an action are pinned down."""
CALIBRATION_LINK: dict[str, Any] = {"up_mbps": 30.0, "down_mbps": 30.0, "latency_ms": 10.0}


def fleet(kind: str, network: str, devices: int) -> dict[int, DeviceOverride]:
    """Per-device overrides of a fleet kind under a network preset (for the first four devices)."""
    if kind == "homogeneous":
        return {}
    overrides = {
        1: DeviceOverride(slowdown=8.0),
        2: DeviceOverride(slowdown=2.0),
        3: DeviceOverride(up_mbps=NETWORK_PRESETS[network].up_mbps / 2),
    }
    return {d: o for d, o in overrides.items() if d < devices}


def measure(config: RunConfig) -> dict[str, Any]:
    """Run it; return its metrics."""
    return run_local(config, progress=False)


def mean_epoch(metrics: dict[str, Any]) -> float:
    """Mean measured epoch time."""
    return statistics.fmean(metrics["epoch_times_s"])


def measured_bound(metrics: dict[str, Any]) -> float:
    """Busy seconds per epoch of the run's busiest resource."""
    return float(metrics["bottleneck"]["busy_s"]) / len(metrics["epoch_times_s"])


def predicted(config: RunConfig, metrics: dict[str, Any], profile: Profile) -> float:
    """The simulator's mean epoch time for the plan a run ran, from `profile`."""
    costs = CostModel.for_run(profile, config)
    samples = [d["samples"] for d in metrics["device"]]
    sim = run_simulation(config, RunPlan.from_dict(metrics["plan"]), costs, samples)
    return statistics.fmean(sim.epoch_times_s())


def main() -> None:
    """Run every workload, network and fleet asked for; print one markdown row each, then a summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--networks", nargs="+", default=["4g", "4g+", "wifi"])
    parser.add_argument("--fleets", nargs="+", default=["homogeneous", "heterogeneous"])
    parser.add_argument("--grid-fleets", nargs="*", default=["homogeneous"], help="fleets that also run the grid")
    parser.add_argument("--grid-splits", type=int, nargs="*", help="override the workload's grid splits")
    parser.add_argument("--grid-microbatches", type=int, nargs="*", help="override the grid's micro-batch counts")
    parser.add_argument("--samples-per-device", type=int, help="override the workload's")
    parser.add_argument("--epochs", type=int, help="override the workload's")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--out", default="runs/planner-accuracy")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    print(
        "| workload | network | fleet | auto split | auto micro-batches | predicted epoch (s) | measured epoch (s) | "
        "error | measured / bound | grid best (split, micro-batches, s) | auto / grid best |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.workloads:
        values = dict(WORKLOADS[name], devices=args.devices, device_slowdown=4.0)
        if args.samples_per_device:
            values["samples_per_device"] = args.samples_per_device
        if args.epochs:
            values["epochs"] = args.epochs
        base = RunConfig(**values).validate()
        shape, classes = data_shape(base)
        measured = profile_model(
            canonical_model_name(base.model), make_model(base, shape, classes), shape, base.batch_size
        )
        calibration_runs = []
        for s, n in CALIBRATION[name]:
            where = Path(args.out) / name / "calibration" / f"p{s}-n{n}"
            measure(RunConfig(**values, **CALIBRATION_LINK, split=s, microbatches=n, out=str(where)).validate())
            calibration_runs.append(RecordedRun.load(where))
        profile = calibrate(measured, calibration_runs)
        profile_file = Path(args.out) / name / "profile.json"
        save_profile(profile, profile_file)
        print(f"{name}: {describe(profile)}", flush=True)
        splits, counts = GRIDS[name]
        splits = args.grid_splits or splits
        counts = args.grid_microbatches or counts
        for network in args.networks:
            for kind in args.fleets:
                out = Path(args.out) / name / network / kind
                common = {**values, "network": network, "device_overrides": fleet(kind, network, args.devices)}
                auto_config = RunConfig(
                    **common, split="auto", microbatches="auto", profile_in=str(profile_file), out=str(out / "auto")
                ).validate()
                auto = measure(auto_config)
                row: dict[str, Any] = {
                    "workload": name,
                    "network": network,
                    "fleet": kind,
                    "split": auto["split"],
                    "microbatches": auto["microbatches"],
                    "predicted_s": auto["plan"]["predicted_epoch_s"],
                    "predicted_uncalibrated_s": predicted(auto_config, auto, measured),
                    "measured_s": mean_epoch(auto),
                    "bound_s": measured_bound(auto),
                    "grid": [],
                }
                if kind in args.grid_fleets:
                    for s in splits:
                        for n in counts:
                            config = RunConfig(**common, split=s, microbatches=n, out=str(out / f"p{s}-n{n}"))
                            metrics = measure(config.validate())
                            row["grid"].append(
                                {
                                    "split": s,
                                    "microbatches": n,
                                    "measured_s": mean_epoch(metrics),
                                    "predicted_s": predicted(config, metrics, profile),
                                    "predicted_uncalibrated_s": predicted(config, metrics, measured),
                                }
                            )
                rows.append(row)
                print(_row(row), flush=True)
                (out / "row.json").write_text(json.dumps(row, indent=1))
    print()
    print(_summary(rows))


def _row(row: dict[str, Any]) -> str:
    error = row["predicted_s"] / row["measured_s"] - 1
    grid = min(row["grid"], key=lambda g: g["measured_s"]) if row["grid"] else None
    best = f"{grid['split']}, {grid['microbatches']}, {grid['measured_s']:.2f}" if grid else "-"
    ratio = f"{row['measured_s'] / grid['measured_s']:.3f}" if grid else "-"
    return (
        f"| {row['workload']} | {row['network']} | {row['fleet']} | {compact(row['split'])} | "
        f"{compact(row['microbatches'])} | {row['predicted_s']:.2f} | {row['measured_s']:.2f} | {error:+.1%} | "
        f"{row['measured_s'] / row['bound_s']:.2f} | {best} | {ratio} |"
    )


def _summary(rows: list[dict[str, Any]]) -> str:
    """Median and largest prediction error over every measured run (auto and grid), and auto against the grid."""
    lines = []
    for key, what in (("predicted_s", "prediction error"), ("predicted_uncalibrated_s", "before calibration")):
        errors = [abs(r[key] / r["measured_s"] - 1) for r in rows]
        errors += [abs(g[key] / g["measured_s"] - 1) for r in rows for g in r["grid"]]
        lines.append(
            f"{what} over {len(errors)} runs: median {statistics.median(errors):.1%}, largest {max(errors):.1%}"
        )
    versus = [r["measured_s"] / min(g["measured_s"] for g in r["grid"]) for r in rows if r["grid"]]
    if versus:
        lines.append(
            f"auto plan against the grid's best: median {statistics.median(versus):.3f}, worst {max(versus):.3f} "
            f"({sum(v <= 1.05 for v in versus)} of {len(versus)} within 5%)"
        )
    bounds = [r["measured_s"] / r["bound_s"] for r in rows]
    lines.append(f"auto plan's measured epoch over its bound: median {statistics.median(bounds):.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
