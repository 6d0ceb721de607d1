"""The simulator, on hand-made costs, gives the times worked out by hand for every mode and a shared server, and
for compressed messages."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipelearn.config import RunConfig
from pipelearn.plan import RunPlan, fixed_setups
from pipelearn.planner.costs import CostModel
from pipelearn.planner.predict import run_simulation
from pipelearn.planner.profile import CodecFit, Timing
from pipelearn.planner.simulate import Cost, simulate
from pipelearn.schedule import Action, DevicePlan, Key, Op, Resource, build_schedule

# Per device: seconds of each compute op (before slowdown), and each transfer as (busy seconds, latency seconds).
COMPUTE = {Op.FORWARD: 1.0, Op.BACKWARD: 1.0, Op.TRAIN: 1.0, Op.STEP: 0.0, Op.SEND_WEIGHTS: 0.0}
TRANSFER = {Op.ACTIVATION: (2.0, 0.5), Op.GRADIENT: (1.0, 0.5), Op.WEIGHTS: (0.0, 0.0)}


def costs(
    compute: dict[int, dict[Op, float]] | None = None,
    transfer: dict[int, dict[Op, tuple[float, float]]] | None = None,
    slowdown: dict[int, float] | None = None,
    server_train: float = 1.0,
):
    """A cost function: device d's costs from its tables (defaults above), every server train server_train."""

    def cost(action: Action) -> Cost:
        key = action.key
        if key.resource is Resource.SERVER:
            seconds = server_train if key.op is Op.TRAIN else 0.0
            return Cost(seconds, seconds)
        if key.resource is Resource.DEVICE:
            seconds = {**COMPUTE, **(compute or {}).get(key.device, {})}.get(key.op, 0.0)
            return Cost(seconds * (slowdown or {}).get(key.device, 1.0), seconds)
        busy, latency = {**TRANSFER, **(transfer or {}).get(key.device, {})}[key.op]
        return Cost(busy, busy + latency)

    return cost


def _at(sim, resource: Resource, device: int, op: Op, iteration: int = 0, microbatch: int = 0) -> tuple[float, float]:
    key = Key(resource, device, op, 0, iteration, microbatch)
    return sim.start[key], sim.end[key]


def test_pipelearn_one_device_two_microbatches():
    schedule = build_schedule("pipelearn", [DevicePlan(2, 1, 2)], batch_size=2, epochs=1)
    sim = simulate(schedule, costs())
    # F0 [0,1], F1 [1,2]; uplink a0 [1,3] (delivered 3.5), a1 [3,5] (5.5); server T0 [3.5,4.5], T1 [5.5,6.5];
    # downlink g0 [4.5,5.5] (6), g1 [6.5,7.5] (8); B0 waits for g0: [6,7]; B1 for g1: [8,9]; the rest costs 0.
    assert _at(sim, Resource.UPLINK, 0, Op.ACTIVATION, 0, 1) == (3.0, 5.0)
    assert _at(sim, Resource.SERVER, 0, Op.TRAIN, 0, 1) == (5.5, 6.5)
    assert _at(sim, Resource.DEVICE, 0, Op.BACKWARD, 0, 0) == (6.0, 7.0)
    assert _at(sim, Resource.DEVICE, 0, Op.BACKWARD, 0, 1) == (8.0, 9.0)
    assert sim.epoch_times_s() == [9.0]
    assert sim.busy_s() == {
        "device0/compute": 4.0,
        "device0/downlink": 2.0,
        "device0/uplink": 4.0,
        "server/compute": 2.0,
    }
    assert sim.bound_s() == 4.0


def test_sfl_is_one_microbatch():
    schedule = build_schedule("sfl", [DevicePlan(2, 1, 4)], batch_size=2, epochs=1)
    sim = simulate(schedule, costs())
    # F [0,1]; a [1,3] -> 3.5; T [3.5,4.5]; g [4.5,5.5] -> 6; B [6,7]
    assert _at(sim, Resource.DEVICE, 0, Op.BACKWARD) == (6.0, 7.0)
    assert sim.epoch_times_s() == [7.0]


