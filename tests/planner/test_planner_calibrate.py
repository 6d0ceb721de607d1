"""Calibration: the line fit, a profile calibrated from a real run's trace, and runs that plan from a saved profile."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelearn.config import RunConfig
from pipelearn.data.dealing import data_shape
from pipelearn.models import canonical_model_name
from pipelearn.models.parts import make_model
from pipelearn.plan import schedule_for
from pipelearn.planner.calibrate import (
    RecordedRun,
    calibrate,
    describe,
    fit_line,
    median_of_runs,
    with_message_s,
)
from pipelearn.planner.command import plan_command
from pipelearn.planner.costs import CostModel, action_costs
from pipelearn.planner.measure import profile_model
from pipelearn.planner.profile import Profile, ProfileError, load_profile, save_profile
from pipelearn.planner.resolve import resolve_plan
from pipelearn.planner.search import plan_run
from pipelearn.planner.simulate import simulate
from pipelearn.runtime.launch import run_local
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
    server_device="cpu",  # where the profile it is calibrated against measures the server
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
    overhead=st.floats(0.0, 0.01),
    xs=st.lists(st.floats(1e-4, 0.1), min_size=2, max_size=30, unique=True),
)
def test_fit_line_recovers_the_line_the_points_lie_on(factor: float, overhead: float, xs: list[float]):
    if max(xs) - min(xs) < 1e-5:
        return
    got = fit_line(xs, [factor * x + overhead for x in xs])
    assert got == pytest.approx((factor, overhead), rel=1e-6, abs=1e-9)


def test_fit_line_goes_through_the_origin_rather_than_subtract_time():
    xs = [0.01, 0.02, 0.03]
    factor, overhead = fit_line(xs, [2 * x - 0.005 for x in xs])  # the best line would start below zero
    assert overhead == 0.0 and factor == pytest.approx(sum(x * (2 * x - 0.005) for x in xs) / sum(x * x for x in xs))
    assert fit_line([0.01, 0.01], [0.03, 0.03]) == pytest.approx((3.0, 0.0))  # one size of action: a factor


@pytest.mark.slow
def test_calibrate_finds_the_line_each_side_of_a_run_followed(finished):
    _, out, profile = finished
    run = RecordedRun.load(out)
    schedule = schedule_for(run.config, run.plan, run.samples)
    costs = action_costs(CostModel.for_run(profile, run.config), schedule, run.plan.devices)
    lines = {Resource.DEVICE: (0.9, 0.001), Resource.SERVER: (1.3, 0.002)}
    cpu = {}
    for action in schedule.actions():
        if action.key.resource in lines and str(action.key) in run.cpu:
            factor, overhead = lines[action.key.resource]
            cpu[str(action.key)] = factor * costs(action).cpu_s + overhead
    assert len(cpu) == len(run.cpu) > 20  # the trace holds every compute action's CPU seconds
    calibrated = calibrate(profile, [dataclasses.replace(run, cpu=cpu)])
    for side, (factor, overhead) in lines.items():
        line = calibrated.device.calibration if side is Resource.DEVICE else calibrated.server.calibration
        assert line is not None and (line.factor, line.overhead_s) == pytest.approx((factor, overhead))
    lines_only = with_message_s(calibrated, 0.0)  # what messages hold up comes on top of the lines (below)
    after = action_costs(CostModel.for_run(lines_only, run.config), schedule, run.plan.devices)
    assert all(after(a).cpu_s == pytest.approx(cpu[str(a.key)]) for a in schedule.actions() if str(a.key) in cpu)
    again = calibrate(calibrated, [dataclasses.replace(run, cpu=cpu)])  # fitted to the profile as measured
    assert again.server.calibration == calibrated.server.calibration


def test_fit_line_weighs_points_as_if_they_were_repeated():
    xs, ys = [0.01, 0.02, 0.04], [0.013, 0.021, 0.052]
    repeated = fit_line([0.01, 0.02, 0.02, 0.02, 0.04, 0.04], [0.013, 0.021, 0.021, 0.021, 0.052, 0.052])
    assert fit_line(xs, ys, [1, 3, 2]) == pytest.approx(repeated)


def test_median_of_runs_takes_the_middle_run_and_weighs_it_by_its_actions():
    assert median_of_runs([[1.0, 3.0], [10.0, 10.0, 10.0, 10.0], [2.5, 2.5, 2.5]]) == pytest.approx((2.5, 3.0))
    assert median_of_runs([[4.0]]) == (4.0, 1.0)


@pytest.mark.slow
def test_one_slow_run_among_repeats_of_a_plan_does_not_move_the_calibration(finished):
    _, out, profile = finished
    run = RecordedRun.load(out)
    slow = dataclasses.replace(run, cpu={name: 3 * s for name, s in run.cpu.items()})
    alone = calibrate(profile, [run])
    repeated = calibrate(profile, [run, slow, run])
    for side in ("device", "server"):
        one, three = getattr(alone, side).calibration, getattr(repeated, side).calibration
        assert (three.factor, three.overhead_s) == pytest.approx((one.factor, one.overhead_s))
        assert three.actions == 3 * one.actions
    assert calibrate(profile, [run, slow, slow]).server.calibration.factor > 2 * alone.server.calibration.factor


@pytest.mark.slow
def test_a_profile_calibrated_by_a_run_is_saved_and_plans_runs_that_name_it(finished, tmp_path: Path):
    config, out, profile = finished
    measured, calibrated = tmp_path / "measured.json", tmp_path / "calibrated.json"
    save_profile(profile, measured)
    note = plan_command(
        config, profile_in=str(measured), calibrate_from=[str(out)], profile_out=str(calibrated)
    ).splitlines()[0]
    assert "calibrated: device" in note and "server" in note and "ms an action" in note
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


@pytest.mark.slow
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


def _measured_as_simulated(run: RecordedRun, profile: Profile, times: float = 1.0) -> RecordedRun:
    """`run` as if its epochs had taken what the simulator gives them from `profile` (times `times`)."""
    schedule = schedule_for(run.config, run.plan, run.samples)
    costs = action_costs(CostModel.for_run(profile, run.config), schedule, run.plan.devices)
    epochs = [times * t for t in simulate(schedule, costs, run.plan.host_cores).epoch_times_s()]
    return dataclasses.replace(run, metrics={**run.metrics, "epoch_times_s": epochs})


@pytest.mark.slow
@pytest.mark.parametrize("message_s", [0.0, 0.004])
def test_calibrate_finds_the_seconds_a_message_held_up_the_server(finished, message_s: float):
    _, out, profile = finished
    run = RecordedRun.load(out)
    lines = calibrate(profile, [run])
    truth = with_message_s(lines, message_s)
    like_truth = _measured_as_simulated(run, truth)
    found = calibrate(profile, [like_truth])
    assert found.server.calibration.message_s == pytest.approx(message_s, abs=5e-5)
    assert (found.server.calibration.factor, found.device.calibration.factor) == (
        lines.server.calibration.factor,
        lines.device.calibration.factor,
    )
    if message_s:
        assert f"{1e3 * found.server.calibration.message_s:.2f} ms a message" in describe(found)
        slow = _measured_as_simulated(run, truth, times=3.0)  # a run slow throughout, out-voted by two
        again = calibrate(profile, [like_truth, slow, like_truth])
        assert again.server.calibration.message_s == found.server.calibration.message_s
