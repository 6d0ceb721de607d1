"""`pipelearn plan`: the candidates and the choice as a table or JSON; a finished run beside its prediction."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from pipelearn.config import RunConfig
from pipelearn.data.dealing import data_shape
from pipelearn.models import canonical_model_name
from pipelearn.models.parts import make_model
from pipelearn.planner.calibrate import RecordedRun, calibrate, describe
from pipelearn.planner.costs import CostModel
from pipelearn.planner.measure import profile_model, with_codecs
from pipelearn.planner.predict import StalenessGain, run_simulation, staleness_gain
from pipelearn.planner.profile import Profile, load_profile, save_profile
from pipelearn.planner.search import Planned, plan_run

KINDS = ("server", "device", "uplink", "downlink")


def plan_command(
    config: RunConfig,
    *,
    as_json: bool = False,
    profile_in: str | None = None,
    profile_out: str | None = None,
    compare: str | None = None,
    calibrate_from: Sequence[str] = (),
) -> str:
    """What `pipelearn plan` prints: the best candidates and the choice, or a run beside its prediction; with
    `calibrate_from` (finished runs' directories), from the profile calibrated by those runs."""
    torch.set_num_threads(config.threads)  # profile as the run's processes compute
    run = RecordedRun.load(compare) if compare is not None else None
    if run is not None:
        config = run.config
    profile, note = _profile(config, profile_in)
    if calibrate_from:
        profile = calibrate(profile, [RecordedRun.load(d) for d in calibrate_from])
    if profile.device.calibration or profile.server.calibration:
        note += f"; {describe(profile)}"
    if profile_out is not None:
        save_profile(profile, profile_out)
        note += f"; saved to {profile_out}"
    if run is not None:
        return f"{note}\n{compare_table(run, profile)}"
    shape, classes = data_shape(config)
    planned = plan_run(config, make_model(config, shape, classes), shape, profile)
    gain = staleness_gain(config, planned.plan, CostModel.for_run(profile, config), planned.samples)
    if as_json:
        return json.dumps({**plan_json(config, planned), "staleness_epoch_s": gain and list(gain.epoch_s)}, indent=1)
    return f"{note}\n{candidates_table(config, planned)}{staleness_line(config, gain)}"


def staleness_line(config: RunConfig, gain: StalenessGain | None) -> str:
    """The choice's predicted epoch with the other staleness, which the user may choose; '' in fl."""
    if gain is None:
        return ""
    other = 1 - config.staleness
    return (
        f"\nwith staleness {other} (changes what is computed, so the planner never chooses it): predicted epoch "
        f"{gain.epoch_s[other]:.3f} s against {gain.epoch_s[config.staleness]:.3f} s, "
        f"{gain.epoch_s[config.staleness] / gain.epoch_s[other]:.2f}x"
    )


def _profile(config: RunConfig, profile_in: str | None) -> tuple[Profile, str]:
    shape, classes = data_shape(config)
    model = make_model(config, shape, classes)
    name = canonical_model_name(config.model)
    codecs = (config.codec("up"), config.codec("down"))
    if profile_in is not None:
        profile = load_profile(profile_in)
        profile.check(name, model, shape, source=profile_in)
        return with_codecs(profile, model, codecs), f"profile: {profile_in}"
    started = time.perf_counter()
    profile = profile_model(name, model, shape, config.batch_size, codecs=codecs)
    took = time.perf_counter() - started
    return profile, (
        f"profile: {name}, {len(profile.blocks)} blocks, inputs {'x'.join(map(str, shape))}, micro-batches of "
        f"{profile.sizes[0]}..{profile.sizes[-1]} samples, measured in {took:.1f} s"
    )


def _shown_splits(config: RunConfig, splits: Sequence[int]) -> list[int | None]:
    return [None if config.mode == "fl" else s for s in splits]


def plan_json(config: RunConfig, planned: Planned) -> dict[str, Any]:
    """The choice and the candidates as plain data (split is null in fl, where the whole model is on the device)."""
    return {
        "split": _shown_splits(config, planned.plan.splits),
        "microbatches": planned.plan.microbatches,
        "predicted_epoch_s": planned.plan.predicted_epoch_s,
        "bound_s": planned.plan.bound_s,
        "host_cores": planned.plan.host_cores,
        "candidates": [
            {
                "split": _shown_splits(config, c.splits),
                "microbatches": list(c.microbatches),
                "predicted_epoch_s": c.epoch_s,
                "bound_s": c.bound_s,
                "idle_s": c.idle_s(),
                "simulated": c.simulated,
            }
            for c in planned.candidates
        ],
    }


def compact(values: Sequence[object]) -> str:
    """A fleet's values in few characters: '2' when all agree, '2,1,2' for a few, '2 x600, 1 x400' for many."""
    if len(set(values)) == 1:
        return str(values[0])
    if len(values) <= 8:
        return ",".join(str(v) for v in values)
    return ", ".join(f"{v} x{n}" for v, n in Counter(values).most_common())


def candidates_table(config: RunConfig, planned: Planned) -> str:
    """The candidates, best first, with predicted epoch, bound and idle per resource; then the choice."""
    head = ["", "split", "micro-batches", "epoch (s)", "bound (s)", *(f"{k} idle (s)" for k in KINDS)]
    rows = [head]
    for i, c in enumerate(planned.candidates):
        idle = c.idle_s()
        rows.append(
            [
                "*" if i == 0 else "",
                compact(_shown_splits(config, c.splits)),
                compact(c.microbatches),
                f"{c.epoch_s:.3f}",
                f"{c.bound_s:.3f}",
                *(f"{idle[k]:.3f}" for k in KINDS),
            ]
        )
    best = planned.candidates[0]
    how = "simulated over the run's schedule" if best.simulated else "estimated in closed form"
    how += f"; {_sharing(planned.plan.host_cores)}"
    idles = ", ".join(f"{k} {v:.2f} s" for k, v in best.idle_s().items())
    return (
        f"{_table(rows)}\n"
        f"choice ({config.mode}, {config.devices} devices): split {compact(_shown_splits(config, best.splits))}, "
        f"micro-batches {compact(best.microbatches)}: predicted epoch {best.epoch_s:.3f} s, bound {best.bound_s:.3f} s "
        f"(idle per epoch: {idles}; {how})"
    )


def _sharing(cores: float | None) -> str:
    if cores is None:
        return "server and devices each on hardware of their own"
    return f"server and devices sharing {cores:g} CPU cores"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def compare_table(run: RecordedRun, profile: Profile) -> str:
    """A finished run's measured busy and idle seconds per resource beside the simulator's for the same plan."""
    config, plan, measured = run.config, run.plan, run.metrics
    sim = run_simulation(config, plan, CostModel.for_run(profile, config), run.samples)
    wall, span = float(measured["train_time_s"]), sim.makespan_s
    busy = sim.busy_s()
    rows = [["resource", "measured busy (s)", "predicted busy (s)", "measured idle (s)", "predicted idle (s)"]]

    def row(track: str, got: float) -> None:
        predicted = busy.get(track, 0.0)
        rows.append([track, f"{got:.3f}", f"{predicted:.3f}", f"{wall - got:.3f}", f"{span - predicted:.3f}"])

    row("server/compute", float(measured["server"]["busy_s"]))
    for d, device in enumerate(measured["device"]):
        row(f"device{d}/compute", float(device["busy_s"]))
        row(f"device{d}/uplink", float(device["uplink_busy_s"]))
        row(f"device{d}/downlink", float(device["downlink_busy_s"]))
    predicted_epochs = sim.epoch_times_s()
    epochs = ", ".join(f"{m:.3f} / {p:.3f}" for m, p in zip(measured["epoch_times_s"], predicted_epochs, strict=True))
    mean = {k: round(v, 3) for k, v in sim.busy_by_kind().items()}
    return (
        f"{_table(rows)}\n"
        f"training time: measured {wall:.3f} s, predicted {span:.3f} s ({span / wall - 1:+.1%}); "
        f"epochs measured / predicted: {epochs}\n"
        f"predicted busy per epoch: {mean}; split {compact(_shown_splits(config, plan.splits))}, "
        f"micro-batches {compact(plan.microbatches)}; {_sharing(plan.host_cores)}"
    )
