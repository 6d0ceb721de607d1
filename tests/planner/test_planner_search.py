"""The search finds what brute force finds; its closed form agrees with the simulator; modes and fixed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipelearn.config import ConfigError, DeviceOverride, RunConfig
from pipelearn.plan import RunPlan, fixed_setups
from pipelearn.planner.candidates import TIE
from pipelearn.planner.costs import CostModel
from pipelearn.planner.estimate import Fleet, estimate
from pipelearn.planner.minmax import minimise
from pipelearn.planner.predict import run_simulation
from pipelearn.planner.profile import CodecFit, ProfileError
from pipelearn.planner.search import PlanError, _contended, plan_run

SHAPE = (1, 2, 2)


def _config(**values: object) -> RunConfig:
    base: dict[str, object] = {
        "devices": 1,
        "batch_size": 8,
        "samples_per_device": 16,
        "epochs": 1,
        "network": "wifi",
        "device_slowdown": 2.0,
        "host_cores": "off",  # each on hardware of its own, whatever machine the tests run on
    }
    base.update(values)
    return RunConfig(**base).validate()  # type: ignore[arg-type]


def _brute_force(time: np.ndarray, server: np.ndarray) -> float:
    best = np.inf
    for choice in itertools.product(range(time.shape[1]), repeat=len(time)):
        rows = np.arange(len(time))
        best = min(best, max(time[rows, choice].max(), server[rows, choice].sum()))
    return float(best)


@pytest.mark.parametrize("seed", range(40))
def test_minimise_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    devices, choices = int(rng.integers(1, 5)), int(rng.integers(1, 7))
    time = rng.uniform(0.0, 10.0, (devices, choices)).round(1)  # rounding makes ties, which must not matter
    server = rng.uniform(0.0, 5.0, (devices, choices)).round(1)
    time[rng.uniform(size=time.shape) < 0.2] = np.inf  # not allowed
    time[:, rng.integers(choices)] = rng.uniform(0.0, 10.0, devices)  # every device keeps one choice
    choice, value = minimise(time, server)
    assert value == pytest.approx(_brute_force(time, server))
    rows = np.arange(devices)
    assert max(time[rows, choice].max(), server[rows, choice].sum()) == pytest.approx(value)


@pytest.mark.parametrize("mode", ["fl", "sl", "sfl", "pipelearn"])
def test_closed_form_is_the_simulation_for_one_device(profile, mode):
    config = _config(mode=mode, epochs=2)
    costs = CostModel(profile(fixed=0.0005), config.batch_size, config.devices)
    splits = np.array([4]) if mode == "fl" else np.arange(5)
    counts = np.array([1, 2, 4, 8]) if mode == "pipelearn" else np.array([1])
    est = estimate(costs, Fleet.of(config, [16]), config, splits, counts)
    for i, split in enumerate(splits):
        for j, count in enumerate(counts):
            plan = RunPlan(fixed_setups(config, [int(split)], [int(count)]))
            sim = run_simulation(config, plan, costs, [16])
            epoch, busy, _ = est.fleet(np.array([i]), np.array([j]))
            assert epoch == pytest.approx(sum(sim.epoch_times_s()) / 2, rel=1e-9), (split, count)
            assert busy["uplink"] == pytest.approx(sim.busy_s().get("device0/uplink", 0.0) / 2, rel=1e-9)


@pytest.mark.parametrize("mode", ["fl", "sl", "sfl", "pipelearn"])
@pytest.mark.parametrize("every", [None, 1, 2, 4])
def test_closed_form_cuts_a_run_into_mini_batches_and_rounds_as_the_schedule_does(profile, mode, every):
    config = _config(mode=mode, epochs=2, samples_per_device=20, aggregate_every=every)  # 8 + 8 + 4 an epoch
    costs = CostModel(profile(fixed=0.0005), config.batch_size, config.devices)
    splits = np.array([4]) if mode == "fl" else np.arange(5)
    counts = np.array([1, 2, 4]) if mode == "pipelearn" else np.array([1])
    est = estimate(costs, Fleet.of(config, [20]), config, splits, counts)
    for i, split in enumerate(splits):
        for j, count in enumerate(counts):
            sim = run_simulation(config, RunPlan(fixed_setups(config, [int(split)], [int(count)])), costs, [20])
            epoch, busy, _ = est.fleet(np.array([i]), np.array([j]))
            assert epoch == pytest.approx(sum(sim.epoch_times_s()) / 2, rel=1e-9), (split, count)
            assert busy["server"] == pytest.approx(sim.busy_by_kind()["server"], rel=1e-9), (split, count)


@pytest.mark.parametrize("mode", ["sl", "sfl", "pipelearn"])
def test_search_equals_brute_force_by_simulation(model, profile, mode):
    config = _config(mode=mode, split="auto", microbatches="auto", devices=2 if mode == "sl" else 1)
    made = profile()
    planned = plan_run(config, model, SHAPE, made)
    costs = CostModel(made, config.batch_size, config.devices)
    counts = range(1, 5) if mode == "pipelearn" else [1]
    best = min(
        sum(run_simulation(config, RunPlan(fixed_setups(config, [s] * config.devices, [n] * config.devices)),
                           costs, [16] * config.devices).epoch_times_s())
        for s in range(1, 5)
        for n in counts
    )  # fmt: skip
    assert planned.plan.predicted_epoch_s == pytest.approx(best, rel=TIE)
    assert planned.candidates[0].simulated


@pytest.mark.parametrize(
    "overrides",
    [{1: DeviceOverride(device_slowdown=8.0, up_mbps=3.0)}, {1: DeviceOverride(network="4g")}],
    ids=["slow-device", "slow-link"],
)
def test_search_equals_brute_force_by_simulation_for_a_heterogeneous_pair(model, profile, overrides):
    config = _config(devices=2, split="auto", microbatches="auto", device_overrides=overrides)
    made = profile()
    planned = plan_run(config, model, SHAPE, made)
    costs = CostModel(made, config.batch_size, config.devices)
    options = [(s, n) for s in range(1, 5) for n in range(1, 5)]
    best = min(
        sum(run_simulation(config, RunPlan(fixed_setups(config, [a[0], b[0]], [a[1], b[1]])), costs,
                           [16, 16]).epoch_times_s())
        for a in options
        for b in options
    )  # fmt: skip
    assert planned.plan.predicted_epoch_s == pytest.approx(best, rel=TIE)


def test_a_heterogeneous_fleet_gets_a_plan_per_device(model, profile):
    config = _config(
        devices=3,
        split="auto",
        microbatches="auto",
        device_overrides={1: DeviceOverride(device_slowdown=20.0), 2: DeviceOverride(network="4g", microbatches=2)},
    )
    planned = plan_run(config, model, SHAPE, profile())
    plan = planned.plan
    assert plan.microbatches[2] == 2  # fixed by its override
    assert plan.devices[1].slowdown == 20.0 and plan.devices[2].link.up_mbps == 10
    assert plan.splits[1] <= plan.splits[0]  # the slowest device keeps less of the model
    epochs = [c.epoch_s for c in planned.candidates]
    assert epochs == sorted(epochs) and plan.predicted_epoch_s == epochs[0]
    assert plan.bound_s is not None and plan.bound_s <= plan.predicted_epoch_s


def test_large_fleets_are_estimated_and_fixed_values_hold(model, profile):
    overrides = {d: DeviceOverride(device_slowdown=float(1 + d % 7), up_mbps=float(5 + d % 11)) for d in range(300)}
    overrides[0] = DeviceOverride(split=1, microbatches=3)
    config = _config(devices=300, split="auto", microbatches="auto", samples_per_device=800, device_overrides=overrides)
    planned = plan_run(config, model, SHAPE, profile())
    assert not planned.candidates[0].simulated
    assert planned.plan.splits[0] == 1 and planned.plan.microbatches[0] == 3
    assert len(planned.plan.devices) == 300


def test_modes_plan_only_what_they_have(model, profile):
    fl = plan_run(_config(mode="fl", split="auto", microbatches="auto"), model, SHAPE, profile())
    assert fl.plan.splits == [4] and fl.plan.microbatches == [1]
    sl = plan_run(_config(mode="sl", devices=3, split="auto", microbatches="auto"), model, SHAPE, profile())
    assert len(set(sl.plan.splits)) == 1 and sl.plan.microbatches == [1, 1, 1]
    uneven = {1: DeviceOverride(device_slowdown=20.0), 2: DeviceOverride(up_mbps=0.5)}  # each would split elsewhere
    sl = plan_run(_config(mode="sl", devices=3, split="auto", device_overrides=uneven), model, SHAPE, profile())
    assert len(set(sl.plan.splits)) == 1 and all(c.splits == (c.splits[0],) * 3 for c in sl.candidates)
    sfl = plan_run(_config(mode="sfl", split="auto"), model, SHAPE, profile())
    assert sfl.plan.microbatches == [1]


def test_raw_data_stays_on_the_device_unless_the_config_says_otherwise(model, profile):
    # the hand-made model's input is its smallest tensor, so sending it would be fastest
    cheap_input = profile(forward=[0.0001, 0.04, 0.0001, 0.02], backward=[0.0001, 0.08, 0.0001, 0.04])
    auto = plan_run(_config(split="auto", microbatches="auto", devices=2), model, SHAPE, cheap_input)
    assert min(auto.plan.splits) >= 1 and all(min(c.splits) >= 1 for c in auto.candidates)
    asked = plan_run(_config(split=0, microbatches="auto"), model, SHAPE, cheap_input)
    assert asked.plan.splits == [0]


def test_bad_fleets_and_profiles_are_refused(model, profile):
    with pytest.raises(ConfigError, match="split 9 of device 0 is outside the model"):
        plan_run(_config(split=9, microbatches="auto"), model, SHAPE, profile())
    mixed = _config(mode="sl", devices=2, split="auto", device_overrides={0: DeviceOverride(split=1),
                                                                         1: DeviceOverride(split=2)})  # fmt: skip
    with pytest.raises(ConfigError, match="same split"):
        plan_run(mixed, model, SHAPE, profile())
    with pytest.raises(PlanError, match="device 1 would hold no training samples"):
        plan_run(_config(devices=2, split="auto"), model, SHAPE, profile(), samples=[16, 0])
    with pytest.raises(ProfileError, match=r"up to 8 samples.*--batch-size 16"):
        plan_run(_config(batch_size=16, split="auto"), model, SHAPE, profile())
    with pytest.raises(ProfileError, match=r"was made for vgg5 .* this run has vgg5"):
        plan_run(_config(split="auto"), model[:3], SHAPE, profile())


def test_closed_form_is_the_simulation_for_one_device_with_a_core_each(profile):
    # one device and the server on two cores never share one: sharing changes nothing, in both
    config = _config(mode="pipelearn", epochs=2, host_cores=2)
    costs = CostModel(profile(fixed=0.0005), config.batch_size, config.devices)
    splits, counts = np.arange(5), np.array([1, 2, 4, 8])
    est = estimate(costs, Fleet.of(config, [16]), config, splits, counts, host_cores=2.0)
    for i, split in enumerate(splits):
        for j, count in enumerate(counts):
            plan = RunPlan(fixed_setups(config, [int(split)], [int(count)]), host_cores=2.0)
            sim = run_simulation(config, plan, costs, [16])
            epoch, _, _ = est.fleet(np.array([i]), np.array([j]))
            assert epoch == pytest.approx(sum(sim.epoch_times_s()) / 2, rel=1e-9), (split, count)


CROWDED = {"forward": [0.0, 0.002, 0.0, 0.001], "backward": [0.0, 0.004, 0.0, 0.002], "fixed": 0.0005}
"""A profile whose compute outweighs the links: what sharing cores slows most."""


def _crowded(devices: int = 8, **values: object) -> RunConfig:
    """`devices` devices as fast as the server, with unlimited links, all on one core."""
    base: dict[str, object] = {"devices": devices, "device_slowdown": 1.0, "network": "unlimited", "host_cores": 1}
    return _config(**{**base, "split": "auto", "microbatches": "auto", **values})


def test_sharing_cores_slows_the_plan_and_the_closed_form_follows_the_simulation(model, profile):
    config, made = _crowded(), profile(**CROWDED)
    shared = plan_run(config, model, SHAPE, made)
    alone = plan_run(_crowded(host_cores="off"), model, SHAPE, made)
    assert shared.plan.host_cores == 1.0 and alone.plan.host_cores is None
    assert shared.plan.predicted_epoch_s > 1.5 * alone.plan.predicted_epoch_s
    best = shared.candidates[0]
    assert best.simulated and best.bound_s <= best.epoch_s
    # the closed form at its own fixed point, for the simulated choice, within a few percent of the simulation
    costs = CostModel(made, config.batch_size, config.devices)
    splits, counts = np.arange(1, 5), np.arange(1, 5)
    allowed = np.ones((config.devices, len(splits), len(counts)), dtype=bool)
    est = _contended(costs, Fleet.of(config, [16] * config.devices), config, splits, counts, 1.0, allowed)
    i, j = np.searchsorted(splits, best.splits), np.searchsorted(counts, best.microbatches)
    assert est.fleet(i, j)[0] == pytest.approx(best.epoch_s, rel=0.05)
    assert est.stretch[0] > 1 and est.stretch == pytest.approx(est.shared_stretch(i, j), rel=0.01)


def test_a_large_crowded_fleet_is_estimated_within_its_cores(model, profile):
    config, made = _crowded(devices=300, samples_per_device=800), profile(**CROWDED)
    best = plan_run(config, model, SHAPE, made).candidates[0]
    assert not best.simulated
    costs = CostModel(made, config.batch_size, config.devices)
    # at least the compute of every forward, backward and server pass: 100 mini-batches of 8 per device
    compute = sum(
        100 * (costs.device_forward[s, 8] + costs.device_backward[s, 8] + costs.server_train[s, 8]) for s in best.splits
    )
    assert best.epoch_s >= best.bound_s >= compute


FIT = CodecFit(compress_s=0.0005, compress_s_per_byte=1e-9, decompress_s=0.0005, decompress_s_per_byte=1e-9)


@pytest.mark.parametrize("mode", ["fl", "sl", "sfl", "pipelearn"])
def test_closed_form_is_the_simulation_for_one_device_under_compression(profile, mode):
    # top-k up sends each weight stream's first message whole, so the first round costs other than the second
    config = _config(mode=mode, epochs=2, compress_up="topk:0.1", compress_down="int8")
    costs = CostModel.for_run(profile(fixed=0.0005, compression={"topk:0.1": FIT, "int8": FIT}), config)
    assert costs.first_weights.up_bytes[2] != costs.weights.up_bytes[2]
    splits = np.array([4]) if mode == "fl" else np.arange(5)
    counts = np.array([1, 2, 4]) if mode == "pipelearn" else np.array([1])
    est = estimate(costs, Fleet.of(config, [16]), config, splits, counts)
    for i, split in enumerate(splits):
        for j, count in enumerate(counts):
            sim = run_simulation(config, RunPlan(fixed_setups(config, [int(split)], [int(count)])), costs, [16])
            epoch, busy, _ = est.fleet(np.array([i]), np.array([j]))
            assert epoch == pytest.approx(sum(sim.epoch_times_s()) / 2, rel=1e-9), (split, count)
            assert busy["uplink"] == pytest.approx(sim.busy_s().get("device0/uplink", 0.0) / 2, rel=1e-9)


def test_int8_under_4g_sends_less_and_plans_otherwise(model, profile):
    made = profile(compression={"int8": FIT})
    fixed = {"devices": 2, "network": "4g", "split": 2, "microbatches": "auto"}
    plain = plan_run(_config(**fixed), model, SHAPE, made).candidates[0]
    int8 = plan_run(_config(**fixed, compress="int8"), model, SHAPE, made).candidates[0]
    assert int8.busy_s["uplink"] < plain.busy_s["uplink"] / 2 and int8.busy_s["downlink"] < plain.busy_s["downlink"]
    assert int8.epoch_s < plain.epoch_s
    # with the split free: uncompressed, 4g is too slow for the wide activations of splits 1..3, so the devices
    # keep the whole model; compressed, they hand the server its half
    auto = {**fixed, "split": "auto"}
    plain = plan_run(_config(**auto), model, SHAPE, made).candidates[0]
    compressed = _config(**auto, compress="int8")
    int8 = plan_run(compressed, model, SHAPE, made).candidates[0]
    assert plain.splits == (4, 4) and int8.splits[0] < 4 and int8.epoch_s < plain.epoch_s
    costs = CostModel.for_run(made, compressed)
    plans = [RunPlan(fixed_setups(compressed, list(c.splits), list(c.microbatches))) for c in (int8, plain)]
    ran = [sum(run_simulation(compressed, plan, costs, [16, 16]).epoch_times_s()) for plan in plans]
    assert ran[0] < ran[1]  # under int8, its own plan beats the uncompressed choice
