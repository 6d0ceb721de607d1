"""Accuracy over time: the per-round records of a run, its training loss per round and its time to a target."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelearn.events import Event


@dataclass
class RoundRecord:
    """What one aggregation round left: when its global model existed, how it trained and how well it classifies."""

    round: int
    """The round's index, from 0."""
    time_s: float
    """Seconds from the start of training to the end of the round's aggregation."""
    train_loss: float | None
    """Mean training loss over the round's mini-batches (None where no loss was recorded)."""
    test_accuracy: float | None = None
    """Accuracy of the round's global model (None for a round that was not evaluated)."""
    eval_s: float = 0.0
    """Seconds the evaluation took, beside training."""
    epsilon: float | None = None
    """The most privacy any device had spent by the round's end (epsilon at the run's dp_delta); None without DP."""


def round_losses(events: Iterable[Event], round_of: Mapping[str, int]) -> dict[int, float]:
    """Mean training loss of each round, from the loss_sum and samples of the events whose names `round_of` knows."""
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for e in events:
        if "loss_sum" in e.args and e.name in round_of:
            r = round_of[e.name]
            sums[r] += e.args["loss_sum"]
            counts[r] += e.args["samples"]
    return {r: sums[r] / counts[r] for r in sums if counts[r]}


def time_to_accuracy(records: Sequence[RoundRecord], target: float) -> RoundRecord | None:
    """The earliest round whose global model reached `target` accuracy or more; None if none did."""
    reached = [r for r in records if r.test_accuracy is not None and r.test_accuracy >= target]
    return min(reached, key=lambda r: r.round) if reached else None


def best_accuracy(metrics: Mapping[str, Any]) -> float | None:
    """The highest accuracy a run's global model reached: over its evaluated rounds and its final model."""
    values = [r["test_accuracy"] for r in metrics.get("rounds", []) if r.get("test_accuracy") is not None]
    if metrics.get("test_accuracy") is not None:
        values.append(metrics["test_accuracy"])
    return max(values) if values else None


def time_to_accuracy_table(runs: Sequence[Mapping[str, Any]], target: float, labels: Sequence[str] = ()) -> str:
    """A markdown table: per run, the time and round at which it first reached `target`, and its best accuracy."""
    rows = [
        f"| run | time to {target:.2%} (s) | round | rounds run | training time (s) | best accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for i, metrics in enumerate(runs):
        label = labels[i] if i < len(labels) else str(metrics.get("mode", i))
        records = [RoundRecord(**r) for r in metrics.get("rounds", [])]
        hit = time_to_accuracy(records, target)
        best = best_accuracy(metrics)
        rows.append(
            f"| {label} | {f'{hit.time_s:.1f}' if hit else 'not reached'} | {hit.round if hit else '-'} | "
            f"{len(records)} | {metrics.get('train_time_s', 0.0):.1f} | {f'{best:.2%}' if best is not None else '-'} |"
        )
    return "\n".join(rows)
