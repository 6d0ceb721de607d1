"""Choose each device's split point and micro-batch count for the shortest predicted epoch of the whole fleet.

Every candidate (split, micro-batch count) of every device is first estimated in closed form, all at once
(planner/estimate.py). The fleet's epoch is estimated as the longer of its slowest device and the shared server's
total work, whose exact optimum over all devices' choices planner/minmax.py finds; candidate plans around it are
judged, by the simulator where the fleet is small enough (planner/candidates.py), and the best is the plan.

Where the server and devices share a host's cores (host_cores), the estimate stretches their compute by the
sharing that its own best plan leads to: a fixed point between the stretch and the plan (`_contended`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from pipelearn.config import RunConfig
from pipelearn.data.dealing import expected_samples
from pipelearn.models import canonical_model_name
from pipelearn.plan import RunPlan, fixed_setups, host_cores, requested
from pipelearn.planner.candidates import Candidate, Judge, candidate_choices
from pipelearn.planner.costs import CostModel
from pipelearn.planner.estimate import Estimate, Fleet, estimate
from pipelearn.planner.measure import profile_model, with_codecs
from pipelearn.planner.minmax import PlanError
from pipelearn.planner.predict import with_server_order
from pipelearn.planner.profile import Profile

MAX_MICROBATCHES = 32
"""The most micro-batches per mini-batch the search considers (each of at least 2 samples)."""


@dataclass(frozen=True)
class Planned:
    """The chosen plan, and the candidates it was chosen from (best first; the first is the choice)."""

    plan: RunPlan
    candidates: list[Candidate]
    profile: Profile
    samples: list[int]
    """Each device's training samples, which the plan was made for."""


def plan_run(
    config: RunConfig,
    model: nn.Sequential,
    input_shape: tuple[int, int, int],
    profile: Profile | None = None,
    samples: Sequence[int] | None = None,
) -> Planned:
    """Profile (unless given a profile), search and choose the run's plan; every `auto` gets a value."""
    asked = requested(config, len(model))
    name = canonical_model_name(config.model)
    codecs = (config.codec("up"), config.codec("down"))
    if profile is None:
        profile = profile_model(name, model, input_shape, config.batch_size, codecs=codecs)
    profile.check(name, model, input_shape)
    profile = with_codecs(profile, model, codecs)
    costs = CostModel.for_run(profile, config)
    samples = list(samples) if samples is not None else expected_samples(config)
    if min(samples) < 1:
        raise PlanError(
            f"device {samples.index(min(samples))} would hold no training samples ({config.devices} devices): "
            "use fewer devices or set samples_per_device"
        )
    # the planner keeps at least one block on every device, so raw data never leaves it; a config may still ask 0
    fixed = {s for s, _ in asked if s is not None}
    splits = np.array([len(model)] if config.mode == "fl" else sorted(set(range(1, len(model) + 1)) | fixed))
    most = 1 if config.mode != "pipelearn" else max(1, min(MAX_MICROBATCHES, config.batch_size // 2))
    counts = np.array(sorted(set(range(1, most + 1)) | {n for _, n in asked if n is not None}))
    allowed = np.ones((config.devices, len(splits), len(counts)), dtype=bool)
    for d, (s, n) in enumerate(asked):
        if s is not None:
            allowed[d] &= (splits == s)[:, None]
        if n is not None:
            allowed[d] &= (counts == n)[None, :]
    cores = host_cores(config)
    est = _contended(costs, Fleet.of(config, samples), config, splits, counts, cores, allowed)
    judge = Judge(config, costs, est, allowed.reshape(config.devices, -1), samples)
    candidates = judge.rank(candidate_choices(est, judge.allowed))
    best = candidates[0]
    plan = RunPlan(
        fixed_setups(config, list(best.splits), list(best.microbatches)),
        predicted_epoch_s=best.epoch_s,
        bound_s=best.bound_s,
        host_cores=cores,
    )
    return Planned(with_server_order(config, plan, costs, samples), candidates, profile, samples)


STRETCH_ROUNDS = 8
"""Most rounds of the fixed point between the estimate's stretch of compute and the plan it leads to."""


def _contended(
    costs: CostModel,
    fleet: Fleet,
    config: RunConfig,
    splits: np.ndarray,
    counts: np.ndarray,
    cores: float | None,
    allowed: np.ndarray,
) -> Estimate:
    """The estimate at the stretch of compute that its own best plan leads to on `cores` (none without cores).

    A longer stretch gives longer epochs, and so fewer processes computing at once and a shorter stretch: the
    stretch that reproduces itself lies between; each round moves halfway to what the last one implies. It lies
    within 1 and 1 + 1 / cores, as the epoch is never shorter than all compute over the cores.
    """
    est = estimate(costs, fleet, config, splits, counts, cores)
    if cores is None:
        return est
    flat = allowed.reshape(len(allowed), -1)
    for _ in range(STRETCH_ROUNDS):
        choice = np.unravel_index(candidate_choices(est, flat)[0], (len(splits), len(counts)))
        implied = est.shared_stretch(*choice)
        if all(abs(a - b) <= 1e-3 * b for a, b in zip(implied, est.stretch, strict=True)):
            break
        stretch = ((est.stretch[0] + implied[0]) / 2, (est.stretch[1] + implied[1]) / 2)
        est = estimate(costs, fleet, config, splits, counts, cores, stretch)
    return est
