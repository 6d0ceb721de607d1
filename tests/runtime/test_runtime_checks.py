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


@st.composite
def _joining(draw: st.DrawFn) -> tuple[int, int | None, set[int]]:
    """A HELLO's device id, its certificate's id (None without TLS) and the ids already joined, all admissible."""
    device = draw(st.integers(0, 3))
    certified = draw(st.sampled_from([None, device]))
    return device, certified, draw(st.sets(st.integers(0, 3).filter(lambda d: d != device)))


@_HYPOTHESIS
@given(_joining())
def test_property_admit_takes_every_id_a_device_may_have(joining: tuple[int, int | None, set[int]]) -> None:
    device, certified, joined = joining
    assert admit(envelope(pb.HELLO, device), _config(devices=4), certified, joined) == device


@_HYPOTHESIS
@given(_joining(), st.sampled_from(["kind", "range", "certificate", "joined"]), st.data())
def test_property_admit_refuses_each_way_an_id_may_be_wrong(
    joining: tuple[int, int | None, set[int]], fault: str, data: st.DataObject
) -> None:
    device, certified, joined = joining
    hello = envelope(pb.HELLO, 0)
    if fault == "kind":
        hello = pb.Envelope(protocol=1, kind=data.draw(st.sampled_from([k for k in pb.Kind.values() if k != pb.HELLO])))
    elif fault == "range":
        device = data.draw(st.integers(4, 2**32 - 1))
        certified = data.draw(st.sampled_from([None, device]))
    elif fault == "certificate":
        certified = data.draw(st.integers(0, 2**32 - 1).filter(lambda c: c != device))
    else:
        joined = joined | {device}
    hello.device = device
    with pytest.raises(WireError):
        admit(hello, _config(devices=4), certified, joined)


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


_json_values = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5)


@_HYPOTHESIS
@given(st.dictionaries(st.text(max_size=5).filter(lambda k: k != "samples"), _json_values, max_size=3))
def test_property_ready_accepts_the_planned_count_whatever_else_it_says(others: dict[str, object]) -> None:
    check_ready(envelope(pb.READY, 1, text=json.dumps({**others, "samples": 40})), 1, 40)


@_HYPOTHESIS
@given(_json_values.filter(lambda v: not (type(v) is int and v == 40)) | st.just(40.0) | st.just("40"))
def test_property_ready_refuses_any_other_count(samples: object) -> None:
    message = envelope(pb.READY, 1, text=json.dumps({"samples": samples}))
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


_WINDOW = (-10.0, 10.0)
_text = st.text(max_size=4)
_finite = st.integers(-5, 5) | st.floats(-1e6, 1e6)
_counts = {"epoch": st.integers(0, 1), "samples": st.integers(0, 10**6), "bytes": st.integers(0, 10**9)}


@st.composite
def _taken_event(draw: st.DrawFn) -> dict[str, Any]:
    """An event that device 1 of a two-epoch run may send: its own track, inside the window, readable args."""
    start, end = sorted(draw(st.lists(st.floats(*_WINDOW), min_size=2, max_size=2)))
    args: dict[str, Any] = draw(
        st.dictionaries(
            _text.filter(lambda k: k not in {*_counts, "loss_sum"}),
            st.none() | st.booleans() | _text | _finite,
            max_size=3,
        )
    )
    for key in draw(st.sets(st.sampled_from(sorted(_counts)))):
        args[key] = draw(_counts[key])
    if draw(st.booleans()):
        args.update(loss_sum=draw(_finite), samples=draw(_counts["samples"]))
    track = draw(st.sampled_from(["device1/compute", "device1/uplink"]))
    return {"track": track, "name": draw(st.text(max_size=20)), "start": start, "end": end, "args": args}


def _readable(event: dict[str, Any]) -> bool:
    """Whether the report can read the event: what it indexes and adds up is there and in range."""
    args = event["args"]
    epoch = args.get("epoch", 0)
    loss = "loss_sum" not in args or (math.isfinite(args["loss_sum"]) and isinstance(args.get("samples"), int))
    return (
        event["track"] in ("device1/compute", "device1/uplink")
        and _WINDOW[0] <= event["start"] <= event["end"] <= _WINDOW[1]
        and type(epoch) is int
        and epoch in range(2)
        and loss
    )


@pytest.mark.slow
@_HYPOTHESIS
@given(st.lists(_taken_event(), max_size=4))
def test_property_every_event_the_report_can_read_is_taken(events: list[dict[str, Any]]) -> None:
    assert all(_readable(e) for e in events)
    assert check_events(_events(*events), 1, _config(), _WINDOW) == events


_FAULTS: dict[str, Any] = {
    "track": st.sampled_from(["device0/compute", "device1/downlink", "server/compute", ""]).map(lambda t: {"track": t}),
    "outside": st.sampled_from([{"start": -10.5}, {"end": 10.5}, {"start": 5.0, "end": 4.0}, {"end": math.inf}]),
    "time type": st.sampled_from([{"start": "0"}, {"end": None}, {"start": True}]),
    "epoch": st.sampled_from([2, -1, 1.0, True, "0"]).map(lambda e: {"args": {"epoch": e}}),
    "count": st.sampled_from(["samples", "bytes"]).flatmap(
        lambda k: st.sampled_from([-1, 0.5, None, "1"]).map(lambda v: {"args": {k: v}})
    ),
    "loss": st.sampled_from(
        [{"loss_sum": 1.0}, {"loss_sum": math.nan, "samples": 1}, {"loss_sum": "1", "samples": 1}]
    ).map(lambda a: {"args": a}),
    "arg": st.sampled_from([[1], {"a": 1}, math.inf]).map(lambda v: {"args": {"x": v}}),
    "args": st.sampled_from([[], None, "x", {str(i): i for i in range(33)}]).map(lambda a: {"args": a}),
    "name": st.sampled_from([7, None, "n" * 201]).map(lambda n: {"name": n}),
}


@pytest.mark.slow
@_HYPOTHESIS
@given(st.lists(_taken_event(), min_size=1, max_size=4), st.sampled_from([*_FAULTS, "keys"]), st.data())
def test_property_an_event_the_report_cannot_read_is_refused(
    events: list[dict[str, Any]], fault: str, data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(events) - 1))
    if fault == "keys":
        bad: object = data.draw(
            st.sampled_from(
                [{k: v for k, v in events[i].items() if k != "args"}, {**events[i], "extra": 1}, [1, 2], None]
            )
        )
    else:
        bad = {**events[i], **data.draw(_FAULTS[fault])}
    sent: list[object] = [*events[:i], bad, *events[i + 1 :]]
    with pytest.raises(WireError, match=f"event {i} of device 1's timeline"):
        check_events(_events(*sent), 1, _config(), _WINDOW)


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
        ({"batch_size": PLAN_LIMITS["batch_size"] + 1, "samples_per_device": None}, "past this device's limit"),
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
