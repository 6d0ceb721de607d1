"""Per-round records: training loss per round, time to a target accuracy, best accuracy and the table of them."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from pipelearn.events import Event
from pipelearn.metrics.rounds import (
    RoundRecord,
    best_accuracy,
    round_losses,
    time_to_accuracy,
    time_to_accuracy_table,
)


def _records(*accuracies: float | None) -> list[RoundRecord]:
    return [RoundRecord(r, 10.0 * (r + 1), 1.0, a) for r, a in enumerate(accuracies)]


def test_time_to_accuracy_is_the_first_round_at_or_above_the_target():
    records = _records(0.2, 0.5, 0.7, 0.6, 0.9)
    hit = time_to_accuracy(records, 0.7)
    assert hit is not None and (hit.round, hit.time_s) == (2, 30.0)
    # exactly at the target counts; a later dip does not move it
    assert time_to_accuracy(records, 0.5) == records[1]
    assert time_to_accuracy(records, 0.65) == records[2]
    assert time_to_accuracy(records, 0.0) == records[0]


def test_time_to_accuracy_skips_rounds_not_evaluated_and_may_never_come():
    records = _records(None, 0.4, None, 0.8)
    assert time_to_accuracy(records, 0.5) == records[3]
    assert time_to_accuracy(records, 0.9) is None
    assert time_to_accuracy([], 0.1) is None
    # records given out of order: still the earliest round
    assert time_to_accuracy(list(reversed(records)), 0.3) == records[1]


def test_round_losses_average_each_rounds_recorded_losses_by_samples():
    round_of = {"a": 0, "b": 0, "c": 1}
    events = [
        Event("server/compute", "a", 0, 1, {"loss_sum": 4.0, "samples": 2}),
        Event("device0/compute", "b", 0, 1, {"loss_sum": 2.0, "samples": 2}),
        Event("server/compute", "c", 0, 1, {"loss_sum": 3.0, "samples": 3}),
        Event("server/compute", "c", 0, 1, {}),  # not a loss
        Event("server/compute", "z", 0, 1, {"loss_sum": 99.0, "samples": 1}),  # not in the schedule's rounds
    ]
    assert round_losses(events, round_of) == {0: pytest.approx(1.5), 1: pytest.approx(1.0)}


def test_best_accuracy_and_the_table():
    fast = {
        "mode": "pipelearn",
        "train_time_s": 40.0,
        "test_accuracy": 0.8,
        "rounds": [asdict(r) for r in _records(0.5, 0.85, 0.8)],
    }
    slow = {"mode": "sfl", "train_time_s": 90.0, "test_accuracy": 0.6, "rounds": [asdict(r) for r in _records(0.6)]}
    assert best_accuracy(fast) == 0.85
    assert best_accuracy({"test_accuracy": 0.3}) == 0.3
    assert best_accuracy({}) is None
    table = time_to_accuracy_table([fast, slow], 0.8).splitlines()
    assert table[0].startswith("| run | time to 80.00% (s) |")
    assert table[2] == "| pipelearn | 20.0 | 1 | 3 | 40.0 | 85.00% |"
    assert table[3] == "| sfl | not reached | - | 1 | 90.0 | 60.00% |"