def test_fl_trains_locally_and_exchanges_weights():
    schedule = build_schedule("fl", [DevicePlan(2, 5, 1)], batch_size=2, epochs=1)
    sim = simulate(
        schedule,
        costs(compute={0: {Op.TRAIN: 3.0, Op.STEP: 1.0}}, transfer={0: {Op.WEIGHTS: (1.0, 0.5)}}),
    )
    # weights down [0,1], delivered 1.5; T [1.5,4.5]; S [4.5,5.5]; weights up [5.5,6.5] -> 7; load, aggregate at 7
    assert _at(sim, Resource.DEVICE, 0, Op.TRAIN) == (1.5, 4.5)
    assert sim.start[Key(Resource.SERVER, -1, Op.AGGREGATE, 0)] == 7.0
    assert sim.epoch_times_s() == [7.0]
    assert sim.busy_s()["device0/compute"] == 4.0 and sim.busy_s()["device0/uplink"] == 1.0


def test_sl_devices_take_turns():
    schedule = build_schedule("sl", [DevicePlan(2, 1, 1), DevicePlan(2, 1, 1)], batch_size=2, epochs=1)
    sim = simulate(schedule, costs())
    # device 0 as in sfl, done at 7; device 1 gets the weights then and repeats it: 7 + 7
    assert _at(sim, Resource.DEVICE, 1, Op.FORWARD) == (7.0, 8.0)
    assert sim.epoch_times_s() == [14.0]


def test_two_epochs_are_timed_apart():
    schedule = build_schedule("sfl", [DevicePlan(2, 1, 1)], batch_size=2, epochs=2)
    sim = simulate(schedule, costs())
    assert sim.epoch_times_s() == [7.0, 7.0]


def test_slowdown_stretches_the_device_but_the_message_leaves_when_the_work_is_done():
    schedule = build_schedule("sfl", [DevicePlan(2, 1, 1)], batch_size=2, epochs=1)
    sim = simulate(schedule, costs(slowdown={0: 3.0}))
    # F busy [0,3] but hands its activation over at 1 (the runtime sleeps the slowdown after the work)
    assert _at(sim, Resource.DEVICE, 0, Op.FORWARD) == (0.0, 3.0)
    assert _at(sim, Resource.UPLINK, 0, Op.ACTIVATION) == (1.0, 3.0)
    assert _at(sim, Resource.DEVICE, 0, Op.BACKWARD) == (6.0, 9.0)


