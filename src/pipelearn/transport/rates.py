"""Link rates that change during a run: the transmit-time arithmetic of the user-space shaper."""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

from pipelearn.config import Direction, Link, RateSteps, RunConfig
from pipelearn.transport.link import LinkSpec


@dataclass(frozen=True)
class RateSchedule:
    """A link's bit rate as steps over time: (seconds from `origin`, bits per second), the first step at 0 s.

    Before the first step (control messages before training starts) the first rate applies.
    """

    steps: tuple[tuple[float, float], ...]
    origin: float = 0.0
    """The clock reading at which the schedule's second 0 falls (the start of training)."""

    def __post_init__(self) -> None:
        times = [t for t, _ in self.steps]
        if not self.steps or times[0] != 0 or any(a >= b for a, b in itertools.pairwise(times)):
            raise ValueError(f"rate steps must start at 0 s and rise: {self.steps}")
        if any(not rate > 0 for _, rate in self.steps):
            raise ValueError(f"rates must be above 0: {self.steps}")

    @classmethod
    def from_mbps(cls, steps: RateSteps, origin: float = 0.0) -> RateSchedule:
        """A schedule from (seconds, Mbit/s) steps."""
        return cls(tuple((t, mbps * 1e6) for t, mbps in steps), origin)

    def rate_at(self, clock: float) -> float:
        """Bits per second at a clock reading."""
        return self.steps[self._step(clock - self.origin)][1]

    def finish(self, clock: float, nbytes: int) -> float:
        """The clock reading at which nbytes put on the wire from `clock` on have left, across rate changes."""
        bits = nbytes * 8.0
        t = clock - self.origin
        i = self._step(t)
        while True:
            rate = self.steps[i][1]
            if math.isinf(rate):
                return self.origin + t
            until = self.steps[i + 1][0] if i + 1 < len(self.steps) else math.inf
            if bits <= rate * (until - t):
                return self.origin + t + bits / rate
            bits -= rate * (until - t)
            t, i = until, i + 1

    def _step(self, t: float) -> int:
        return max(bisect.bisect_right([s for s, _ in self.steps], t) - 1, 0)


def link_spec(
    config: RunConfig, device: int, direction: Direction, origin: float, link: Link | None = None
) -> LinkSpec:
    """The user-space link of one device's uplink or downlink, its rate schedule counted from `origin`.

    `link` is the device's network as the run plan resolved it (the config's by default): its latency, and its rate
    where the rate does not change. With `netns` the kernel paces the bytes: the link then adds only the latency.
    """
    link = link or config.link(device)
    latency_s = link.latency_ms / 1e3
    if config.netns:
        return LinkSpec(math.inf, latency_s, kernel_paced=True)
    steps = config.rates(device, direction)
    if len(steps) == 1:
        return LinkSpec((link.up_mbps if direction == "up" else link.down_mbps) * 1e6, latency_s)
    return LinkSpec(steps[0][1] * 1e6, latency_s, schedule=RateSchedule.from_mbps(steps, origin))
