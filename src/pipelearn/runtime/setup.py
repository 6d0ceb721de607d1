"""What a server is built from: the run's data, model and resolved plan (`prepare`), in an output directory it may
write into (`prepare_into`, `claim_for`)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import nn

from pipelearn.config import RunConfig, check_profile_in, check_sizes
from pipelearn.data import Dataset
from pipelearn.data.dealing import load_data
from pipelearn.events import now
from pipelearn.metrics.outdir import claim
from pipelearn.models.parts import make_model
from pipelearn.plan import RunPlan
from pipelearn.planner.adapt import adapter_for
from pipelearn.planner.profile import Profile
from pipelearn.planner.resolve import resolve
from pipelearn.privacy import dp_enabled, refuse_batchnorm
from pipelearn.runtime import hardware
from pipelearn.runtime.checkpoint import Checkpoint
from pipelearn.runtime.checks import PlanLimits, device_samples, plan_limits

log = logging.getLogger("pipelearn.server")


@dataclass(frozen=True)
class ServerSetup:
    """What a server is built from: the run's configuration, its test data and model, and the resolved plan with
    each device's sample count and message limits."""

    config: RunConfig
    test: Dataset
    model: nn.Sequential
    plan: RunPlan
    limits: PlanLimits
    where: torch.device
    """Where the server trains its parts."""
    startup_s: float
    """Seconds it took to load the data, build the model and plan."""
    profile: Profile | None = None
    """The profile the plan was made from; None where nothing was planned."""


def prepare(config: RunConfig, plan: RunPlan | None = None, resume: Checkpoint | None = None) -> ServerSetup:
    """Load the run's data and model, deal its samples and resolve its plan (unless given, or in force in the
    checkpoint `resume` goes on from); ValueError (a ConfigError where a setting is wrong) when the devices cannot
    serve it."""
    began = now()
    config = config.validate()
    if plan is None and resume is not None and resume.plan is not None:
        plan = RunPlan.from_dict(resume.plan)
    where = hardware.resolve_device(config.server_device)
    hardware.check_amp(where, config.server_amp)
    test, train = load_data(config, "test"), load_data(config, "train")
    model = make_model(config, test.input_shape, test.num_classes)
    if dp_enabled(config):
        refuse_batchnorm(model)  # before any device joins: a zoo model's is refused with the settings
    samples = device_samples(config, train)
    for warning in check_profile_in(config):
        log.warning("%s", warning)
    profile = None
    if plan is None:
        plan, profile = resolve(config, model, test.input_shape, samples)
    if plan.predicted_epoch_s is not None:
        log.info(
            "planned split %s, micro-batches %s; predicted epoch %.2f s, bound %.2f s",
            plan.splits,
            plan.microbatches,
            plan.predicted_epoch_s,
            plan.bound_s,
        )
    adapting = adapter_for(config, model, test.input_shape, profile, samples) is not None
    limits = plan_limits(config, plan, model, test.input_shape, samples, adapting)
    for warning in check_sizes(config, len(test), samples):
        log.warning("%s", warning)
    return ServerSetup(config, test, model, plan, limits, where, now() - began, profile)


def claim_for(config: RunConfig, resume: Checkpoint | None) -> RunConfig:
    """The configuration with the output directory a run may write into (pipelearn.metrics.outdir.claim): a resumed
    run's is the directory its checkpoint was read from, which must hold no finished run."""
    if resume is None:
        return claim(config)
    return claim(dataclasses.replace(config, out=str(resume.directory or config.out)), resuming=True)


def prepare_into(config: RunConfig, resume: Checkpoint | None = None) -> ServerSetup:
    """`prepare`, with the output directory claimed: a resumed run's before anything else (a finished run is refused
    at once), a new run's once its configuration is known to be one the devices can serve."""
    if resume is not None:
        return prepare(claim_for(config, resume), resume=resume)
    setup = prepare(config)
    return dataclasses.replace(setup, config=claim_for(setup.config, None))
