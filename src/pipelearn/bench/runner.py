"""`pipelearn bench`: every mode on one workload under each network, each split mode at its own best plan."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelearn.bench.speedup_map import speedup_map
from pipelearn.bench.verdicts import REGIME_LABELS
from pipelearn.config import NETWORK_PRESETS, ConfigError, RunConfig
from pipelearn.planner.resolve import at_best_plan

BENCH_MODES = ("fl", "sl", "sfl", "pipelearn")
REGIME_SLOWDOWNS = {"strong": 4.0, "edge": 40.0}
"""Each regime's device slowdown: strong devices (a laptop beside a desktop) and edge devices (Raspberry-Pi-class
boards beside a server, as on the paper's testbed; docs/bench.md argues the value)."""


@dataclass(frozen=True)
class BenchPlan:
    """Which models, networks and modes a bench runs, in which regime (device slowdown), and how big each run is."""

    regime: str = "strong"
    device_slowdown: float = REGIME_SLOWDOWNS["strong"]
    models: tuple[str, ...] = ("vgg5", "resnet18")
    networks: tuple[str, ...] = ("4g", "4g+", "wifi")
    modes: tuple[str, ...] = BENCH_MODES
    samples_per_device: dict[str, int] = field(default_factory=lambda: {"vgg5": 500, "resnet18": 200})
    epochs: int = 2
    test_samples: dict[str, int] = field(default_factory=lambda: {"resnet18": 1000})
    """Per model, test samples for the final accuracy (others: the run's setting, the whole test set by default)."""
    eval_every: dict[str, int] = field(default_factory=lambda: {"resnet18": 0})
    """Per model, rounds between evaluations during training (0: the final model only). ResNet18's evaluation takes
    minutes on a CPU and would share the cores with the training it times."""

    @classmethod
    def of(cls, regime: str, quick: bool = False) -> BenchPlan:
        """The bench of a regime ("strong" or "edge"), or with `quick` its one setting that runs in a minute or two."""
        if regime not in REGIME_SLOWDOWNS:
            raise ConfigError(f"--regime: unknown regime {regime!r}; expected one of {', '.join(REGIME_SLOWDOWNS)}")
        slowdown = REGIME_SLOWDOWNS[regime]
        if quick:
            return cls.quick(regime)
        if regime == "strong":
            return cls()
        # edge: devices 10 times slower than strong ones, so smaller data, one epoch and no sequential sl, for
        # the whole of it to run in about an hour on 2 cores (an estimate: it was not run whole, see RESULTS.md)
        return cls(
            regime=regime,
            device_slowdown=slowdown,
            modes=("fl", "sfl", "pipelearn"),
            samples_per_device={"vgg5": 200, "resnet18": 100},
            epochs=1,
        )

    @classmethod
    def quick(cls, regime: str = "strong") -> BenchPlan:
        """A minute or two on a laptop: VGG5 under wifi at the regime's slowdown, without the slow sequential sl."""
        return cls(
            regime=regime,
            device_slowdown=REGIME_SLOWDOWNS[regime],
            models=("vgg5",),
            networks=("wifi",),
            modes=("fl", "sfl", "pipelearn"),
            samples_per_device={"vgg5": 300},
            epochs=1,
        )

    @property
    def label(self) -> str:
        """The regime as the table and the figures name it, e.g. "edge devices (slowdown 40)"."""
        return f"{REGIME_LABELS.get(self.regime, self.regime)} (slowdown {self.device_slowdown:g})"

    def run_dir(self, model: str, network: str, mode: str) -> str:
        """The directory name of one run (the strong regime's keep the names of benches before regimes)."""
        return f"{'' if self.regime == 'strong' else self.regime + '-'}{model}-{network}-{mode}"

    def chosen(
        self,
        modes: Sequence[str] | None = None,
        models: Sequence[str] | None = None,
        networks: Sequence[str] | None = None,
    ) -> BenchPlan:
        """This plan with only the modes, models and networks named (`--modes`, `--models`, `--networks`), checked."""
        from pipelearn.models import canonical_model_name

        changes: dict[str, Any] = {}
        if modes:
            changes["modes"] = parse_modes(modes)
        if models:
            changes["models"] = tuple(dict.fromkeys(canonical_model_name(m) for m in models))
        if networks:
            bad = [n for n in networks if n not in NETWORK_PRESETS]
            if bad:
                raise ConfigError(f"--networks: unknown network(s) {', '.join(bad)}; expected some of "
                                  f"{', '.join(NETWORK_PRESETS)}")  # fmt: skip
            changes["networks"] = tuple(dict.fromkeys(networks))
        return dataclasses.replace(self, **changes)

    def with_workload(self, config: RunConfig, given: Collection[str]) -> BenchPlan:
        """This plan with the workload settings the user gave (flags or a TOML file, `given`) for every model, in
        place of the plan's own per-model sizes."""
        changes: dict[str, Any] = {}
        for name in ("samples_per_device", "test_samples", "eval_every"):
            if name in given:
                changes[name] = {}  # an empty per-model table: every run takes the workload's value
        if "epochs" in given:
            changes["epochs"] = config.epochs
        if "device_slowdown" in given:
            changes["device_slowdown"] = config.device_slowdown
        return dataclasses.replace(self, **changes)


