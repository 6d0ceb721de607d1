"""Calibrate a profile from recorded runs: every compute action's CPU seconds as a run took them (its trace's cpu_s)
against what the profile predicts, fitted per side as a line, factor * predicted + overhead_s.

A profile times each block alone, back to back, on one quiet thread. A run does the same work among its lanes'
threads, the transport's threads and the other processes on the host's cores: each action pays the runtime's
bookkeeping and hand-overs (the overhead), and work slows where processes take turns on the cores and their caches
(the factor). Both belong to the host and the fleet more than to the plan, so a few runs calibrate the plans of
others on the same host: `pipelearn plan --calibrate RUN_DIR ... --profile-out FILE`.

Where server and devices share the host, more messages cost more than their compute: the server's transport
threads parse, frame and pace each message in the server's process, holding the interpreter's lock its compute
then waits for. That is fitted last, as the server's seconds a message (Calibration.message_s): the value that
makes the simulator's epoch times of the runs closest to those measured, each plan's by the median of its repeated
runs. It is a fitted value, and takes up whatever else the simulator misses that grows with the messages.

A run on a shared host can be slow throughout (another process took the cores for a while). Runs of the same plan
repeated out-vote such a run: the actions of one cost (the same work on the same side) are averaged per run, and the
line is fitted to the median of those averages over the runs, weighted by the actions behind it. With one run of
each plan that is least squares over every action.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelearn.config import ConfigError, RunConfig, from_mapping
from pipelearn.data.dealing import data_shape
from pipelearn.models import canonical_model_name
from pipelearn.models.parts import make_model
from pipelearn.plan import RunPlan, host_cores, schedule_for
from pipelearn.planner.costs import CostModel, action_costs
from pipelearn.planner.measure import with_codecs
from pipelearn.planner.profile import Calibration, Profile, ProfileError
from pipelearn.planner.simulate import simulate
from pipelearn.schedule import Resource

SIDES = {Resource.DEVICE: "device", Resource.SERVER: "server"}


@dataclass(frozen=True)
class RecordedRun:
    """A finished run as the planner reads it back: its configuration, plan, metrics and trace."""

    where: Path
    config: RunConfig
    plan: RunPlan
    metrics: dict[str, Any]
    durations: dict[str, float]
    """Each action's measured seconds, by its name."""
    cpu: dict[str, float]
    """Each compute action's CPU seconds, by its name, where the run recorded them."""

    @property
    def samples(self) -> list[int]:
        """Each device's training samples."""
        return [int(d["samples"]) for d in self.metrics["device"]]

    @classmethod
    def load(cls, run_dir: str | Path) -> RecordedRun:
        """Read the metrics.json (and trace.json, if any) that `pipelearn run` wrote; ConfigError if unusable."""
        run_dir = Path(run_dir)
        path = run_dir / "metrics.json"
        try:
            metrics = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path} does not exist: give the directory of a finished run") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not JSON ({exc}): give the directory of a finished run") from exc
        if "plan" not in metrics or "config" not in metrics:
            raise ConfigError(f"{path} holds no run plan (it predates plans): run it again")
        config, plan = from_mapping(metrics["config"]), RunPlan.from_dict(metrics["plan"])
        if "host_cores" not in metrics["plan"]:  # recorded before plans said: its config's, as a run made here
            plan = dataclasses.replace(plan, host_cores=host_cores(config))
        trace = run_dir / "trace.json"
        events = json.loads(trace.read_text())["traceEvents"] if trace.exists() else []
        spans = [e for e in events if e.get("ph") == "X"]
        return cls(
            run_dir,
            config,
            plan,
            metrics,
            {e["name"]: e["dur"] / 1e6 for e in spans},
            {e["name"]: e["args"]["cpu_s"] for e in spans if "cpu_s" in e.get("args", {})},
        )


def fit_line(
    predicted: Sequence[float], measured: Sequence[float], weights: Sequence[float] | None = None
) -> tuple[float, float]:
    """Weighted least squares of measured = factor * predicted + overhead, with factor > 0 and overhead >= 0 (else
    the line through the origin); every point weighs 1 unless `weights` says."""
    x, y = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(x) >= 2 and np.ptp(x) > 0:
        factor, overhead = np.polyfit(x, y, 1, w=np.sqrt(w))
        if factor > 0 and overhead >= 0:
            return float(factor), float(overhead)
    return float((w * x) @ y / ((w * x) @ x)), 0.0


def median_of_runs(samples: Sequence[Sequence[float]]) -> tuple[float, float]:
    """One cost's measured seconds in each of several runs: the median over the runs of each run's mean, and the
    weight it carries (the actions of a run, on average)."""
    return float(np.median([np.mean(s) for s in samples])), float(np.mean([len(s) for s in samples]))


