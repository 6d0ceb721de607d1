"""Calibration: the factor, a profile calibrated from a real run's trace, and runs that plan from a saved profile."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelearn.config import RunConfig
from pipelearn.models import canonical_model_name
from pipelearn.plan import resolve_plan
from pipelearn.planner.calibrate import RecordedRun, calibrate, fit_factor
from pipelearn.planner.command import plan_command
from pipelearn.planner.costs import CostModel, action_costs
from pipelearn.planner.profile import Profile, ProfileError, load_profile, profile_model, save_profile
from pipelearn.planner.search import plan_run
from pipelearn.runtime.launch import run_local
from pipelearn.runtime.work import data_shape, make_model, schedule_for
from pipelearn.schedule import Resource

CONFIG = RunConfig(
    dataset="synthetic",
    batchnorm=False,
    devices=2,
    network="wifi",
    split=2,
    microbatches=3,
    epochs=1,
    batch_size=20,
    samples_per_device=40,
    test_samples=100,
    eval_every=0,
    timeout_s=60.0,
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path, Profile]:
    """A small real run's config and directory, and a profile of its model measured here."""
    out = tmp_path_factory.mktemp("calibrate") / "run"
    config = dataclasses.replace(CONFIG, out=str(out)).validate()
    assert run_local(config, progress=False)["failed_devices"] == []
    shape, classes = data_shape(config)
    model = make_model(config, shape, classes)
    return config, out, profile_model(canonical_model_name(config.model), model, shape, config.batch_size, repeats=2)


@given(
    factor=st.floats(0.2, 5.0),
    xs=st.lists(st.floats(1e-4, 0.1), min_size=1, max_size=30),
    stretched=st.data(),
)
def test_fit_factor_is_the_typical_ratio_whatever_a_minority_of_actions_did(factor, xs, stretched):
    ys = [factor * x for x in xs]
    assert fit_factor(xs, ys) == pytest.approx(factor)
    odd = stretched.draw(st.lists(st.integers(0, len(xs) - 1), max_size=(len(xs) - 1) // 2, unique=True))
    for i in odd:  # fewer than half the actions stretched, say by a pause of the machine
        ys[i] *= 10
    assert fit_factor(xs, ys) == pytest.approx(factor)


def test_fit_factor_needs_an_action_that_takes_time():
    assert fit_factor([0.0, 0.01, 0.02], [0.5, 0.02, 0.04]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="nothing to calibrate"):
        fit_factor([0.0], [0.01])


def test_calibrate_finds_how_much_longer_each_side_of_a_run_computed(finished):
    _, out, profile = finished
    run = RecordedRun.load(out)
    schedule = schedule_for(run.config, run.plan, run.samples)
    costs = action_costs(CostModel.for_run(profile, run.config), schedule, run.plan.devices)
    factors = {Resource.DEVICE: 0.9, Resource.SERVER: 1.3}
    cpu = {}
    for action in schedule.actions():
        if action.key.resource in factors and str(action.key) in run.cpu:
            cpu[str(action.key)] = factors[action.key.resource] * costs(action).cpu_s
    assert len(cpu) == len(run.cpu) > 20  # the trace holds every compute action's CPU seconds
    calibrated = calibrate(profile, [dataclasses.replace(run, cpu=cpu)])
    for side, factor in factors.items():
        found = calibrated.device.calibration if side is Resource.DEVICE else calibrated.server.calibration
        assert found is not None and found.factor == pytest.approx(factor)
    after = action_costs(CostModel.for_run(calibrated, run.config), schedule, run.plan.devices)
    assert all(after(a).cpu_s == pytest.approx(cpu[str(a.key)]) for a in schedule.actions() if str(a.key) in cpu)
    again = calibrate(calibrated, [dataclasses.replace(run, cpu=cpu)])  # fitted to the profile as measured
    assert again.server.calibration == calibrated.server.calibration


def test_a_profile_calibrated_by_a_run_is_saved_and_plans_runs_that_name_it(finished, tmp_path: Path):
    config, out, profile = finished
    measured, calibrated = tmp_path / "measured.json", tmp_path / "calibrated.json"
    save_profile(profile, measured)
    note = plan_command(
        config, profile_in=str(measured), calibrate_from=[str(out)], profile_out=str(calibrated)
    ).splitlines()[0]
    assert "calibrated: device" in note and "server" in note and "x profiled" in note
    saved = load_profile(calibrated)
    assert saved.server.calibration is not None and saved.server.calibration.actions > 10
    assert saved.device.calibration is not None and saved.device.calibration.factor > 0
    assert load_profile(measured).server.calibration is None

    auto = dataclasses.replace(config, split="auto", microbatches="auto", profile_in=str(calibrated)).validate()
    shape, classes = data_shape(auto)
    model = make_model(auto, shape, classes)
    assert resolve_plan(auto, model, shape) == plan_run(auto, model, shape, saved).plan

    missing = dataclasses.replace(auto, profile_in=str(tmp_path / "none.json"))
    with pytest.raises(ProfileError, match=r"none\.json does not exist"):
        resolve_plan(missing, model, shape)
    other = dataclasses.replace(auto, model="vgg8")
    with pytest.raises(ProfileError, match=r"calibrated\.json"):
        resolve_plan(other, make_model(other, shape, classes), shape)


def test_calibrating_from_a_run_without_cpu_seconds_or_of_another_model_says_so(finished, tmp_path: Path):
    _, out, profile = finished
    bare = tmp_path / "bare"
    shutil.copytree(out, bare)
    (bare / "trace.json").unlink()
    with pytest.raises(ProfileError, match="records no CPU seconds"):
        calibrate(profile, [RecordedRun.load(bare)])
    other = dataclasses.replace(profile, model="vgg8")
    with pytest.raises(ProfileError, match="made for vgg8"):
        calibrate(other, [RecordedRun.load(out)])
