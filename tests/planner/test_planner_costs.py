"""Each action's cost from a profile: compute by split and micro-batch size, slowdown, bytes over links, and
what compression changes of them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from pipelearn.config import DeviceOverride, RunConfig
from pipelearn.models.splitting import split
from pipelearn.plan import fixed_setups
from pipelearn.planner.costs import CostModel, action_costs, transmit_s
from pipelearn.planner.measure import profile_model
from pipelearn.planner.profile import Calibration, CodecFit, Profile, ProfileError
from pipelearn.schedule import DevicePlan, Key, Op, Resource, build_schedule
from pipelearn.transport.channel import Channel
from pipelearn.transport.service import transfer


def test_tables_sum_blocks_on_each_side_of_the_split(profile):
    costs = CostModel(profile(), batch_size=8, devices=2)
    forward = [0.0001, 0.004, 0.0001, 0.002]  # per sample, linear in the micro-batch size
    backward = [0.0001, 0.008, 0.0001, 0.004]
    codec = 1e-9  # per byte of each encode or decode
    n, p = 4, 2
    activation = n * (32000 + 8) + 150
    gradient = n * 32000 + 90
    assert costs.activation_bytes[p, n] == activation and costs.gradient_bytes[p, n] == gradient
    assert costs.device_forward[p, n] == pytest.approx(n * sum(forward[:p]) + codec * activation)
    assert costs.device_backward[p, n] == pytest.approx(n * sum(backward[:p]) + codec * gradient)
    server = n * sum(forward[p:]) + n * sum(backward[p:]) + n * 0.0001 + codec * (activation + gradient)
    assert costs.server_train[p, n] == pytest.approx(server)
    assert costs.device_step[p] == pytest.approx(0.002) and costs.server_step[p] == pytest.approx(0.002)
    assert costs.weight_bytes[4] == 160 + 108 and costs.weights.device_send[0] == 0.0
    assert costs.device_forward[0, n] == pytest.approx(codec * (n * (16 + 8) + 150))  # nothing to compute
    assert costs.device_train[n] == pytest.approx(n * (sum(forward) + sum(backward) + 0.0001))


def test_action_costs_apply_slowdown_and_links(profile):
    config = RunConfig(devices=2, network="4g", batch_size=8, device_overrides={1: DeviceOverride(device_slowdown=3.0)})
    setups = fixed_setups(config.validate(), [2, 2], [2, 2])
    schedule = build_schedule("pipelearn", [DevicePlan(8, 2, 2)] * 2, batch_size=8, epochs=1)
    costs = CostModel(profile(), batch_size=8, devices=2)
    cost = action_costs(costs, schedule, setups)
    forward = next(a for a in schedule.lane(Resource.DEVICE, 1) if a.key.op is Op.FORWARD)
    seconds = costs.device_forward[2, 4]
    assert cost(forward).busy_s == pytest.approx(3.0 * seconds)  # device 1 is three times slower
    assert cost(forward).ready_after_s == pytest.approx(seconds)  # its activation leaves when the work is done
    upload = next(a for a in schedule.lane(Resource.UPLINK, 1) if a.key.op is Op.ACTIVATION)
    nbytes = costs.activation_bytes[2, 4]
    assert cost(upload).busy_s == pytest.approx(nbytes * 8 / 10e6)  # 4g: 10 Mbit/s up, 30 ms
    assert cost(upload).ready_after_s == pytest.approx(nbytes * 8 / 10e6 + 0.030 + float(costs.wire_s(nbytes)))
    aggregate = schedule.lane(Resource.SERVER, -1)[0]
    assert aggregate.key == Key(Resource.SERVER, -1, Op.AGGREGATE, 0)
    assert cost(aggregate).busy_s == pytest.approx(costs.aggregate_s)


def test_an_unlimited_link_takes_no_time():
    assert transmit_s(1e6, float("inf")) == 0.0
    assert transmit_s(1e6, 8.0) == pytest.approx(1.0)


def _bn_model() -> nn.Sequential:
    """Blocks whose state holds float tensors of several int8 blocks and an int64 counter (BatchNorm's)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 300), nn.BatchNorm1d(300), nn.ReLU(), nn.Linear(300, 3))


CODECS = ["none", "fp16", "bf16", "int8", "topk:0.1", "topk:0.01"]
ANY_FIT = CodecFit(0.0, 0.0, 0.0, 0.0)
PADDING = 24
"""Bytes the model may be off by: safetensors pads its header to 8 bytes, and the profile's per-block weights
each have their own header (the runtime sends one)."""


@pytest.fixture(scope="module")
def measured() -> Profile:
    """A real profile of _bn_model(), with (unused) timings of every codec: bytes do not depend on them."""
    made = profile_model("vgg5", _bn_model(), (1, 2, 2), 8, repeats=1, budget_s=0.0)
    fits = dict.fromkeys(CODECS[1:], ANY_FIT)
    return replace(made, device=replace(made.device, compression=fits), server=replace(made.server, compression=fits))


@pytest.mark.parametrize("codec", CODECS)
def test_bytes_are_those_of_the_messages_the_runtime_sends(measured, codec):
    other = "int8" if codec != "int8" else "topk:0.1"  # the other direction gets another codec
    model = _bn_model()
    costs = CostModel(measured, batch_size=8, devices=1, up=codec, down=other)
    for p in range(len(model) + 1):
        part = split(model, p)[0]
        for n in (2, 5, 8):
            activation = part(torch.randn(n, 1, 2, 2))
            sent = Channel("device", codec, other).encode(
                Op.ACTIVATION, {"activation": activation, "labels": torch.zeros(n, dtype=torch.int64)}
            )
            returned = Channel("server", codec, other).encode(Op.GRADIENT, {"gradient": torch.randn_like(activation)})
            up = transfer(Key(Resource.UPLINK, 0, Op.ACTIVATION, 0, 0, 0), sent).ByteSize()
            down = transfer(Key(Resource.DOWNLINK, 0, Op.GRADIENT, 0, 0, 0), returned).ByteSize()
            assert abs(costs.activation_bytes[p, n] - up) <= PADDING, (p, n)
            assert abs(costs.gradient_bytes[p, n] - down) <= PADDING, (p, n)
        state = part.state_dict()
        device, server = Channel("device", codec, other), Channel("server", codec, other)
        for weights in (costs.first_weights, costs.weights):  # a stream's first message, then the next
            assert abs(weights.up_bytes[p] - len(device.encode(Op.WEIGHTS, state))) <= PADDING, p
            assert abs(weights.down_bytes[p] - len(server.encode(Op.WEIGHTS, state))) <= PADDING, p
    whole = CostModel(measured, batch_size=8, devices=1)
    if codec.startswith("topk"):  # top-k sends a weight stream's first message whole
        assert np.array_equal(costs.first_weights.up_bytes, whole.weights.up_bytes)
        assert costs.weights.up_bytes[-1] < whole.weights.up_bytes[-1] / 2
    else:
        assert np.array_equal(costs.first_weights.up_bytes, costs.weights.up_bytes)
    if codec != "none":  # where the activation is wide (300 features); on a narrow one, scales and indices cost
        assert (costs.activation_bytes[2, 2:] < whole.activation_bytes[2, 2:]).all()


def test_each_side_spends_its_codec_time(profile):
    fit = CodecFit(compress_s=0.01, compress_s_per_byte=1e-6, decompress_s=0.02, decompress_s_per_byte=2e-6)
    made = profile(compression={"int8": fit})
    plain = CostModel(made, batch_size=8, devices=1)
    up = CostModel(made, batch_size=8, devices=1, up="int8")
    both = CostModel(made, batch_size=8, devices=1, up="int8", down="int8")
    n, p = 4, 2
    floats = n * 32000  # bytes of the activation (and of its gradient) as float32
    safetensors = 1e-9  # the plain codec: seconds per byte of its message
    forward = plain.device_forward[p, n] - safetensors * plain.activation_bytes[p, n]
    assert up.device_forward[p, n] == pytest.approx(forward + 0.01 + 1e-6 * floats)  # the device compresses
    assert up.device_backward[p, n] == plain.device_backward[p, n]  # gradients still go plain
    backward = plain.device_backward[p, n] - safetensors * plain.gradient_bytes[p, n]
    assert both.device_backward[p, n] == pytest.approx(backward + 0.02 + 2e-6 * floats)
    work = plain.server_train[p, n] - safetensors * (plain.activation_bytes[p, n] + plain.gradient_bytes[p, n])
    server = work + (0.02 + 2e-6 * floats) + (0.01 + 1e-6 * floats)  # decompress the activation, compress
    assert both.server_train[p, n] == pytest.approx(server)
    # weights of split 2, Linear(4, 8): two float tensors of 160 bytes in all; the sender also decompresses what
    # it sent (error feedback), the device then copies them into its model
    assert both.weights.device_send[p] == pytest.approx(2 * 0.01 + 1e-6 * 160 + 2 * 0.02 + 2e-6 * 160)
    assert both.weights.device_load[p] == pytest.approx(2 * 0.02 + 2e-6 * 160 + safetensors * 160)
    assert both.weights.server_load[p] == pytest.approx(2 * 0.02 + 2e-6 * 160)
    assert up.weights.server_send[p] == plain.weights.server_send[p] == pytest.approx(safetensors * 160)


def test_a_codec_the_profile_has_not_timed_is_named(profile):
    with pytest.raises(ProfileError, match=r"no timings of compression topk:0\.1"):
        CostModel(profile(), batch_size=8, devices=1, down="topk:0.1")


def test_fedavg_and_loading_weights_cost_what_the_profile_measured(profile):
    made = profile()
    timing = replace(made.server, aggregate_s_per_byte=2e-9, load_s_per_byte=5e-10)
    costs = CostModel(replace(made, device=timing, server=timing), batch_size=8, devices=3)
    model_bytes = 160 + 108
    assert costs.aggregate_s == pytest.approx(3 * model_bytes * (2e-9 + 5e-10))  # each device's model averaged, loaded
    codec = 1e-9  # decoding the weights, then loading them
    assert costs.weights.device_load[4] == pytest.approx(model_bytes * (codec + 5e-10))


def test_sending_weights_pays_safetensors_fixed_cost_per_tensor(profile):
    costs = CostModel(profile(fixed=1e-4), batch_size=8, devices=2)
    model_bytes = 160 + 108
    assert costs.weights.device_send[4] == pytest.approx(4 * 1e-4 + model_bytes * 1e-9)  # two Linears: 4 tensors
    assert costs.weights.device_send[2] == pytest.approx(2 * 1e-4 + 160 * 1e-9)
    assert costs.weights.device_send[0] == 0.0


def test_a_calibration_turns_every_computation_into_its_line_and_leaves_transfers(profile):
    config = RunConfig(devices=2, network="4g", batch_size=8, device_overrides={1: DeviceOverride(device_slowdown=3.0)})
    setups = fixed_setups(config.validate(), [2, 2], [2, 2])
    schedule = build_schedule("pipelearn", [DevicePlan(8, 2, 2)] * 2, batch_size=8, epochs=1)
    measured = profile(fixed=1e-4)
    calibration = {"device": Calibration(1.5, 1e-3, 10), "server": Calibration(2.0, 2e-3, 10)}
    calibrated = replace(
        measured,
        device=replace(measured.device, calibration=calibration["device"]),
        server=replace(measured.server, calibration=calibration["server"]),
    )
    alone = action_costs(CostModel(measured, batch_size=8, devices=2), schedule, setups)
    runs = action_costs(CostModel(calibrated, batch_size=8, devices=2), schedule, setups)
    kinds = set()
    for action in schedule.actions():
        before, after = alone(action), runs(action)
        if action.key.resource in (Resource.DEVICE, Resource.SERVER):
            line = calibration[str(action.key.resource)]
            assert after.cpu_s == pytest.approx(line.factor * before.cpu_s + line.overhead_s)
            assert after.busy_s == pytest.approx(after.cpu_s * before.busy_s / before.cpu_s)  # the slowdown stays
            kinds.add((action.key.resource, action.key.op))
        else:
            assert after == before  # bytes are bytes
    assert len(kinds) >= 8  # forward, backward, steps, weights, FedAvg: every kind of computation was seen


def test_a_calibrated_seconds_a_message_holds_up_the_server_for_each_message_it_handles(profile):
    config = RunConfig(devices=2, network="4g", batch_size=8).validate()
    setups = fixed_setups(config, [2, 2], [2, 2])
    schedule = build_schedule("pipelearn", [DevicePlan(8, 2, 2)] * 2, batch_size=8, epochs=1)
    measured = profile(fixed=1e-4)
    lines = replace(measured, server=replace(measured.server, calibration=Calibration(1.0, 0.0, 10)))
    held = replace(lines, server=replace(lines.server, calibration=Calibration(1.0, 0.0, 10, message_s=0.003)))
    before = action_costs(CostModel(lines, batch_size=8, devices=2), schedule, setups)
    after = action_costs(CostModel(held, batch_size=8, devices=2), schedule, setups)
    messages = {Op.TRAIN: 2, Op.SEND_WEIGHTS: 1, Op.LOAD_WEIGHTS: 1}  # activation in, gradient out; weights
    kinds = set()
    for action in schedule.actions():
        extra = messages.get(action.key.op, 0) * 0.003 if action.key.resource is Resource.SERVER else 0.0
        assert after(action).cpu_s == pytest.approx(before(action).cpu_s + extra)
        assert after(action).busy_s == pytest.approx(before(action).busy_s + extra)
        kinds.add((action.key.resource, action.key.op))
    assert {(Resource.SERVER, op) for op in messages} <= kinds
    plain, holding = CostModel(lines, batch_size=8, devices=2), CostModel(held, batch_size=8, devices=2)
    assert holding.server_train[2, 0] == plain.server_train[2, 0]  # no micro-batch, no messages
    assert holding.weights.server_send[0] == holding.weights.server_load[0] == 0.0  # split 0 has no weights