def test_heterogeneous_devices_queue_for_the_one_server():
    schedule = build_schedule("pipelearn", [DevicePlan(2, 1, 2), DevicePlan(2, 1, 2)], batch_size=2, epochs=1)
    sim = simulate(
        schedule,
        costs(
            slowdown={1: 2.0},
            transfer={1: {Op.ACTIVATION: (1.0, 0.5), Op.GRADIENT: (0.5, 0.5)}},
            server_train=2.0,
        ),
    )
    # device 1 (twice as slow, faster links): F0 [0,2] hands over at 1, F1 [2,4] at 3; a0 [1,2] -> 2.5, a1 [3,4]
    # -> 4.5. device 0: a0 -> 3.5, a1 [3,5] -> 5.5. The server takes them as they become ready, one at a time:
    # d1 T0 [2.5,4.5]; d0 T0 (ready 3.5) [4.5,6.5]; d1 T1 (ready 4.5) [6.5,8.5]; d0 T1 (ready 6.5) [8.5,10.5].
    assert _at(sim, Resource.SERVER, 1, Op.TRAIN, 0, 0) == (2.5, 4.5)
    assert _at(sim, Resource.SERVER, 0, Op.TRAIN, 0, 0) == (4.5, 6.5)
    assert _at(sim, Resource.SERVER, 1, Op.TRAIN, 0, 1) == (6.5, 8.5)
    assert _at(sim, Resource.SERVER, 0, Op.TRAIN, 0, 1) == (8.5, 10.5)
    # gradients: d1 g0 [4.5,5] -> 5.5, g1 [8.5,9] -> 9.5; d0 g0 [6.5,7.5] -> 8, g1 [10.5,11.5] -> 12
    # backward passes: d1 B0 [5.5,7.5], B1 [9.5,11.5]; d0 B0 [8,9], B1 [12,13]; then weights and FedAvg at 13
    assert _at(sim, Resource.DEVICE, 1, Op.BACKWARD, 0, 1) == (9.5, 11.5)
    assert _at(sim, Resource.DEVICE, 0, Op.BACKWARD, 0, 1) == (12.0, 13.0)
    assert sim.epoch_times_s() == [13.0]
    busy = sim.busy_s()
    assert busy["server/compute"] == 8.0 and busy["device1/compute"] == 8.0 and busy["device0/compute"] == 4.0
    assert busy["device1/uplink"] == 2.0 and busy["device0/downlink"] == 2.0
    assert sim.bound_s() == 8.0


def test_events_are_on_the_runtime_tracks():
    schedule = build_schedule("pipelearn", [DevicePlan(2, 1, 2)], batch_size=2, epochs=1)
    sim = simulate(schedule, costs())
    events = sim.events()
    assert {e.track for e in events} == {"device0/compute", "device0/uplink", "device0/downlink", "server/compute"}
    assert len(events) == sum(len(lane) for lane in schedule.lanes.values())
    assert all(e.end >= e.start and e.args["epoch"] == 0 for e in events)


def test_an_action_waiting_on_nothing_in_the_schedule_is_refused():
    schedule = build_schedule("sfl", [DevicePlan(2, 1, 1)], batch_size=2, epochs=1)
    lane = schedule.lanes[(Resource.SERVER, 0)]
    ghost = Key(Resource.UPLINK, 5, Op.ACTIVATION, 0, 0, 0)
    lane[0] = Action(lane[0].key, lane[0].epoch, (ghost,))
    with pytest.raises(RuntimeError, match="no lane"):
        simulate(schedule, costs())


# Processes sharing a host's cores (host_cores): the compute of device and server actions shares the cores.


def computing(cost):
    """`cost` with every device and server action's compute marked as CPU seconds (a device's before slowdown)."""

    def shared(action: Action) -> Cost:
        c = cost(action)
        if action.key.resource is Resource.DEVICE:
            return Cost(c.busy_s, c.ready_after_s, c.ready_after_s)
        if action.key.resource is Resource.SERVER:
            return Cost(c.busy_s, c.ready_after_s, c.busy_s)
        return c

    return shared


def _fl_pair():
    return build_schedule("fl", [DevicePlan(2, 5, 1), DevicePlan(2, 5, 1)], batch_size=2, epochs=1)


def test_two_computations_on_one_core_take_twice_as_long():
    schedule = _fl_pair()
    # both devices train 1 s of compute from 0 (weights, steps and transfers cost nothing here)
    assert _at(simulate(schedule, computing(costs()), host_cores=1), Resource.DEVICE, 1, Op.TRAIN) == (0.0, 2.0)
    assert _at(simulate(schedule, computing(costs()), host_cores=2), Resource.DEVICE, 1, Op.TRAIN) == (0.0, 1.0)
    assert _at(simulate(schedule, computing(costs())), Resource.DEVICE, 1, Op.TRAIN) == (0.0, 1.0)
    half = simulate(schedule, computing(costs()), host_cores=0.5)  # half a core: each gets a quarter
    assert _at(half, Resource.DEVICE, 0, Op.TRAIN) == (0.0, 4.0) and half.epoch_times_s() == [4.0]