def run_config(base: RunConfig, model: str, network: str, mode: str, plan: BenchPlan, out: Path) -> RunConfig:
    """One run of the bench: the base workload with this model, network and mode, at the mode's own best plan."""
    return at_best_plan(
        base,
        mode,
        model=model,
        network=network,
        device_slowdown=plan.device_slowdown,
        samples_per_device=plan.samples_per_device.get(model, base.samples_per_device),
        epochs=plan.epochs,
        test_samples=plan.test_samples.get(model, base.test_samples),
        eval_every=plan.eval_every.get(model, base.eval_every),
        out=str(out),
    )


def row_of(metrics: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The numbers of one finished run that the bench's table and figures need."""
    devices = metrics["device"]
    return {
        "model": metrics["model"],
        "dataset": metrics["dataset"],
        "network": metrics["network"],
        "mode": metrics["mode"],
        "run_dir": run_dir.name,
        "epoch_time_s": sum(metrics["epoch_times_s"]) / len(metrics["epoch_times_s"]),
        "train_time_s": metrics["train_time_s"],
        "server_idle_s": metrics["server"]["idle_s"],
        "device_idle_s": sum(d["idle_s"] for d in devices) / len(devices),
        "bytes_up": metrics["bytes_up"],
        "bytes_down": metrics["bytes_down"],
        "bound_s": metrics["bottleneck"]["busy_s"],
        "bound_resource": metrics["bottleneck"]["resource"],
        "measured_over_bound": metrics["train_time_s"] / max(metrics["bottleneck"]["busy_s"], 1e-9),
        "split": metrics["split"],
        "microbatches": metrics["microbatches"],
        "predicted_epoch_s": (metrics.get("plan") or {}).get("predicted_epoch_s"),
        "test_accuracy": metrics["test_accuracy"],
        "failed_devices": metrics["failed_devices"],
    }


def bench(
    base: RunConfig,
    plans: BenchPlan | Sequence[BenchPlan],
    out: Path,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every (regime, model, network, mode) of the plans, keep each finished run, write bench.json, the report
    and one sentence per setting on where pipelining paid ("verdicts").

    A run that fails is listed under "failed" and the bench goes on; its speed-up map is drawn per model."""
    from pipelearn.bench.report import report
    from pipelearn.bench.verdicts import verdicts

    plans = [plans] if isinstance(plans, BenchPlan) else list(plans)
    refuse_earlier(out, "bench.json", resume, base.replace)
    out.mkdir(parents=True, exist_ok=True)
    cells = [(p, m, n, mode) for p in plans for m in p.models for n in p.networks for mode in p.modes]
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    result: dict[str, Any] = {"settings": _settings(base, plans), "runs": rows, "failed": failed}
    for i, (plan, model, network, mode) in enumerate(cells, 1):
        run_dir = out / "runs" / plan.run_dir(model, network, mode)
        label = f"[{i}/{len(cells)}] {plan.regime} {model} {network} {mode}"
        regime = {"regime": plan.regime, "device_slowdown": plan.device_slowdown}
        try:
            metrics, wall_s = run_or_keep(
                run_config(base, model, network, mode, plan, run_dir), resume, label, progress
            )
        except RuntimeError as exc:  # a failed run is recorded and the bench goes on; --resume runs it again
            failed.append(
                {"model": model, "network": network, "mode": mode, "run_dir": run_dir.name, "error": str(exc)} | regime
            )
            say(progress, f"    failed: {exc}")
        else:
            if wall_s is not None:
                say(
                    progress,
                    f"    {sum(metrics['epoch_times_s']) / plan.epochs:.1f} s per epoch ({wall_s:.0f} s with start-up)",
                )
            rows.append(row_of(metrics, run_dir) | regime)
        (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    result["verdicts"] = verdicts(rows)
    result["maps"] = {}
    for model in dict.fromkeys(m for p in plans for m in p.models):
        plan = next(p for p in plans if model in p.models)
        say(progress, f"predicting the speed-up map of {model} from a profile of the model ...")
        result["maps"][model] = speedup_map(
            dataclasses.replace(
                base, model=model, samples_per_device=plan.samples_per_device.get(model, base.samples_per_device)
            ),
            measured_points(rows, model, plan.device_slowdown),
        )
        (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    report(out)
    return result


WALL_FILE = "bench_wall.json"
"""Written into a bench's run directory beside metrics.json: the run's wall time, start-up and evaluation included."""
_NOT_RESULTS = ("out", "replace", "timeout_s", "heartbeat_s", "liveness_s", "data_dir", "download", "threads")
"""Settings a kept run may differ in: where it wrote, how patient it was and where its data lay."""


def run_or_keep(
    config: RunConfig, resume: bool, label: str, progress: bool = True
) -> tuple[dict[str, Any], float | None]:
    """One run of a bench into `config.out`, or with `resume` the run an earlier bench finished there (its
    metrics.json, made with the same settings); its metrics, and its wall time where it ran now (None if kept)."""
    from pipelearn.runtime.launch import run_local

    run_dir = Path(config.out)
    done = run_dir / "metrics.json"
    if resume and done.exists():
        metrics: dict[str, Any] = json.loads(done.read_text())
        check_same_settings(metrics.get("config") or {}, config, run_dir)
        say(progress, f"{label}: kept from an earlier bench")
        return metrics, None
    say(progress, f"{label}: training ...")
    began = time.monotonic()
    metrics = run_local(dataclasses.replace(config, replace=True), progress=False)  # the bench's own directory
    wall_s = time.monotonic() - began
    (run_dir / WALL_FILE).write_text(json.dumps({"wall_s": wall_s}) + "\n")
    return metrics, wall_s


def recorded_wall_s(run_dir: Path) -> float | None:
    """The wall time a bench recorded for the run in `run_dir`, or None where it recorded none."""
    path = run_dir / WALL_FILE
    return float(json.loads(path.read_text())["wall_s"]) if path.exists() else None


def check_same_settings(recorded: dict[str, Any], config: RunConfig, run_dir: Path) -> None:
    """Refuse to keep a finished run whose settings differ from what the bench would run now."""
    wanted = json.loads(config.to_json())
    differ = sorted(k for k in wanted if k not in _NOT_RESULTS and recorded.get(k) != wanted[k])
    if differ:
        shown = ", ".join(f"{k} {recorded.get(k)!r} (now {wanted[k]!r})" for k in differ[:3])
        raise ValueError(
            f"--resume: the run in {run_dir} was made with other settings: {shown}; use another --out, or drop "
            "--resume to run it again"
        )


def measured_points(rows: list[dict[str, Any]], model: str, slowdown: float) -> list[dict[str, Any]]:
    """pipelearn's measured speed-up over fl and sfl in each regime under each network, placed by the regime's
    slowdown (`slowdown` for rows of a bench before regimes) and the network's uplink rate."""
    points = []
    mine = [r for r in rows if r["model"] == model]
    for regime, network in dict.fromkeys((r.get("regime", "strong"), r["network"]) for r in mine):
        same = [r for r in mine if (r.get("regime", "strong"), r["network"]) == (regime, network)]
        times = {r["mode"]: r["epoch_time_s"] for r in same}
        if "pipelearn" in times and "fl" in times and "sfl" in times:
            points.append(
                {
                    "regime": regime,
                    "network": network,
                    "slowdown": same[0].get("device_slowdown", slowdown),
                    "up_mbps": NETWORK_PRESETS[network].up_mbps,
                    "over_fl": times["fl"] / times["pipelearn"],
                    "over_sfl": times["sfl"] / times["pipelearn"],
                }
            )
    return points


def _settings(base: RunConfig, plans: Sequence[BenchPlan]) -> dict[str, Any]:
    return {
        "devices": base.devices,
        "dataset": base.dataset,
        "batch_size": base.batch_size,
        "seed": base.seed,
        "regimes": [
            {
                "regime": plan.regime,
                "label": plan.label,
                "device_slowdown": plan.device_slowdown,
                "epochs": plan.epochs,
                **{k: _of(getattr(plan, k), plan.models) for k in ("samples_per_device", "test_samples", "eval_every")},
            }
            for plan in plans
        ],
        "plans": "each split mode at its own best plan from the planner (pipelearn: split and micro-batches; "
        "sl and sfl: split; fl: the whole model on the device)",
    }


def _of(per_model: dict[str, int], models: Sequence[str]) -> dict[str, int]:
    return {m: v for m, v in per_model.items() if m in models}


def refuse_earlier(out: Path, results: str, resume: bool, replace: bool) -> None:
    """Refuse to run a bench afresh into a directory that holds an earlier one's `results` (its runs would be run
    again over theirs), unless told to keep them (`resume`) or to replace them."""
    if (out / results).exists() and not (resume or replace):
        shown = str(out).replace("{", "{{").replace("}", "}}")
        raise ConfigError(
            f"{shown} holds an earlier bench ({results}): give --resume to keep its finished runs, a new {{0}}, or "
            "--replace to run them all again over theirs",
            "out",
        )


def say(progress: bool, text: str) -> None:
    """Print a line of progress to stderr, where `progress` asks for it."""
    if progress:
        print(text, file=sys.stderr, flush=True)


def parse_modes(names: Sequence[str]) -> tuple[str, ...]:
    """Modes named on the command line, checked."""
    bad = [n for n in names if n not in BENCH_MODES]
    if bad:
        raise ConfigError(f"--modes: unknown mode(s) {', '.join(bad)}; expected some of {', '.join(BENCH_MODES)}")
    return tuple(names)
