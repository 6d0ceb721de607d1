"""Who takes part in which round: drops release the waiting aggregation, rejoins are waited for from their round."""

from __future__ import annotations

import threading

import pytest
import torch

from pipelearn.events import now
from pipelearn.runtime.membership import Membership, RejoinError
from pipelearn.runtime.server import Server, prepare
from pipelearn.schedule import COORDINATOR, Key, Op, Resource


def _load(device: int, round: int) -> Key:
    return Key(Resource.SERVER, device, Op.LOAD_WEIGHTS, round)


def _aggregate(round: int) -> Key:
    return Key(Resource.SERVER, COORDINATOR, Op.AGGREGATE, round)


def test_a_drop_releases_a_wait_on_the_dropped_device_and_is_logged():
    members = Membership(2)
    members.begin(rounds=3, first_round=0, start=now())
    released = threading.Event()
    waiter = threading.Thread(target=lambda: (members.wait(_load(1, 0), 10), released.set()))
    waiter.start()
    assert not released.wait(0.2)
    members.drop(1, 0, "device 1 disconnected")
    waiter.join(5)
    assert released.is_set()
    assert members.is_out(1) and not members.is_out(0)
    assert [(e["device"], e["round"], e["reason"]) for e in members.dropped] == [(1, 0, "device 1 disconnected")]
    members.drop(1, 0, "again")  # a second report of the same loss changes nothing
    assert len(members.dropped) == 1


def test_a_wait_on_a_live_device_times_out_with_the_action_named():
    members = Membership(1)
    members.begin(rounds=1, first_round=0, start=now())
    with pytest.raises(RuntimeError, match=r"d0\.server\.L\.r0"):
        members.wait(_load(0, 0), 0.05)


def test_a_rejoined_device_takes_part_from_the_round_after_the_one_in_progress():
    members = Membership(2)
    members.begin(rounds=4, first_round=0, start=now())
    members.drop(1, 1, "silent")
    members.done(_aggregate(0))
    assert members.rounds_done == 1
    assert members.reserve(1)
    assert not members.reserve(1)  # one connection at a time may claim the place
    assert members.rejoin(1) == 2
    assert [members.takes_part(1, r) for r in range(4)] == [True, False, True, True]
    assert members.rejoined[0]["device"] == 1 and members.rejoined[0]["round"] == 2
    assert not members.reserve(1)  # it is back in: its id is taken again


def test_nobody_rejoins_in_the_last_round_or_before_the_run_starts():
    members = Membership(2)
    assert not members.reserve(1)
    members.begin(rounds=2, first_round=0, start=now())
    members.drop(1, 0, "gone")
    members.done(_aggregate(0))
    assert members.reserve(1)
    with pytest.raises(RejoinError, match="last round"):
        members.rejoin(1)
    assert members.is_out(1)


def test_aggregation_leaves_out_a_dropped_devices_partial_round_and_restores_its_replica(small_config):
    server = Server(prepare(small_config(mode="sfl")), progress=False)
    server.membership.begin(server.schedule.rounds, 0, now())
    aggregator = server.aggregator
    global_before = {k: v.clone() for k, v in aggregator.global_state.items()}
    with torch.no_grad():
        for p in aggregator.replicas[0].part.parameters():
            p.add_(0.5)  # device 0 finished its round
        for p in aggregator.replicas[1].part.parameters():
            p.add_(100.0)  # device 1 was dropped part-way through; its replica moved anyway
    device_keys = set(aggregator.parts.specs[0])
    aggregator.upload(0, {k: global_before[k] - 0.25 for k in device_keys})
    replica = {k: v.clone() for k, v in aggregator.replicas[0].part.state_dict().items()}
    finished = {**aggregator.uploaded[0], **replica}
    assert aggregator.aggregate(0) == {}
    aggregator.checkpoints.close()
    for name, value in finished.items():
        torch.testing.assert_close(aggregator.global_state[name], value, rtol=0, atol=0, msg=name)
    for name, value in aggregator.replicas[1].part.state_dict().items():
        torch.testing.assert_close(value, aggregator.global_state[name], rtol=0, atol=0, msg=name)
    assert aggregator.uploaded == {}


def test_a_resumed_run_counts_the_rounds_before_its_first_as_done():
    members = Membership(2)
    members.begin(rounds=4, first_round=2, start=now())
    members.wait(_aggregate(1), 0.01)
    assert members.rounds_done == 2
    with pytest.raises(RuntimeError, match="did not finish"):
        members.wait(_aggregate(2), 0.01)
