"""Accounting of a run's timeline: busy and idle seconds, epoch times, losses, the bottleneck, bytes compressed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from pipelearn.events import Event


def busy_seconds(intervals: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Seconds within [start, end] covered by at least one interval (overlaps counted once)."""
    total, reach = 0.0, start
    for lo, hi in sorted((max(lo, start), min(hi, end)) for lo, hi in intervals):
        lo = max(lo, reach)
        if hi > lo:  # an interval wholly outside [start, end] clips to an empty (or inverted) one
            total += hi - lo
            reach = hi
    return total


def track_usage(events: Sequence[Event], track: str, start: float, end: float) -> dict[str, float]:
    """Busy and idle seconds of one track over [start, end]; they add up to end - start."""
    busy = busy_seconds(((e.start, e.end) for e in events if e.track == track), start, end)
    return {"busy_s": busy, "idle_s": (end - start) - busy}


def epoch_times(events: Sequence[Event], start: float, end: float, epochs: int) -> list[float]:
    """Seconds each epoch took: from the end of the one before to its last event (the last epoch: to `end`)."""
    ends = [start] * epochs
    for e in events:
        epoch = e.args.get("epoch")
        if epoch is not None and 0 <= epoch < epochs:
            ends[epoch] = max(ends[epoch], e.end)
    for i in range(1, epochs):
        ends[i] = max(ends[i], ends[i - 1])
    ends[-1] = end
    return [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]


def train_losses(events: Sequence[Event], epochs: int) -> list[float | None]:
    """Mean training loss of each epoch, from the loss recorded with every forward pass that ends in the loss."""
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for e in events:
        if "loss_sum" in e.args:
            sums[e.args["epoch"]] += e.args["loss_sum"]
            counts[e.args["epoch"]] += e.args["samples"]
    return [sums[i] / counts[i] if counts[i] else None for i in range(epochs)]


def bottleneck(events: Sequence[Event], start: float, end: float) -> dict[str, Any]:
    """The busiest resource (a device's compute, uplink or downlink, or the server): no pipeline beats its busy time."""
    busy = {track: track_usage(events, track, start, end)["busy_s"] for track in {e.track for e in events}}
    if not busy:
        return {"resource": None, "busy_s": 0.0}
    track = max(busy, key=lambda t: busy[t])
    return {"resource": track, "busy_s": busy[track]}


def compression_totals(per_device: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Codec, raw and wire tensor bytes of each direction summed over the devices, and raw / wire."""
    totals: dict[str, dict[str, Any]] = {}
    for direction in ("up", "down"):
        flows = [device[direction] for device in per_device]
        raw, wire = sum(f["raw_bytes"] for f in flows), sum(f["wire_bytes"] for f in flows)
        totals[direction] = {
            "codec": flows[0]["codec"],
            "raw_bytes": raw,
            "wire_bytes": wire,
            "ratio": raw / wire if wire else None,
        }
    return totals


def peak_memory(events: Sequence[Event], device: int) -> int | None:
    """The most bytes one device's part held for training at once (activations kept for backward plus stashed
    weight versions), from its `dN.memory` events; None where it reported none."""
    peaks = [int(e.args["peak_bytes"]) for e in events if e.name == f"d{device}.memory"]
    return max(peaks, default=None)