def test_a_devices_slowdown_absorbs_the_sharing_up_to_the_slowdown():
    schedule = _fl_pair()
    # on one core each 1 s of compute takes 2 s: within a slowdown of 3 the device still takes 3 s, past 1.5 it is 2 s
    slow = simulate(schedule, computing(costs(slowdown={0: 3.0, 1: 3.0})), host_cores=1)
    assert _at(slow, Resource.DEVICE, 0, Op.TRAIN) == (0.0, 3.0)
    fast = simulate(schedule, computing(costs(slowdown={0: 1.5, 1: 1.5})), host_cores=1)
    assert _at(fast, Resource.DEVICE, 0, Op.TRAIN) == (0.0, 2.0)


def test_sharing_follows_what_computes_when():
    cost = costs(compute={0: {Op.TRAIN: 2.0}, 1: {Op.TRAIN: 0.5}}, transfer={1: {Op.WEIGHTS: (1.0, 0.0)}})
    sim = simulate(_fl_pair(), computing(cost), host_cores=1)
    # device 0 computes alone over [0,1] (1 s of its 2 done); device 1's weights arrive at 1, and both then get half
    # the core: device 1's 0.5 s end at 2, when device 0 has 0.5 s left, done alone by 2.5
    assert _at(sim, Resource.DEVICE, 1, Op.TRAIN) == (1.0, 2.0)
    assert _at(sim, Resource.DEVICE, 0, Op.TRAIN) == (0.0, 2.5)


def test_a_message_leaves_when_its_shared_compute_is_done():
    schedule = build_schedule("sfl", [DevicePlan(2, 1, 1), DevicePlan(2, 1, 1)], batch_size=2, epochs=1)
    sim = simulate(schedule, computing(costs(slowdown={0: 3.0, 1: 3.0})), host_cores=1)
    # both forwards compute 1 s on one core: done at 2, where the activations leave; the slowdown ends them at 3
    assert _at(sim, Resource.DEVICE, 0, Op.FORWARD) == (0.0, 3.0)
    assert _at(sim, Resource.UPLINK, 0, Op.ACTIVATION) == (2.0, 4.0)
    # both delivered at 4.5, with nothing else computing: the server trains them one after the other at full speed
    assert _at(sim, Resource.SERVER, 0, Op.TRAIN) == (4.5, 5.5)
    assert _at(sim, Resource.SERVER, 1, Op.TRAIN) == (5.5, 6.5)


def test_the_server_computes_slower_while_a_device_computes():
    # device 0's activation reaches the server at 1, when device 1 (its weights 1 s late) starts its forward pass
    cost = costs(transfer={0: {Op.ACTIVATION: (0.0, 0.0)}, 1: {Op.WEIGHTS: (1.0, 0.0)}})
    schedule = build_schedule("sfl", [DevicePlan(2, 1, 1), DevicePlan(2, 1, 1)], batch_size=2, epochs=1)
    sim = simulate(schedule, computing(cost), host_cores=1)
    assert _at(sim, Resource.DEVICE, 0, Op.FORWARD) == (0.0, 1.0)
    assert _at(sim, Resource.SERVER, 0, Op.TRAIN) == (1.0, 3.0)  # 1 s of compute beside device 1's
    assert _at(sim, Resource.DEVICE, 1, Op.FORWARD) == (1.0, 3.0)
    unshared = simulate(schedule, computing(cost))
    assert _at(unshared, Resource.SERVER, 0, Op.TRAIN) == (1.0, 2.0)


def test_the_shared_cores_are_a_bound():
    # device 1's weights arrive 5 s late, long after device 0 is done: no sharing, but 2 s of compute on one core
    cost = costs(transfer={1: {Op.WEIGHTS: (0.0, 5.0)}})
    sim = simulate(_fl_pair(), computing(cost), host_cores=1)
    assert _at(sim, Resource.DEVICE, 1, Op.TRAIN) == (5.0, 6.0)
    assert max(sim.busy_s().values()) == 1.0 and sim.cpu_s == 2.0 and sim.bound_s() == 2.0
    assert simulate(_fl_pair(), computing(cost)).bound_s() == 1.0


