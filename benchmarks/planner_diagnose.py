"""Where the planner's prediction and a finished run part: per run, the predicted and measured mean epoch with the
server and devices on hardware of their own and sharing the run's cores; per kind of action, measured and predicted
durations; and the run replayed by the simulator from its own measured durations (is the schedule right, so that
only the costs are wrong?).

Usage:
  python benchmarks/planner_diagnose.py RUN_DIR [RUN_DIR ...] [--profile-in FILE] [--host-cores N] [--actions]

Each RUN_DIR holds a run's metrics.json and trace.json (as `pipelearn run` writes them). The profile is measured
once here unless given (it must be of the runs' model, input shape and batch size; a calibrated one, from
`pipelearn plan --calibrate RUN_DIR ... --profile-out FILE`, predicts as the planner would from it). The cores
shared are the run's own (its plan's host_cores, or this machine's for a run recorded before plans said) unless
--host-cores is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from pipelearn.data.dealing import data_shape
from pipelearn.models import canonical_model_name
from pipelearn.models.parts import make_model
from pipelearn.plan import schedule_for
from pipelearn.planner.calibrate import RecordedRun
from pipelearn.planner.costs import CostModel, action_costs
from pipelearn.planner.measure import profile_model
from pipelearn.planner.profile import Profile, load_profile
from pipelearn.planner.simulate import Cost, simulate
from pipelearn.schedule import Action, Resource


def replayed(cost: Cost, action: Action, measured: float | None) -> Cost:
    """The action's cost with its measured duration: a device hands its message over at the same fraction of it as
    predicted, a transfer keeps its predicted latency and parsing after its measured time on the link."""
    if measured is None:
        return cost
    if action.key.resource is Resource.DEVICE:
        share = cost.ready_after_s / cost.busy_s if cost.busy_s else 1.0
        return Cost(measured, measured * share)
    if action.key.resource is Resource.SERVER:
        return Cost(measured, measured)
    return Cost(measured, measured + cost.ready_after_s - cost.busy_s)


def diagnose(run_dir: Path, profile: Profile, cores: float | None, actions: bool) -> dict[str, Any]:
    """One run's predictions beside its measurement; prints the per-action table if `actions`."""
    run = RecordedRun.load(run_dir)
    config, plan, metrics, durations = run.config, run.plan, run.metrics, run.durations
    if cores is not None:
        plan = dataclasses.replace(plan, host_cores=cores)
    schedule = schedule_for(config, plan, run.samples)
    costs = action_costs(CostModel(profile, config.batch_size, config.devices), schedule, plan.devices)
    measured = statistics.fmean(metrics["epoch_times_s"])
    alone = statistics.fmean(simulate(schedule, costs).epoch_times_s())
    sharing = simulate(schedule, costs, plan.host_cores)
    shared = statistics.fmean(sharing.epoch_times_s())
    replay = statistics.fmean(
        simulate(schedule, lambda a: replayed(costs(a), a, durations.get(str(a.key)))).epoch_times_s()
    )
    if actions:
        cpu = run.cpu
        kinds: dict[tuple[str, str], tuple[list[float], ...]] = defaultdict(lambda: ([], [], [], [], []))
        for action in schedule.actions():
            if str(action.key) in durations:
                got, want, simulated, got_cpu, want_cpu = kinds[(str(action.key.resource), str(action.key.op))]
                got.append(durations[str(action.key)])
                want.append(costs(action).busy_s)
                simulated.append(sharing.end[action.key] - sharing.start[action.key])
                if str(action.key) in cpu:
                    got_cpu.append(cpu[str(action.key)])
                    want_cpu.append(costs(action).cpu_s)
        print(f"\n{run_dir}: split {plan.splits}, micro-batches {plan.microbatches}")
        print(
            "| resource | action | count | measured median (ms) | measured mean (ms) | predicted median (ms) | "
            "simulated sharing cores, median (ms) | measured CPU median (ms) | predicted CPU median (ms) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for (resource, op), (got, want, simulated, got_cpu, want_cpu) in sorted(kinds.items()):
            cpus = [f"{1e3 * statistics.median(v):.2f}" if v else "-" for v in (got_cpu, want_cpu)]
            print(
                f"| {resource} | {op} | {len(got)} | {1e3 * statistics.median(got):.2f} | "
                f"{1e3 * statistics.fmean(got):.2f} | {1e3 * statistics.median(want):.2f} | "
                f"{1e3 * statistics.median(simulated):.2f} | {' | '.join(cpus)} |"
            )
    return {
        "run": str(run_dir),
        "measured_s": measured,
        "alone_s": alone,
        "shared_s": shared,
        "host_cores": plan.host_cores,
        "replayed_s": replay,
    }


def main() -> None:
    """Diagnose every run given; print a markdown table and the median and largest errors."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--profile-in", metavar="FILE", help="a saved profile (default: measure one here)")
    parser.add_argument("--host-cores", type=float, help="cores shared in the prediction (default: the run's)")
    parser.add_argument("--actions", action="store_true", help="also each kind of action's durations")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = RecordedRun.load(args.runs[0]).config
    shape, classes = data_shape(config)
    model = make_model(config, shape, classes)
    name = canonical_model_name(config.model)
    profile = load_profile(args.profile_in) if args.profile_in else profile_model(name, model, shape, config.batch_size)
    profile.check(name, model, shape)
    rows = [diagnose(run, profile, args.host_cores, args.actions) for run in args.runs]
    print("\n| run | measured epoch (s) | predicted, alone (s) | error | predicted, sharing cores (s) | error | "
          "replayed from measured durations (s) | error |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["measured_s"]
        cells = [f"{r[k]:.3f} | {r[k] / m - 1:+.1%}" for k in ("alone_s", "shared_s", "replayed_s")]
        print(f"| {r['run']} | {m:.3f} | {' | '.join(cells)} |")
    for key, label in (("alone_s", "alone"), ("shared_s", "sharing cores"), ("replayed_s", "replayed")):
        errors = [abs(r[key] / r["measured_s"] - 1) for r in rows]
        print(f"{label}: median error {statistics.median(errors):.1%}, largest {max(errors):.1%}")


if __name__ == "__main__":
    main()
