"""Tests for what each side accepts from the other: admission, declarations, timelines, plans and limits."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelearn.config import RunConfig
from pipelearn.data import load_dataset
from pipelearn.data.dealing import device_indices
from pipelearn.models.parts import device_part, make_model, output_shape
from pipelearn.plan import RunPlan, fixed_setups, schedule_for
from pipelearn.planner.resolve import resolve_plan
from pipelearn.runtime.checks import (
    EVENT_BYTES,
    HEADROOM_BYTES,
    PLAN_LIMITS,
    admit,
    check_events,
    check_plan,
    check_ready,
    check_start,
    device_plan,
    device_samples,
    device_threads,
    plan_limits,
)
from pipelearn.schedule import Resource
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError, encode
from pipelearn.transport.service import envelope

_HYPOTHESIS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _config(**values: Any) -> RunConfig:
    base = {"dataset": "synthetic", "devices": 3, "samples_per_device": 40, "batch_size": 20, "epochs": 2}
    return RunConfig(**{**base, **values}).validate()


# --- admission ---


@_HYPOTHESIS
@given(
    kind=st.integers(0, 20),
    device=st.integers(0, 2**32 - 1),
    certified=st.none() | st.integers(0, 5),
    joined=st.sets(st.integers(0, 3)),
)
def test_property_admit_takes_exactly_the_ids_a_device_may_have(kind, device, certified, joined) -> None:
    config = _config(devices=4)
    hello = pb.Envelope(protocol=1, kind=kind, device=device)
    may = kind == pb.HELLO and (certified is None or certified == device) and device < 4 and device not in joined
    if may:
        assert admit(hello, config, certified, joined) == device
    else:
        with pytest.raises(WireError):
            admit(hello, config, certified, joined)


def test_admit_says_why() -> None:
    config = _config()
    with pytest.raises(WireError, match="certificate is for device 2, but its HELLO claims device 0"):
        admit(envelope(pb.HELLO, 0), config, 2, set())
    with pytest.raises(WireError, match="already joined"):
        admit(envelope(pb.HELLO, 1), config, 1, {1})
    with pytest.raises(WireError, match="out of range"):
        admit(envelope(pb.HELLO, 3), config, None, set())
    with pytest.raises(WireError, match="not unknown kind 99"):
        admit(pb.Envelope(protocol=1, kind=99), config, None, set())


# --- READY ---


@_HYPOTHESIS
@given(st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=5), st.none(), st.booleans()))
def test_property_ready_accepts_only_the_planned_count(samples: object) -> None:
    message = envelope(pb.READY, 1, text=json.dumps({"samples": samples}))
    if samples == 40 and type(samples) is int:
        check_ready(message, 1, 40)
    else:
        with pytest.raises(WireError, match="the plan gives it 40"):
            check_ready(message, 1, 40)


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (envelope(pb.EVENTS, 1, text='{"samples": 40}'), "sent EVENTS before READY"),
        (envelope(pb.READY, 2, text='{"samples": 40}'), "tagged as device 2"),
        (envelope(pb.READY, 1, text="[40]"), "not a JSON object"),
        (envelope(pb.READY, 1, text="{"), "not a JSON object"),
        (envelope(pb.READY, 1, text="[" * 100_000), "not a JSON object"),
    ],
)
def test_ready_says_what_is_wrong(message: pb.Envelope, words: str) -> None:
    with pytest.raises(WireError, match=words):
        check_ready(message, 1, 40)


# --- EVENTS ---


def _event(**changes: Any) -> dict[str, Any]:
    event = {"track": "device1/compute", "name": "d1.device.F.i0m0", "start": 100.0, "end": 101.0, "args": {}}
    return {**event, **changes}


def _events(*events: object, device: int = 1) -> pb.Envelope:
    return envelope(pb.EVENTS, device, text=json.dumps(events))


def test_a_device_timeline_on_its_own_tracks_is_taken() -> None:
    events = [
        _event(args={"epoch": 1, "loss_sum": 2.5, "samples": 7}),
        _event(track="device1/uplink", args={"bytes": 1000, "epoch": 0, "note": "x", "flag": True, "none": None}),
    ]
    assert check_events(_events(*events), 1, _config(), (99.0, 102.0)) == events


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (_event(track="device0/compute"), "not one of this device's own"),
        (_event(track="server/compute"), "not one of this device's own"),
        (_event(track={}), "not one of this device's own"),
        (_event(start=50.0), "outside the run's time"),
        (_event(end=1e12), "outside the run's time"),
        (_event(start=101.0, end=100.0), "outside the run's time"),
        (_event(start="100"), "outside the run's time"),
        (_event(args={"epoch": 2}), "names epoch 2"),
        (_event(args={"epoch": -1}), "not a whole number"),
        (_event(args={"samples": 1.5, "loss_sum": 1.0}), "not a whole number"),
        (_event(args={"loss_sum": 1.0}), "without its samples"),
        (_event(args={"loss_sum": "NaN", "samples": 1}), "not a finite number"),
        (_event(args={"x": [1]}), "not a finite number, text"),
        (_event(args=[]), "args"),
        (_event(name=7), "name"),
        ({"track": "device1/compute"}, "exactly the keys"),
        ([1, 2], "exactly the keys"),
    ],
)
def test_a_bad_event_is_named(event: object, words: str) -> None:
    with pytest.raises(WireError, match=words):
        check_events(_events(_event(), event), 1, _config(), (99.0, 102.0))


def test_a_timeline_that_is_not_a_list_or_not_json_is_refused() -> None:
    for text in ("{}", "nope", '{"a": NaN}'):
        with pytest.raises(WireError, match="timeline"):
            check_events(envelope(pb.EVENTS, 1, text=text), 1, _config(), (0.0, 1.0))
    with pytest.raises(WireError, match="expected EVENTS, got DONE"):
        check_events(envelope(pb.DONE, 1), 1, _config(), (0.0, 1.0))


_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats() | st.text(max_size=4)


@_HYPOTHESIS
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["track", "name", "start", "end", "args", "extra"]),
            _scalars | st.dictionaries(st.sampled_from(["epoch", "samples", "loss_sum", "bytes", "x"]), _scalars),
        ),
        max_size=3,
    )
)
def test_property_every_taken_event_is_one_the_report_can_read(events: list[dict[str, Any]]) -> None:
    try:
        taken = check_events(_events(*events), 1, _config(), (-10.0, 10.0))
    except WireError:
        return
    for event in taken:
        assert event["track"] in ("device1/compute", "device1/uplink")
        assert -10.0 <= event["start"] <= event["end"] <= 10.0
        args = event["args"]
        assert not isinstance(args.get("epoch"), bool) and args.get("epoch", 0) in range(2)
        if "loss_sum" in args:
            assert math.isfinite(args["loss_sum"]) and isinstance(args["samples"], int)


# --- the plan, as a device checks it ---


def test_a_device_takes_a_sane_plan_and_the_plan_carries_no_server_paths() -> None:
    config = _config(data_dir="/srv/secret/data", download=True, out="/srv/secret/runs")
    plan = device_plan(config, _plan(config))
    assert "/srv/secret" not in plan
    got, resolved = check_plan(plan, 2)
    assert resolved == _plan(config)
    assert got.data_dir is None and got.download is False
    assert got.model == config.model and got.devices == 3
    assert 1 <= device_threads(_config(threads=10_000)) <= 10_000


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"model": "evilnet"}, "unknown model 'evilnet'"),
        ({"dataset": "/etc/passwd"}, "unknown data set"),
        ({"devices": 2}, "leaves out this device 2"),
        ({"batch_size": PLAN_LIMITS["batch_size"] + 1}, "past this device's limit"),
        ({"epochs": PLAN_LIMITS["epochs"] + 1}, "past this device's limit"),
        ({"device_slowdown": 1e9}, "past this device's limit"),
        ({"devices": -1}, "not a valid configuration"),
        ({"colour": "red"}, "not a valid configuration"),
        ({"device_overrides": [1]}, "not a valid configuration"),
        ({"device_overrides": {"x": {}}}, "not a valid configuration"),
    ],
)
def test_a_device_refuses_a_plan_it_should_not_follow(change: dict[str, Any], words: str) -> None:
    try:
        resolved = _plan(_config(**change))  # a plan that fits the bad config, where one can be made
    except (TypeError, ValueError, AttributeError):
        resolved = _plan(_config())
    plan = {"config": {**json.loads(_config().to_json()), **change}, "plan": resolved.to_dict()}
    with pytest.raises(WireError, match=words):
        check_plan(json.dumps(plan), 2)
    with pytest.raises(WireError, match="not a JSON object"):
        check_plan("[]", 0)


def test_start_must_agree_with_what_the_device_holds() -> None:
    config = _config()
    assert check_start(envelope(pb.START, 1, text='{"samples": [40, 40, 40]}'), config, 1, 40) == [40, 40, 40]
    for text, words in [
        ('{"samples": [40, 41, 40]}', "gives this device 41 samples, but it holds 40"),
        ('{"samples": [40, 40]}', "for each of 3 devices"),
        ('{"samples": [40, 0, 40]}', "at least 1"),
        ('{"samples": [40, true, 40]}', "at least 1"),
        ('{"samples": 40}', "for each of 3 devices"),
    ]:
        with pytest.raises(WireError, match=words):
            check_start(envelope(pb.START, 1, text=text), config, 1, 40)


# --- limits from the plan ---


@pytest.mark.parametrize("mode", ["fl", "sl", "sfl", "pipelearn"])
def test_limits_fit_every_message_an_honest_device_sends(mode: str) -> None:
    config = _config(mode=mode, microbatches=3, batchnorm=True, partition="dirichlet", samples_per_device=50)
    train = load_dataset("synthetic", "train")
    model = make_model(config, train.input_shape, train.num_classes)
    plan = resolve_plan(config, model, train.input_shape)
    limits = plan_limits(config, plan, model, train.input_shape, device_samples(config, train))
    assert limits.samples == [len(device_indices(config, train, d)) for d in range(3)]
    assert limits.in_flight == (3 if mode == "pipelearn" else 1) + 4
    schedule = schedule_for(config, plan, limits.samples)
    for d in range(3):
        part = device_part(model, plan.devices[d].split)
        weights = envelope(pb.WEIGHTS, d, round=0, tensors=encode(part.state_dict()))
        assert weights.ByteSize() <= limits.max_bytes[d]
        if mode != "fl":
            pieces = plan.devices[d].microbatches if mode == "pipelearn" else 1
            largest = -(-min(config.batch_size, limits.samples[d]) // pieces)
            x = torch.zeros(largest, *output_shape(part, train.input_shape))
            tensors = encode({"activation": x, "labels": torch.zeros(largest, dtype=torch.int64)})
            assert envelope(pb.ACTIVATION, d, tensors=tensors).ByteSize() <= limits.max_bytes[d]
        actions = len(schedule.lane(Resource.DEVICE, d)) + len(schedule.lane(Resource.UPLINK, d))
        assert limits.max_bytes[d] >= actions * EVENT_BYTES
        assert limits.max_bytes[d] <= 64 * (1 << 20)  # derived from the plan, nothing like a blanket 1 GiB
    assert limits.receive_bytes == max(limits.max_bytes) + HEADROOM_BYTES


def test_limits_refuse_a_configuration_the_devices_cannot_serve() -> None:
    train = load_dataset("synthetic", "train")
    config = _config(samples_per_device=100_000)
    with pytest.raises(ValueError, match="samples_per_device 100000 x 3 devices = 300000 exceeds"):
        device_samples(config, train)


def _plan(config: RunConfig) -> RunPlan:
    """The plan of a run with fixed splits and micro-batch counts (nothing to profile)."""
    return RunPlan(fixed_setups(config, [2] * config.devices, [3] * config.devices))