def calibrate(profile: Profile, runs: Sequence[RecordedRun]) -> Profile:
    """`profile` with each side's calibration fitted to the compute actions of `runs` (of its model), in place of
    any it had; ProfileError if a run is of another model or recorded no CPU seconds."""
    base = dataclasses.replace(
        profile,
        device=dataclasses.replace(profile.device, calibration=None),
        server=dataclasses.replace(profile.server, calibration=None),
    )
    # per side, per predicted cost, per run: the measured CPU seconds of the actions predicted to cost that
    points: dict[Resource, dict[float, dict[int, list[float]]]] = {side: {} for side in SIDES}
    for index, run in enumerate(runs):
        if not run.cpu:
            raise ProfileError(
                f"{run.where} records no CPU seconds of its actions (no trace.json, or one made before they were "
                "recorded): run it again to calibrate from it"
            )
        shape, classes = data_shape(run.config)
        model = make_model(run.config, shape, classes)
        try:
            base.check(canonical_model_name(run.config.model), model, shape)
        except ProfileError as exc:
            raise ProfileError(f"{run.where} cannot calibrate this profile: {exc}") from None
        base = with_codecs(base, model, (run.config.codec("up"), run.config.codec("down")))
        schedule = schedule_for(run.config, run.plan, run.samples)
        costs = action_costs(CostModel.for_run(base, run.config), schedule, run.plan.devices)
        for action in schedule.actions():
            measured = run.cpu.get(str(action.key))
            if measured is None or action.key.resource not in points:
                continue
            predicted = costs(action).cpu_s
            if predicted > 0:
                points[action.key.resource].setdefault(predicted, {}).setdefault(index, []).append(measured)
    fitted = {}
    for side, costs_seen in points.items():
        if not costs_seen:
            raise ProfileError(f"the runs given record no {SIDES[side]} computations to calibrate from")
        xs = list(costs_seen)
        ys, weights = zip(*(median_of_runs(list(by_run.values())) for by_run in costs_seen.values()), strict=True)
        actions = sum(len(m) for by_run in costs_seen.values() for m in by_run.values())
        fitted[side] = Calibration(*fit_line(xs, ys, weights), actions=actions)
    lines = dataclasses.replace(
        base,
        device=dataclasses.replace(base.device, calibration=fitted[Resource.DEVICE]),
        server=dataclasses.replace(base.server, calibration=fitted[Resource.SERVER]),
    )
    return with_message_s(lines, fit_message_s(lines, runs))


MESSAGE_S_LIMIT = 0.02
"""The most server seconds a message that calibration considers."""


def with_message_s(profile: Profile, message_s: float) -> Profile:
    """`profile` (calibrated) with the server's seconds a message set to `message_s`."""
    if profile.server.calibration is None:
        raise ProfileError("only a calibrated profile holds seconds a message: calibrate it from runs first")
    calibration = dataclasses.replace(profile.server.calibration, message_s=message_s)
    return dataclasses.replace(profile, server=dataclasses.replace(profile.server, calibration=calibration))


def fit_message_s(profile: Profile, runs: Sequence[RecordedRun]) -> float:
    """The server's seconds a message (0 to MESSAGE_S_LIMIT) that bring the simulated mean epoch of each plan of
    `runs` closest to the median of its runs' measured ones, in the least squares of logarithms."""
    plans: dict[str, list[RecordedRun]] = {}
    for run in runs:
        same = json.dumps([dataclasses.replace(run.config, out="").to_json(), run.plan.to_dict()], sort_keys=True)
        plans.setdefault(same, []).append(run)
    measured = np.log([np.median([np.mean(r.metrics["epoch_times_s"]) for r in rs]) for rs in plans.values()])
    firsts = [rs[0] for rs in plans.values()]
    schedules = [schedule_for(r.config, r.plan, r.samples) for r in firsts]

    def error(message_s: float) -> float:
        candidate = with_message_s(profile, message_s)
        predicted = []
        for run, schedule in zip(firsts, schedules, strict=True):
            costs = action_costs(CostModel.for_run(candidate, run.config), schedule, run.plan.devices)
            predicted.append(np.mean(simulate(schedule, costs, run.plan.host_cores).epoch_times_s()))
        return float(np.sum((np.log(predicted) - measured) ** 2))

    low, high, best = 0.0, MESSAGE_S_LIMIT, 0.0
    for _ in range(4):  # a grid over the range, then over the cells either side of its best, three times
        grid = np.linspace(low, high, 9)
        best = float(min(grid, key=error))
        low, high = max(best - (grid[1] - grid[0]), 0.0), min(best + (grid[1] - grid[0]), MESSAGE_S_LIMIT)
    return best


def describe(profile: Profile) -> str:
    """One line on the profile's calibration, for people."""
    parts = [
        f"{side} {c.factor:.3f} x profiled + {1e3 * c.overhead_s:.2f} ms an action ({c.actions} actions)"
        + (f", {1e3 * c.message_s:.2f} ms a message" if c.message_s else "")
        for side, c in (("device", profile.device.calibration), ("server", profile.server.calibration))
        if c is not None
    ]
    return "calibrated: " + "; ".join(parts) if parts else "not calibrated"