@pytest.mark.parametrize("mode", ["fl", "sl", "sfl", "pipelearn"])
def test_without_sharing_compute_seconds_change_nothing(mode):
    plans = [DevicePlan(4, 1, 2), DevicePlan(4, 1, 2), DevicePlan(2, 1, 2)]
    schedule = build_schedule(mode, plans, batch_size=2, epochs=2)
    cost = costs(slowdown={1: 2.0}, transfer={2: {Op.ACTIVATION: (0.5, 0.5)}}, server_train=0.7)
    plain = simulate(schedule, cost)
    assert simulate(schedule, computing(cost)).ends == plain.ends  # off: exactly the old timeline
    ample = simulate(schedule, computing(cost), host_cores=len(plans) + 1)  # a core for every process
    assert ample.starts == pytest.approx(plain.starts) and ample.ends == pytest.approx(plain.ends)
    assert ample.epoch_times_s() == pytest.approx(plain.epoch_times_s())


def test_host_cores_must_be_positive():
    with pytest.raises(ValueError, match="host_cores must be a positive number"):
        simulate(_fl_pair(), costs(), host_cores=0)


def test_compressed_messages_on_the_hand_worked_timeline(profile):
    """The cost model under fp16 both ways, through the simulator: fp16 halves every float tensor and keeps the
    header's length, so every number below is worked out by hand."""
    timing = Timing(
        forward_s=[[0.0, 0.0], [0.0125, 0.1], [0.0, 0.0], [0.0125, 0.1]],
        backward_s=[[0.0, 0.0], [0.025, 0.2], [0.0, 0.0], [0.0125, 0.1]],
        loss_s=[0.0, 0.0],
        step_s=[0.0] * 4,
        codec_s=0.0,
        codec_s_per_byte=0.0,
        wire_s=0.0,
        wire_s_per_byte=0.0,
        aggregate_s_per_byte=0.0,
        compression={"fp16": CodecFit(compress_s=0.01, compress_s_per_byte=1e-4, decompress_s=0.02,
                                      decompress_s_per_byte=0.0)},
    )  # fmt: skip
    made = replace(profile(output_bytes=[16, 32, 32, 12]), device=timing, server=timing)
    config = RunConfig(
        mode="sfl", devices=1, batch_size=8, samples_per_device=8, epochs=1, split=2, microbatches=1,
        up_mbps=1.0, down_mbps=1.0, latency_ms=10.0, device_slowdown=1.0, compress="fp16",
    ).validate()  # fmt: skip
    sim = run_simulation(config, RunPlan(fixed_setups(config, [2], [1])), CostModel.for_run(made, config), [8])
    # Split 2 holds Linear(4, 8): weights 160 bytes (2 tensors), 80 as fp16; the activation of 8 samples is 256
    # bytes as float32, so 8 x (16 + 8 of labels) + 150 = 342 bytes on the wire, its gradient 8 x 16 + 90 = 218.
    # Server W: 2 x (0.01 + 0.02) + 1e-4 x 160 = 0.076 (it decompresses what it sends); w down 80 B: 0.00064,
    # delivered 10 ms later, 0.08664; device L: 2 x 0.02 = 0.04 -> 0.12664
    assert sim.end[Key(Resource.DEVICE, 0, Op.LOAD_WEIGHTS, 0)] == pytest.approx(0.12664)
    # F: 0.1 + 0.01 + 1e-4 x 256 = 0.1356 -> 0.26224; a: 342 B, 0.002736 -> 0.264976, delivered 0.274976
    assert _at(sim, Resource.UPLINK, 0, Op.ACTIVATION) == pytest.approx((0.26224, 0.264976))
    # T: 0.02 (decompress) + 0.2 + 0.0356 (compress the gradient) -> 0.530576; g: 218 B, 0.001744 -> 0.54232
    assert _at(sim, Resource.SERVER, 0, Op.TRAIN) == pytest.approx((0.274976, 0.530576))
    # B: 0.02 + 0.2 -> 0.76232; W: 0.076 -> 0.83832; w up: 0.00064 -> 0.84896 delivered; server L: 0.04
    assert _at(sim, Resource.DEVICE, 0, Op.BACKWARD) == pytest.approx((0.54232, 0.76232))
    assert sim.epoch_times_s() == pytest.approx([0.88896])
    assert sim.busy_s()["device0/uplink"] == pytest.approx(0.002736 + 0.00064)


