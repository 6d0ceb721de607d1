"""`pipelearn bench --accuracy`: Table 1, the test accuracy of fl, sfl and pipelearn on each data set and model.

Every cell trains with the same settings (the paper's reference workload by default: 10,000 training samples over
4 devices, batch 100) and is evaluated on the whole test split. Split and micro-batch counts come from the planner
under each network (4g, 4g+, wifi); a cell then trains at that plan over an unlimited link with no device slowdown,
since the network and the slowdown change when things happen, never what is computed. Networks whose plans
coincide share one pipelearn run. sfl takes the planner's split under the first network: with one micro-batch and
FedAvg of both halves, sfl computes what fl computes at any split. Cells run one after another and are kept in
`DIR/runs/`; `--resume` keeps those an earlier call finished, as the bench does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelearn.config import ConfigError, DeviceOverride, RunConfig
from pipelearn.data.registry import canonical_name
from pipelearn.models import canonical_model_name
from pipelearn.planner.resolve import at_best_plan

ACCURACY_MODES = ("fl", "sfl", "pipelearn")
"""The techniques of Table 1."""
NETWORKS = ("4g", "4g+", "wifi")
"""The networks whose plans pipelearn (and sfl, the first) trains at."""
DEFAULT_EPOCHS = 10
"""Epochs of every cell unless --epochs says otherwise: 250 steps per device. MobileNetV3-Small, the slowest of the
three to learn, passes 90% on MNIST only after 5 epochs of 25 steps (trained alone on 2,500 samples); the paper's
reference code defaults to 100 epochs, hours per ResNet18 cell on a CPU."""
WORKLOAD = {"devices": 4, "samples_per_device": 2500, "batch_size": 100, "epochs": DEFAULT_EPOCHS, "eval_every": 0}
"""The paper's reference workload (10,000 samples over 4 devices, batch 100); only the final model is evaluated."""
ACCURACY_NETWORK = "unlimited"
"""The link an accuracy run trains over, at the plan made for a real network."""
_LINK_KEYS = ("up_mbps", "down_mbps", "latency_ms", "up_schedule", "down_schedule", "netns")


@dataclass(frozen=True)
class Table:
    """Which data sets, models and techniques Table 1 holds, and which of them this call runs."""

    datasets: tuple[str, ...] = ("mnist", "fashion-mnist")
    models: tuple[str, ...] = ("vgg5", "resnet18", "mobilenetv3-small")
    modes: tuple[str, ...] = ACCURACY_MODES
    run_datasets: tuple[str, ...] = datasets
    run_models: tuple[str, ...] = models
    run_modes: tuple[str, ...] = modes

    @classmethod
    def chosen(
        cls,
        datasets: Sequence[str] | None = None,
        models: Sequence[str] | None = None,
        modes: Sequence[str] | None = None,
    ) -> Table:
        """The whole table, of which only the named data sets, models and modes run (all where None); checked."""
        whole = cls()
        return cls(
            datasets=_union(whole.datasets, datasets, canonical_name, "data set"),
            models=_union(whole.models, models, canonical_model_name, "model"),
            modes=whole.modes,
            run_datasets=_chosen(whole.datasets, datasets, canonical_name, "data set"),
            run_models=_chosen(whole.models, models, canonical_model_name, "model"),
            run_modes=_chosen(whole.modes, modes, _mode, "mode"),
        )

    def runs(self, dataset: str, model: str, mode: str) -> bool:
        """Whether this call runs the cells of (data set, model, mode)."""
        return dataset in self.run_datasets and model in self.run_models and mode in self.run_modes


def _mode(name: str) -> str:
    if name not in ACCURACY_MODES:
        raise ValueError(f"unknown mode {name!r} for the accuracy table; expected some of {', '.join(ACCURACY_MODES)}")
    return name


def _chosen(whole: tuple[str, ...], names: Sequence[str] | None, canonical: Any, what: str) -> tuple[str, ...]:
    if names is None:
        return whole
    if not names:
        raise ValueError(f"no {what} named; name at least one, or leave the flag out for all of them")
    try:
        return tuple(dict.fromkeys(canonical(n) for n in names))
    except ValueError as exc:
        raise ValueError(f"accuracy table: {exc}") from None


def _union(whole: tuple[str, ...], names: Sequence[str] | None, canonical: Any, what: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*whole, *_chosen(whole, names, canonical, what)]))


def plan_config(base: RunConfig, dataset: str, model: str, network: str, mode: str) -> RunConfig:
    """The configuration the planner is asked for: the workload under `network`, every choice left to it."""
    return at_best_plan(base, mode, dataset=dataset, model=model, network=network)


