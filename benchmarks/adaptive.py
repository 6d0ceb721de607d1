"""Adaptive planning against static plans, measured: out of the box, after a bandwidth drop, after a device slows
down, and in a heterogeneous fleet.

    python benchmarks/adaptive.py drop --out runs/adaptive      # one scenario; `all` runs every one
    python benchmarks/adaptive.py all --quick --out runs/adaptive

Each scenario runs real processes over loopback and prints a table of epoch times (measured; the plan in force's
prediction), written also to OUT/adaptive.json:
- out-of-the-box: the adaptive run's epochs from the second on, predicted against measured, and against the best
  epoch of a measured grid of static plans;
- drop (every uplink 10 -> 2 Mbit/s a third of the way in) and slower (device 1 four times slower a third of the way
  in): the epochs after the change, adaptive and static, against an oracle (the static plan the planner makes knowing
  the new conditions, run through the same change);
- fleet (slowdowns 2, 4, 8, 16): pipelearn adaptive with the critical-path server order, the same without either,
  sfl at its best plan and fl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
from pathlib import Path
from typing import Any

from pipelearn.config import DeviceOverride, RunConfig
from pipelearn.data.dealing import data_shape
from pipelearn.models.parts import make_model
from pipelearn.planner.resolve import resolve_plan
from pipelearn.runtime.launch import run_local

BASE: dict[str, Any] = {
    "mode": "pipelearn",
    "dataset": "mnist",
    "model": "vgg5",
    "batchnorm": False,
    "devices": 2,
    "samples_per_device": 500,
    "batch_size": 50,
    "epochs": 6,
    "network": "4g",
    "device_slowdown": 10.0,
    "aggregate_every": 2,
    "split": "auto",
    "microbatches": "auto",
    "eval_every": 0,
    "test_samples": 500,
}


def run(config: RunConfig) -> dict[str, Any]:
    """One run's metrics, with the prediction of the plan in force each epoch."""
    metrics = run_local(config, progress=False)
    replans = metrics["replans"]
    epochs = len(metrics["epoch_times_s"])
    per_epoch = -(-(config.samples_per_device or 0) // config.batch_size) // (config.aggregate_every or 10**9) or 1
    in_force = [(replans[0]["old"] if replans else metrics["plan"])["predicted_epoch_s"]] * epochs
    for replan in replans:
        for epoch in range(-(-(replan["round"] + 1) // per_epoch), epochs):
            in_force[epoch] = replan["predicted_new_s"]
    return {
        "out": config.out,
        "epochs_s": metrics["epoch_times_s"],
        "predicted_s": in_force,
        "split": metrics["split"],
        "microbatches": metrics["microbatches"],
        "replans": [
            {
                "round": r["round"],
                "at_s": r["at_s"],
                "split": [d["split"] for d in r["new"]["devices"]],
                "microbatches": [d["microbatches"] for d in r["new"]["devices"]],
                "gain": r["predicted_gain"],
            }
            for r in replans
        ],
        "bottleneck": metrics["bottleneck"].get("resource"),
    }


def configured(out: Path, name: str, **values: Any) -> RunConfig:
    """The scenario's configuration of one run, writing into OUT/name."""
    return RunConfig(**{**BASE, **values, "out": str(out / name)}).validate()


def oracle(config: RunConfig, knowing: dict[str, Any]) -> RunConfig:
    """`config` with the static plan the planner makes knowing the conditions after the change (`knowing`)."""
    informed = dataclasses.replace(config, **knowing).validate()
    shape, classes = data_shape(informed)
    plan = resolve_plan(informed, make_model(informed, shape, classes), shape)
    overrides = {
        d: dataclasses.replace(
            config.device_overrides.get(d, DeviceOverride()), split=s.split, microbatches=s.microbatches
        )
        for d, s in enumerate(plan.devices)
    }
    return dataclasses.replace(config, adapt="off", device_overrides=overrides).validate()


def after(result: dict[str, Any], first_epoch: int) -> float:
    """The mean epoch from `first_epoch` on."""
    return statistics.mean(result["epochs_s"][first_epoch:])


def change_scenario(out: Path, quick: bool, change: dict[str, Any], knowing: dict[str, Any]) -> dict[str, Any]:
    """A change a third of the way in: adaptive, static and the oracle's static plan, each run through it."""
    epochs = 3 if quick else 6
    adaptive = configured(out, "adaptive", epochs=epochs, **change)
    static = dataclasses.replace(adaptive, adapt="off", out=str(out / "static"))
    informed = dataclasses.replace(oracle(adaptive, knowing), out=str(out / "oracle"))
    results = {name: run(c) for name, c in (("adaptive", adaptive), ("static", static), ("oracle", informed))}
    changed = max(1, epochs // 3)
    late = {name: after(r, changed + 1) for name, r in results.items()}  # the epochs after the change has settled
    return {
        "runs": results,
        "after_change_s": late,
        "adaptive_over_oracle": late["adaptive"] / late["oracle"],
        "static_over_oracle": late["static"] / late["oracle"],
    }


def change_at(quick: bool) -> float:
    """Seconds into training of the change: about a third of the run."""
    return 8.0 if quick else 15.0


def drop(out: Path, quick: bool) -> dict[str, Any]:
    """Every uplink 10 -> 2 Mbit/s a third of the way in."""
    t = change_at(quick)
    return change_scenario(
        out / "drop", quick, {"up_schedule": [[0, 10.0], [t, 2.0]]}, {"up_schedule": None, "up_mbps": 2.0}
    )


def slower(out: Path, quick: bool) -> dict[str, Any]:
    """Device 1 four times slower a third of the way in."""
    t = change_at(quick)
    schedule = {1: DeviceOverride(slowdown_schedule=[[0, 4.0], [t, 16.0]])}
    return change_scenario(
        out / "slower",
        quick,
        {"device_overrides": schedule},
        {"device_overrides": {1: DeviceOverride(device_slowdown=16.0)}},
    )


def fleet(out: Path, quick: bool) -> dict[str, Any]:
    """Slowdowns 2, 4, 8, 16: adaptive pipelearn with the critical-path order, without either, sfl and fl."""
    slowdowns = {d: DeviceOverride(device_slowdown=k) for d, k in enumerate((2.0, 4.0, 8.0, 16.0))}
    common = {"devices": 4, "device_overrides": slowdowns, "epochs": 2 if quick else 4, "samples_per_device": 300}
    configs = {
        "pipelearn adaptive, critical path": configured(
            out / "fleet", "adaptive", server_order="critical-path", **common
        ),
        "pipelearn static, arrival order": configured(out / "fleet", "static", adapt="off", **common),
        "sfl at its best plan": configured(out / "fleet", "sfl", mode="sfl", microbatches=1, adapt="off", **common),
        "fl": configured(out / "fleet", "fl", mode="fl", microbatches=1, adapt="off", **common),
    }
    results = {name: run(c) for name, c in configs.items()}
    return {
        "runs": results,
        "mean_epoch_s": {n: after(r, 1 if len(r["epochs_s"]) > 1 else 0) for n, r in results.items()},
    }


def out_of_the_box(out: Path, quick: bool) -> dict[str, Any]:
    """The adaptive run's prediction from the second epoch on, and its epochs against a grid of static plans."""
    cases = [("vgg5-4g", {"network": "4g"}), ("vgg5-wifi", {"network": "wifi", "device_slowdown": 10.0})]
    report: dict[str, Any] = {}
    for name, values in cases[:1] if quick else cases:
        adaptive = run(configured(out / "box" / name, "adaptive", epochs=3 if quick else 4, **values))
        grid = {}
        for split in (1, 2, 3):
            for micro in (2, 5, 10):
                c = configured(
                    out / "box" / name, f"s{split}m{micro}", split=split, microbatches=micro, epochs=2, **values
                )
                grid[f"split {split}, {micro} micro-batches"] = after(run(c), 1)
        late = adaptive["epochs_s"][1:]
        errors = [p / m - 1 for p, m in zip(adaptive["predicted_s"][1:], late, strict=True) if p is not None]
        best = min(grid.values())
        report[name] = {
            "adaptive": adaptive,
            "grid_s": grid,
            "prediction_error": errors,
            "adaptive_over_best": statistics.mean(late) / best,
        }
    return report


SCENARIOS = {"out-of-the-box": out_of_the_box, "drop": drop, "slower": slower, "fleet": fleet}


def main() -> None:
    """Run the scenarios asked for and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer cases")
    parser.add_argument("--out", type=Path, default=Path("runs/adaptive"))
    args = parser.parse_args()
    chosen = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "adaptive.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for name in chosen:
        done[name] = SCENARIOS[name](args.out, args.quick)
        done[name]["load_average"] = os.getloadavg()
        path.write_text(json.dumps(done, indent=1) + "\n")
        print(name, json.dumps({k: v for k, v in done[name].items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
