"""Tests for the liveness rule: deadlines from the peer's remaining actions, pace and backlog, with a floor."""

from __future__ import annotations

import threading

import pytest

from pipelearn.schedule import DevicePlan, Key, Op, Resource, build_schedule
from pipelearn.transport.liveness import MARGIN, PeerState, Progress, deadline, progress_marks


def _peer(done: int, over_s: float, backlog_s: float = 0.0) -> PeerState:
    """A peer that began its schedule at t=100 and had done `done` actions by t=100+over_s."""
    peer = PeerState()
    peer.started_at, peer.done, peer.progressed_at, peer.backlog_s = 100.0, done, 100.0 + over_s, backlog_s
    return peer


def test_with_nothing_measured_the_deadline_is_the_floor() -> None:
    limit = deadline(PeerState(), remaining=10, floor_s=2.0)
    assert limit.seconds == 2.0 and limit.expected_s == 0.0 and limit.per_action_s == 0.0
    assert str(limit) == "2 s (timeout_s)"


def test_the_deadline_is_the_margin_times_the_remaining_actions_at_the_peers_pace_plus_its_backlog() -> None:
    limit = deadline(_peer(done=4, over_s=8.0, backlog_s=1.5), remaining=5, floor_s=1.0)
    assert limit.per_action_s == pytest.approx(2.0)
    assert limit.expected_s == pytest.approx(5 * 2.0 + 1.5)
    assert limit.seconds == pytest.approx(MARGIN * 11.5)
    expected = "expected 11.5 s: 5 actions to go x 2.00 s + 1.5 s queued on its link"
    assert str(limit) == f"{MARGIN * 11.5:.1f} s ({MARGIN:g} x {expected})"


def test_the_floor_wins_when_it_is_longer_and_says_what_was_expected() -> None:
    limit = deadline(_peer(done=4, over_s=8.0), remaining=1, floor_s=100.0)
    assert limit.seconds == 100.0
    assert str(limit) == "100 s (timeout_s; expected 2.0 s: 1 actions to go x 2.00 s + 0.0 s queued on its link)"


def test_a_transfer_on_a_slow_link_has_its_backlog_as_its_deadline() -> None:
    limit = deadline(_peer(done=6, over_s=3.0, backlog_s=40.0), remaining=0, floor_s=10.0)
    assert limit.seconds == pytest.approx(MARGIN * 40.0)


def test_heartbeats_only_ever_raise_the_count_and_restart_it_at_the_schedule() -> None:
    peer = PeerState()
    peer.beat(3, 0.5)
    progressed = peer.progressed_at
    peer.beat(2, 0.25)  # a stale count does not lower it, nor count as progress
    assert (peer.done, peer.progressed_at, peer.backlog_s, peer.beats) == (3, progressed, 0.25, 2)
    assert peer.per_action_s() == 0.0  # not started on its schedule yet
    peer.start()
    assert peer.done == 0 and peer.started_at is not None
    peer.beat(1, 0.0)
    assert peer.done == 1 and peer.per_action_s() >= 0.0


def test_progress_counts_from_many_threads() -> None:
    progress = Progress()
    threads = [threading.Thread(target=lambda: [progress.advance() for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert progress.done == 4000


def test_marks_of_an_fl_device_are_its_rounds_ends() -> None:
    schedule = build_schedule("fl", [DevicePlan(40, 0, 1)], 20, 2)
    # each round: load weights, 2 x (train, step), send weights
    assert progress_marks(schedule, 0) == {
        Key(Resource.UPLINK, 0, Op.WEIGHTS, 0): 6,
        Key(Resource.UPLINK, 0, Op.WEIGHTS, 1): 12,
    }


def test_marks_of_a_pipelearn_device_point_at_the_action_that_makes_each_transfer() -> None:
    schedule = build_schedule("pipelearn", [DevicePlan(40, 2, 2), DevicePlan(60, 2, 2)], 20, 1)
    for device in (0, 1):
        lane = schedule.lane(Resource.DEVICE, device)
        marks = progress_marks(schedule, device)
        uplink = schedule.lane(Resource.UPLINK, device)
        assert list(marks) == [a.key for a in uplink]
        for action in uplink:
            assert lane[marks[action.key] - 1].key == action.deps[0]
        assert marks[Key(Resource.UPLINK, device, Op.ACTIVATION, 0, 0, 0)] == 2  # after loading weights, F0
        assert marks[uplink[-1].key] == len(lane)  # the weights go up at the very end