def make_plans(base: RunConfig, dataset: str, model: str, cache: dict[Any, Any]) -> dict[str, Any]:
    """The planner's split and micro-batch counts for sfl and pipelearn under each network, timed; `cache` holds
    profiles by (model, input shape), so data sets of one shape share one."""
    from pipelearn.data.dealing import data_shape
    from pipelearn.models.parts import make_model
    from pipelearn.planner.measure import profile_model
    from pipelearn.planner.search import plan_run

    began = time.monotonic()
    config = plan_config(base, dataset, model, NETWORKS[0], "pipelearn")
    shape, classes = data_shape(config)
    whole = make_model(config, shape, classes)
    key = (canonical_model_name(model), shape, base.batch_size, base.batchnorm)
    if key not in cache:
        cache[key] = profile_model(key[0], whole, shape, base.batch_size)
    plans: dict[str, Any] = {}
    for network in NETWORKS:
        plans[network] = {}
        for mode in ("sfl", "pipelearn"):
            planned = plan_run(plan_config(base, dataset, model, network, mode), whole, shape, cache[key]).plan
            plans[network][mode] = {
                "splits": planned.splits,
                "microbatches": planned.microbatches,
                "predicted_epoch_s": planned.predicted_epoch_s,
            }
    return {"networks": plans, "planning_s": time.monotonic() - began}


def cells_of(table: Table, plans: dict[str, Any]) -> list[dict[str, Any]]:
    """Every cell of the table, in the order they run: per data set and model, fl, sfl, then one pipelearn cell per
    distinct plan (with the networks that share it); `plans` by "dataset/model", where made."""
    cells = []
    for dataset in table.datasets:
        for model in table.models:
            made = plans.get(f"{dataset}/{model}")
            for mode in table.modes:
                base = {"dataset": dataset, "model": model, "mode": mode}
                if mode == "fl" or made is None:
                    cells.append({**base, "networks": list(NETWORKS), "splits": None, "microbatches": None})
                elif mode == "sfl":
                    plan = made["networks"][NETWORKS[0]]["sfl"]
                    cells.append({**base, "networks": [NETWORKS[0]], **_plan_of(plan)})
                else:
                    shared: dict[str, dict[str, Any]] = {}
                    for network in NETWORKS:
                        plan = _plan_of(made["networks"][network]["pipelearn"])
                        key = json.dumps(plan)
                        shared.setdefault(key, {**base, "networks": [], **plan})["networks"].append(network)
                    cells.extend(shared.values())
    for cell in cells:
        cell["run_dir"] = run_name(cell)
    return cells


def _plan_of(plan: dict[str, Any]) -> dict[str, Any]:
    return {"splits": list(plan["splits"]), "microbatches": list(plan["microbatches"])}


def run_name(cell: dict[str, Any]) -> str:
    """The directory of a cell's run under DIR/runs: its data set, model, mode and plan."""
    parts = [cell["dataset"], cell["model"], cell["mode"]]
    if cell["splits"] is not None and cell["mode"] != "fl":
        parts.append("split" + "_".join(str(s) for s in _compacted(cell["splits"])))
    if cell["microbatches"] is not None and cell["mode"] == "pipelearn":
        parts.append("mb" + "_".join(str(n) for n in _compacted(cell["microbatches"])))
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", "-".join(parts))


def _compacted(values: list[int]) -> list[int]:
    return values[:1] if len(set(values)) == 1 else values


def cell_config(base: RunConfig, cell: dict[str, Any], out: Path) -> RunConfig:
    """One cell's run: the workload with the cell's data set, model, mode and plan, over an unlimited link."""
    values: dict[str, Any] = {
        "dataset": cell["dataset"],
        "model": cell["model"],
        "mode": cell["mode"],
        "network": ACCURACY_NETWORK,
        "up_mbps": None,
        "down_mbps": None,
        "latency_ms": None,
        "up_schedule": None,
        "down_schedule": None,
        "netns": False,
        "device_slowdown": 1.0,
        "device_overrides": {},
        "split": "auto" if cell["mode"] == "fl" else cell["splits"][0],
        "microbatches": cell["microbatches"][0] if cell["mode"] == "pipelearn" else 1,
        "out": str(out / "runs" / cell["run_dir"]),
    }
    if cell["mode"] != "fl" and (len(set(cell["splits"])) > 1 or len(set(cell["microbatches"])) > 1):
        values["device_overrides"] = {
            d: DeviceOverride(split=s, microbatches=n if cell["mode"] == "pipelearn" else None)
            for d, (s, n) in enumerate(zip(cell["splits"], cell["microbatches"], strict=True))
        }
    return dataclasses.replace(base, **values).validate()


def settings_of(base: RunConfig) -> dict[str, Any]:
    """What every cell shares; a table resumed into the same directory must share it too."""
    keys = ["devices", "samples_per_device", "batch_size", "epochs", "lr", "momentum", "optimizer_state", "seed"]
    keys += ["partition", "dirichlet_alpha", "aggregate_every", "test_samples", "batchnorm", "compress"]
    keys += ["compress_up", "compress_down", "device_slowdown"]
    return {k: getattr(base, k) for k in keys}