def test_a_stale_schedule_overlaps_the_next_mini_batch_with_the_one_in_flight():
    schedule = build_schedule("sfl", [DevicePlan(2, 1, 1)], batch_size=1, epochs=1, staleness=1)
    sim = simulate(schedule, costs())
    # F0 [0,1], F1 [1,2] (no wait for step 0); a0 [1,3] (3.5), a1 [3,5] (5.5); T0 [3.5,4.5], T1 [5.5,6.5];
    # g0 [4.5,5.5] (6), g1 [6.5,7.5] (8); B0 [6,7], B1 [8,9]. Without staleness F1 waits for B0: 14 s.
    assert _at(sim, Resource.DEVICE, 0, Op.FORWARD, 1) == (1.0, 2.0)
    assert _at(sim, Resource.UPLINK, 0, Op.ACTIVATION, 1) == (3.0, 5.0)
    assert _at(sim, Resource.SERVER, 0, Op.TRAIN, 1) == (5.5, 6.5)
    assert _at(sim, Resource.DEVICE, 0, Op.BACKWARD, 0) == (6.0, 7.0)
    assert _at(sim, Resource.DEVICE, 0, Op.BACKWARD, 1) == (8.0, 9.0)
    assert sim.epoch_times_s() == [9.0]
    fresh = simulate(build_schedule("sfl", [DevicePlan(2, 1, 1)], batch_size=1, epochs=1), costs())
    assert fresh.epoch_times_s() == [14.0]


@pytest.mark.parametrize(("order", "epoch"), [(None, 12.0), ((1, 0), 11.0), ((0, 1), 12.0)])
def test_the_server_serves_waiting_devices_in_the_schedules_order(order, epoch):
    plans = [DevicePlan(1, 1, 1), DevicePlan(1, 1, 1)]
    schedule = build_schedule("sfl", plans, batch_size=1, epochs=1, server_order=order)
    sim = simulate(schedule, costs(compute={1: {Op.BACKWARD: 5.0}}))
    # F [0,1] on both; a [1,3], delivered 3.5 on both: the server takes the best-ranked first (device 0 where the
    # order is arrival, the lanes' order breaking the tie). Device 0 first: T0 [3.5,4.5], T1 [4.5,5.5], g1 [5.5,6.5]
    # (7), B1 [7,12]. Device 1 first: T1 [3.5,4.5], g1 [4.5,5.5] (6), B1 [6,11]; T0 [4.5,5.5], g0 (7), B0 [7,8].
    first = 1 if order == (1, 0) else 0
    assert _at(sim, Resource.SERVER, first, Op.TRAIN) == (3.5, 4.5)
    assert _at(sim, Resource.SERVER, 1 - first, Op.TRAIN) == (4.5, 5.5)
    assert sim.epoch_times_s() == [epoch]


def test_a_server_order_ranks_every_device_once():
    with pytest.raises(ValueError, match="ranks each of the 2 devices once"):
        build_schedule("sfl", [DevicePlan(1, 1, 1)] * 2, batch_size=1, epochs=1, server_order=(0, 0))
