"""Candidate plans for the whole fleet, and how they are judged.

Candidates come from three families over the closed-form estimate: the fleet optimum's neighbours (the min-max
threshold sweep), devices trading their own time against the server work they bring, and every device alike. Where
their schedules are small enough, the best are timed by the simulator over the run's real schedule, which sees the
server's queue, and polished by simulated local moves; else they are ranked by the estimate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from pipelearn.config import RunConfig
from pipelearn.plan import RunPlan, fixed_setups
from pipelearn.planner.costs import CostModel
from pipelearn.planner.estimate import Estimate
from pipelearn.planner.minmax import PlanError, sweep, within
from pipelearn.planner.predict import run_simulation
from pipelearn.schedule import epoch_batches

TOP = 5
"""Plans kept from each family (the fleet optimum's neighbours, the best uniform plans) as candidates."""
SIMULATED_ACTIONS = 30_000
"""Candidates are simulated while their schedules hold at most this many actions in all; else estimated."""


@dataclass(frozen=True)
class Candidate:
    """One plan for the whole fleet and its predicted epoch."""

    splits: tuple[int, ...]
    microbatches: tuple[int, ...]
    epoch_s: float
    """Predicted mean epoch time."""
    busy_s: dict[str, float]
    """Predicted busy seconds per epoch: 'server', and the mean over devices of 'device', 'uplink', 'downlink'."""
    bound_s: float
    """Predicted busy seconds per epoch of the busiest single resource."""
    simulated: bool
    """Timed by the simulator (else the closed-form estimate)."""

    def idle_s(self) -> dict[str, float]:
        """Predicted idle seconds per epoch, by resource kind."""
        return {k: self.epoch_s - v for k, v in self.busy_s.items()}


LEANINGS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
"""Weights of a device's server work against its own time in the plans that trade one for the other."""


def candidate_choices(est: Estimate, allowed: np.ndarray) -> list[np.ndarray]:
    """Candidate plans, one flat (split, count) index per device, best estimate first (ties: least device time).

    Three families: the neighbours of the fleet optimum (`minimise`), each device trading its own time against
    the server work it brings (from selfish to frugal), and every device on the same (split, count).
    """
    devices = len(allowed)
    time = np.where(allowed, est.time.reshape(devices, -1), np.inf)
    server = est.server.reshape(devices, -1)
    if est.host_cores:  # the cores are shared too: each device's share of the busier of the two
        compute = (est.device_cpu + est.server_cpu).reshape(devices, -1)
        server = np.maximum(server, compute / est.host_cores)
    uniform = np.flatnonzero(allowed.all(axis=0))
    if est.sequential:  # sl: one split for all, and devices take turns, so their times add up
        if not len(uniform):
            raise PlanError("sl needs one split for every device, and no split is allowed for all of them")
        totals = time[:, uniform].sum(axis=0)
        return [np.full(devices, c) for c in uniform[np.argsort(totals, kind="stable")[:TOP]]]
    thresholds, values = sweep(time, server)
    picked = [within(time, server, float(t)) for t in thresholds[np.argsort(values, kind="stable")[: 4 * TOP]]]
    picked += [np.argmin(time + lean * server, axis=1) for lean in LEANINGS]
    if len(uniform):
        fleet = np.maximum(time[:, uniform].max(axis=0), server[:, uniform].sum(axis=0))
        picked += [np.full(devices, c) for c in uniform[np.argsort(fleet, kind="stable")[:TOP]]]
    rows = np.arange(devices)
    scored = {
        tuple(c.tolist()): (max(time[rows, c].max(), server[rows, c].sum()), time[rows, c].mean()) for c in picked
    }
    ranked = sorted(scored, key=lambda c: scored[c])
    return [np.array(c) for c in ranked[: 2 * TOP]]


TIE = 1e-3
"""Predicted epochs this close (relative) count as equal."""


def _ranked(candidates: list[Candidate]) -> list[Candidate]:
    """Best first: the shortest predicted epoch; among equals, the one that busies the server and devices least."""
    best = min(c.epoch_s for c in candidates)

    def key(c: Candidate) -> tuple[float, float]:
        work = c.busy_s["server"] + c.busy_s["device"]
        return (best, work) if c.epoch_s <= best * (1 + TIE) else (c.epoch_s, work)

    return sorted(candidates, key=key)


class Judge:
    """Judges candidate plans: by simulation where the schedules are small enough, else by the estimate."""

    def __init__(
        self, config: RunConfig, costs: CostModel, est: Estimate, allowed: np.ndarray, samples: list[int]
    ) -> None:
        if config.aggregate_every is None:  # every epoch is one round of the same mini-batches: time one
            config = dataclasses.replace(config, epochs=1)
        self.config, self.costs, self.est, self.allowed, self.samples = config, costs, est, allowed, samples
        self.iterations = [sum(epoch_batches(n, config.batch_size).values()) * config.epochs for n in samples]
        self.shape = (len(est.splits), len(est.counts))
        self.budget = SIMULATED_ACTIONS
        self.seen: dict[tuple[int, ...], Candidate] = {}

    def rank(self, choices: list[np.ndarray]) -> list[Candidate]:
        """The candidates, best first: as many as the budget allows simulated (best estimates first) and the best
        of those polished by simulated local moves; only where none fits, all estimated."""
        for c in choices:
            cost = self._actions(c)
            if cost <= self.budget:
                self.budget -= cost
                self.seen[tuple(c.tolist())] = self._simulated(c)
        if not self.seen:
            return _ranked([self._estimated(c) for c in choices])
        self._polish(min(self.seen, key=lambda c: self.seen[c].epoch_s))
        return _ranked(list(self.seen.values()))[: 2 * TOP]

    def _polish(self, current: tuple[int, ...]) -> None:
        """Hill-climb by simulation: move one device's (or every device's) split or count a step while it helps."""
        while True:
            for move in self._moves(current):
                key = tuple(move.tolist())
                if key in self.seen:
                    continue
                cost = self._actions(move)
                if cost > self.budget:
                    return
                self.budget -= cost
                self.seen[key] = self._simulated(move)
                if self.seen[key].epoch_s < self.seen[current].epoch_s:
                    current = key
                    break
            else:
                return

    def _moves(self, current: tuple[int, ...]) -> list[np.ndarray]:
        splits, counts = np.unravel_index(np.array(current), self.shape)
        devices = len(current)
        out = []
        alone = [] if self.est.sequential else [np.array([d]) for d in range(devices)]  # sl: one split for all
        for who in [np.arange(devices), *alone][: devices + (devices > 1)]:
            for ds, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                s, c = splits.copy(), counts.copy()
                s[who] += ds
                c[who] += dc
                if (s >= 0).all() and (s < self.shape[0]).all() and (c >= 0).all() and (c < self.shape[1]).all():
                    move = np.ravel_multi_index((s, c), self.shape)
                    if self.allowed[np.arange(devices), move].all():
                        out.append(move)
        return out

    def _actions(self, choice: np.ndarray) -> int:
        """About how many actions the run's schedule holds under this plan."""
        counts = self.est.counts[np.unravel_index(choice, self.shape)[1]]
        return sum(i * (6 * int(c) + 4) for i, c in zip(self.iterations, counts, strict=True))

    def _values(self, choice: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        ii, jj = np.unravel_index(choice, self.shape)
        return tuple(int(self.est.splits[i]) for i in ii), tuple(int(self.est.counts[j]) for j in jj)

    def _estimated(self, choice: np.ndarray) -> Candidate:
        epoch, busy, bound = self.est.fleet(*np.unravel_index(choice, self.shape))
        return Candidate(*self._values(choice), epoch, busy, bound, simulated=False)

    def _simulated(self, choice: np.ndarray) -> Candidate:
        splits, counts = self._values(choice)
        plan = RunPlan(fixed_setups(self.config, list(splits), list(counts)), host_cores=self.est.host_cores)
        sim = run_simulation(self.config, plan, self.costs, self.samples)
        times = sim.epoch_times_s()
        busy = sim.busy_by_kind()
        return Candidate(splits, counts, sum(times) / len(times), busy, sim.bound_s() / sim.epochs, simulated=True)
