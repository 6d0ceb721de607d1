"""The exact min-max optimiser behind the search: one choice per device minimising the longer of the slowest
device's time and the shared server's total work, over all devices' choices at once, in O(D K log DK)."""

from __future__ import annotations

import numpy as np

from pipelearn.config import ConfigError


class PlanError(ConfigError):
    """The search cannot serve this fleet; the message says why."""


def minimise(time: np.ndarray, server: np.ndarray) -> tuple[np.ndarray, float]:
    """The choice per device (a column of each row) minimising max(max_d time[d, c_d], sum_d server[d, c_d]).

    Infinite times mark choices not allowed. Exact: for each threshold on the slowest device, every device takes
    its least server work within it; the thresholds worth trying are the candidates' own times.
    """
    thresholds, values = sweep(time, server)
    best = int(np.argmin(values))
    return within(time, server, thresholds[best]), float(values[best])


def sweep(time: np.ndarray, server: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every threshold worth trying and the fleet value there."""
    if not np.isfinite(time).any(axis=1).all():
        bad = int(np.flatnonzero(~np.isfinite(time).any(axis=1))[0])
        raise PlanError(f"device {bad} has no split and micro-batch count the search may choose")
    order = np.argsort(time, axis=1, kind="stable")
    t = np.take_along_axis(time, order, axis=1)
    least = np.minimum.accumulate(np.take_along_axis(server, order, axis=1), axis=1)
    floor = float(t[:, 0].max())  # below it some device has no choice at all
    at_floor = (t <= floor).sum(axis=1) - 1
    base = float(least[np.arange(len(t)), at_floor].sum())
    later = (t > floor) & np.isfinite(t)
    later[:, 0] = False
    steps = np.diff(least, axis=1, prepend=least[:, :1])  # how much a device's least work drops at each time
    when, drop = t[later], steps[later]
    by_time = np.argsort(when, kind="stable")
    thresholds = np.concatenate([[floor], when[by_time]])
    work = base + np.concatenate([[0.0], np.cumsum(drop[by_time])])
    return thresholds, np.maximum(thresholds, work)


def within(time: np.ndarray, server: np.ndarray, threshold: float) -> np.ndarray:
    """Per device, the choice of least server work (then least time) among those within the threshold."""
    masked = np.where(time <= threshold, server, np.inf)
    least = masked.min(axis=1, keepdims=True)
    return np.where(masked == least, time, np.inf).argmin(axis=1)
