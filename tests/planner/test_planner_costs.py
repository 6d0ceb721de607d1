"""Each action's cost from a profile: compute by split and micro-batch size, slowdown, bytes over links."""

from __future__ import annotations

import pytest

from pipelearn.config import DeviceOverride, RunConfig
from pipelearn.plan import fixed_setups
from pipelearn.planner.costs import CostModel, action_costs, transmit_s
from pipelearn.schedule import DevicePlan, Key, Op, Resource, build_schedule


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
    config = RunConfig(devices=2, network="4g", batch_size=8, device_overrides={1: DeviceOverride(slowdown=3.0)})
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
