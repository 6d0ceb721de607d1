"""From configuration to plan: the configuration's values, with every `auto` chosen by the planner."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import nn

from pipelearn.config import RunConfig
from pipelearn.models import canonical_model_name
from pipelearn.plan import RunPlan, fixed_setups, host_cores, requested
from pipelearn.planner.profile import Profile, load_profile
from pipelearn.planner.search import plan_run


def resolve_plan(
    config: RunConfig,
    model: nn.Sequential,
    input_shape: tuple[int, int, int],
    samples: Sequence[int] | None = None,
    profile: Profile | None = None,
) -> RunPlan:
    """The run's plan for devices holding `samples` (None: as the run's data set deals them): the configuration's
    values, with every `auto` chosen by the planner from `profile`, else the configuration's saved profile
    (profile_in), else one measured now."""
    return resolve(config, model, input_shape, samples, profile)[0]


def resolve(
    config: RunConfig,
    model: nn.Sequential,
    input_shape: tuple[int, int, int],
    samples: Sequence[int] | None = None,
    profile: Profile | None = None,
) -> tuple[RunPlan, Profile | None]:
    """As resolve_plan, with the profile the plan was made from (None where the configuration fixes everything and
    the server serves devices as their work arrives: nothing was predicted)."""
    asked = requested(config, len(model))
    fixed = [(s, n) for s, n in asked if s is not None and n is not None]
    if len(fixed) == len(asked) and config.server_order == "arrival":
        setups = fixed_setups(config, [s for s, _ in fixed], [n for _, n in fixed])
        return RunPlan(setups, host_cores=host_cores(config)), None
    if profile is None and config.profile_in is not None:
        profile = load_profile(config.profile_in)
        profile.check(canonical_model_name(config.model), model, input_shape, source=config.profile_in)
    planned = plan_run(config, model, input_shape, profile, samples)
    return planned.plan, planned.profile


def at_best_plan(config: RunConfig, mode: str, **changes: Any) -> RunConfig:
    """`config` in `mode` with `changes`, at that mode's own best plan: the planner chooses the split, and in
    pipelearn the micro-batch count (the other modes send whole mini-batches); fl without staleness."""
    auto: dict[str, Any] = {"split": "auto", "microbatches": "auto" if mode == "pipelearn" else 1}
    if mode == "fl":  # fl's devices train alone: nothing to overlap, so no staleness
        auto["staleness"] = 0
    return dataclasses.replace(config, mode=mode, **{**auto, **changes}).validate()  # type: ignore[arg-type]