def accuracy_bench(
    base: RunConfig, table: Table, out: Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Plan, then run every cell this call runs, one after another, keeping each; write accuracy.json and
    accuracy.md after each cell; return the results."""
    from pipelearn.bench.accuracy_table import write_accuracy_report
    from pipelearn.bench.runner import recorded_wall_s, refuse_earlier, run_or_keep, say

    refuse_earlier(out, "accuracy.json", resume, base.replace)
    out.mkdir(parents=True, exist_ok=True)
    earlier = _earlier(out, base) if resume else {"plans": {}, "cells": []}
    plans: dict[str, Any] = dict(earlier["plans"])
    result: dict[str, Any] = {"settings": settings_of(base), "network": ACCURACY_NETWORK, "plans": plans}
    profiles: dict[Any, Any] = {}
    for dataset in table.run_datasets:
        for model in table.run_models:
            key = f"{dataset}/{model}"
            if key not in plans and any(m in table.run_modes for m in ("sfl", "pipelearn")):
                say(progress, f"{key}: profiling the model and planning sfl and pipelearn under each network ...")
                plans[key] = make_plans(base, dataset, model, profiles)
    recorded = {c["run_dir"]: c for c in earlier["cells"] if c.get("status") in ("run", "kept")}
    cells = cells_of(table, plans)
    result["cells"] = [_carried(c, recorded, out) for c in cells]
    write_accuracy_report(out, result)
    todo = [i for i, c in enumerate(cells) if table.runs(c["dataset"], c["model"], c["mode"])]
    for n, i in enumerate(todo, 1):
        cell = cells[i]
        label = f"[{n}/{len(todo)}] {cell['dataset']} {cell['model']} {cell['mode']} ({', '.join(cell['networks'])})"
        try:
            metrics, wall_s = run_or_keep(cell_config(base, cell, out), resume, label, progress)
        except RuntimeError as exc:  # a failed cell is recorded and the table goes on; --resume runs it again
            result["cells"][i] = {**cell, "status": "failed", "error": str(exc)}
            say(progress, f"    failed: {exc}")
        else:
            kept = wall_s is None
            wall_s = recorded_wall_s(out / "runs" / cell["run_dir"]) if kept else wall_s
            result["cells"][i] = _finished(cell, metrics, wall_s, "kept" if kept else "run")
            took = "wall time not recorded" if wall_s is None else f"{wall_s:.0f} s"
            say(progress, f"    test accuracy {100 * metrics['test_accuracy']:.2f}% ({took})")
        write_accuracy_report(out, result)
    return result


def _earlier(out: Path, base: RunConfig) -> dict[str, Any]:
    """The plans and cells of an earlier call into `out`, which must have used the same settings."""
    path = out / "accuracy.json"
    if not path.exists():
        return {"plans": {}, "cells": []}
    earlier: dict[str, Any] = json.loads(path.read_text())
    now = json.loads(json.dumps(settings_of(base)))
    differ = sorted(k for k in now if earlier["settings"].get(k) != now[k])
    if differ:
        shown = ", ".join(f"{k} {earlier['settings'].get(k)!r} (now {now[k]!r})" for k in differ[:3])
        raise ConfigError(
            f"--resume: {path} was made with other settings: {shown}; every cell of the table must share them: "
            "use another --out, or drop --resume to start the table afresh"
        )
    return earlier


def _carried(cell: dict[str, Any], recorded: dict[str, dict[str, Any]], out: Path) -> dict[str, Any]:
    """A cell as an earlier call left it (finished), or not run."""
    if cell["run_dir"] in recorded and (out / "runs" / cell["run_dir"] / "metrics.json").exists():
        return {**recorded[cell["run_dir"]], "status": "kept"}
    return {**cell, "status": "not run"}


def _finished(cell: dict[str, Any], metrics: dict[str, Any], wall_s: float | None, status: str) -> dict[str, Any]:
    return {
        **cell,
        "status": status,
        "test_accuracy": metrics["test_accuracy"],
        "epochs": metrics["epochs"],
        "train_time_s": metrics["train_time_s"],
        "wall_s": wall_s,
    }


def accuracy_command(args: argparse.Namespace, base: RunConfig, out: Path) -> str:
    """Run `pipelearn bench --accuracy` from parsed flags and the workload into `out`; return where the results are."""
    if args.quick:
        raise ConfigError("--quick is for the timing bench; for a small accuracy table name --models, --datasets, "
                          "--epochs and --samples-per-device")  # fmt: skip
    given = [k for k in _LINK_KEYS if getattr(base, k) not in (None, False)]
    if given:
        raise ConfigError(
            f"the accuracy table plans under the presets {', '.join(NETWORKS)} and trains over an unlimited link; "
            f"leave out {given[0]}"
        )
    table = Table.chosen(args.datasets, args.models, args.modes)
    accuracy_bench(base, table, out, resume=args.resume, progress=not args.quiet)
    return f"accuracy: Table 1 in {out}/accuracy.md, results in {out}/accuracy.json, runs in {out}/runs/"


def check_accuracy_flags(args: argparse.Namespace) -> None:
    """Refuse the accuracy table's own flags on the timing bench, and the timing bench's on the table."""
    if args.datasets is not None and not args.accuracy:
        raise ConfigError("--datasets chooses cells of the accuracy table: add --accuracy, or leave it out")
    if args.networks is not None and args.accuracy:
        raise ConfigError(
            f"--networks: the accuracy table plans under {', '.join(NETWORKS)} and trains over an unlimited link; "
            "leave it out"
        )
