"""Choose each device's split point and micro-batch count for the shortest predicted epoch of the whole fleet.

Every candidate (split, micro-batch count) of every device is first estimated in closed form, all at once
(numpy): the device's epoch on its own (its pipeline's fill, steady state and drain, its rounds' weights; for one
device this is exactly what the simulator gives) and the server work it brings. The fleet's epoch is estimated as
the longer of its slowest device and the shared server's total work; `minimise` finds the exact optimum of that
over all devices' choices in O(D K log DK). Candidate plans come from three families (that optimum's neighbours,
devices trading their own time against server work, every device alike); for small fleets the best are timed by
the simulator over the run's real schedule, which sees the server's queue, and polished by simulated local moves.

Where the server and devices share a host's cores (host_cores), their compute is one more shared resource: the
fleet's epoch is at least all their compute over the cores, and each computation is stretched by the sharing. The
estimate stretches the devices' compute by one factor and the server's by another: the cores' share a computation
gets while the other processes compute as often as they do on average over the epoch (a mean field), found as a
fixed point with the plan it leads to.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from pipelearn.config import ConfigError, RunConfig
from pipelearn.data.dealing import expected_samples
from pipelearn.models import canonical_model_name
from pipelearn.plan import RunPlan, fixed_setups, host_cores, requested, schedule_for
from pipelearn.planner.costs import CostModel, WeightCosts, action_costs, transmit_s
from pipelearn.planner.measure import profile_model, with_codecs
from pipelearn.planner.profile import Profile
from pipelearn.planner.simulate import Simulation, simulate

MAX_MICROBATCHES = 32
"""The most micro-batches per mini-batch the search considers (each of at least 2 samples)."""
TOP = 5
"""Plans kept from each family (the fleet optimum's neighbours, the best uniform plans) as candidates."""
SIMULATED_ACTIONS = 30_000
"""Candidates are simulated while their schedules hold at most this many actions in all; else estimated."""


class PlanError(ConfigError):
    """The search cannot serve this fleet; the message says why."""


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


@dataclass(frozen=True)
class Planned:
    """The chosen plan, and the candidates it was chosen from (best first; the first is the choice)."""

    plan: RunPlan
    candidates: list[Candidate]
    profile: Profile
    samples: list[int]
    """Each device's training samples, which the plan was made for."""


@dataclass(frozen=True)
class Fleet:
    """The devices as the estimate needs them, one array entry per device."""

    slowdown: np.ndarray
    up_mbps: np.ndarray
    down_mbps: np.ndarray
    latency_s: np.ndarray
    samples: np.ndarray

    @classmethod
    def of(cls, config: RunConfig, samples: Sequence[int]) -> Fleet:
        """The fleet of a run configuration with these sample counts."""
        links = [config.link(d) for d in range(config.devices)]
        return cls(
            np.array([config.slowdown(d) for d in range(config.devices)], dtype=np.float64),
            np.array([link.up_mbps for link in links], dtype=np.float64),
            np.array([link.down_mbps for link in links], dtype=np.float64),
            np.array([link.latency_ms / 1e3 for link in links], dtype=np.float64),
            np.array(samples, dtype=np.int64),
        )


Stretch = tuple[float, float]
"""How many times their compute seconds the devices' and the server's computations last (1 where unshared)."""


@dataclass(frozen=True)
class Estimate:
    """Closed-form predictions per device d, split index i and micro-batch count index j, per epoch."""

    splits: np.ndarray
    counts: np.ndarray
    time: np.ndarray
    """[d, i, j] the device's epoch on its own."""
    server: np.ndarray
    """[d, i, j] server busy seconds spent on the device."""
    device: np.ndarray
    uplink: np.ndarray
    downlink: np.ndarray
    device_cpu: np.ndarray
    """[d, i, j] seconds of the device's compute, before its slowdown or any sharing of cores."""
    server_cpu: np.ndarray
    """[d, i, j] seconds of the server's compute for the device, before any sharing of cores."""
    aggregate_s: float
    """Server seconds of FedAvg per epoch, after every device's round."""
    aggregate_cpu_s: float
    """Seconds of compute of that FedAvg, before any sharing of cores."""
    sequential: bool
    """Devices train in turn (sl), so their times add up."""
    host_cores: float | None = None
    """The cores the server and devices share; None where each computes on hardware of its own."""
    stretch: Stretch = (1.0, 1.0)
    """How many times their compute seconds the devices' and the server's computations last, sharing host_cores."""

    def fleet(self, i: np.ndarray, j: np.ndarray) -> tuple[float, dict[str, float], float]:
        """The fleet's epoch, mean busy seconds by resource kind, and the busiest resource, for choices (i, j)."""
        d = np.arange(len(i))
        time = self.time[d, i, j]
        server = float(self.server[d, i, j].sum()) + self.aggregate_s
        shared = self.host_s(i, j) / self.host_cores if self.host_cores else 0.0  # all compute over the cores
        epoch = float(time.sum()) if self.sequential else max(float(time.max()), server, shared) + self.aggregate_s
        parts = {k: getattr(self, k)[d, i, j] for k in ("device", "uplink", "downlink")}
        busy = {"server": server, **{k: float(v.mean()) for k, v in parts.items()}}
        bound = max(server, shared, *(float(v.max()) for v in parts.values()))
        return epoch, busy, bound

    def host_s(self, i: np.ndarray, j: np.ndarray) -> float:
        """Seconds of compute per epoch of the whole fleet for choices (i, j), before any sharing of cores."""
        d = np.arange(len(i))
        return float(self.device_cpu[d, i, j].sum() + self.server_cpu[d, i, j].sum()) + self.aggregate_cpu_s

    def shared_stretch(self, i: np.ndarray, j: np.ndarray) -> Stretch:
        """The stretch of the devices' and the server's compute that choices (i, j) lead to on host_cores (none
        without): a computation shares the cores with the mean number of other processes computing beside it, each
        computing its compute's share of the epoch, and gets at most one core."""
        if not self.host_cores:
            return (1.0, 1.0)
        d = np.arange(len(i))
        epoch = self.fleet(i, j)[0]
        devices = float(self.device_cpu[d, i, j].sum()) / epoch  # mean number of device processes computing
        server = (float(self.server_cpu[d, i, j].sum()) + self.aggregate_cpu_s) / epoch
        beside_device = devices * (1 - 1 / len(d)) + server
        return (max(1.0, (1 + beside_device) / self.host_cores), max(1.0, (1 + devices) / self.host_cores))


def estimate(
    costs: CostModel,
    fleet: Fleet,
    config: RunConfig,
    splits: np.ndarray,
    counts: np.ndarray,
    host_cores: float | None = None,
    stretch: Stretch = (1.0, 1.0),
) -> Estimate:
    """Predict every device's epoch for every split and micro-batch count, in closed form; with host_cores, the
    devices' and the server's computations last `stretch` times their compute seconds (a device's slowdown absorbs
    its stretch up to the slowdown)."""
    batch, epochs = config.batch_size, config.epochs
    full, rest = fleet.samples // batch, fleet.samples % batch
    iterations = (full + (rest > 0)) * epochs
    if config.mode == "sl" or config.aggregate_every is None:
        rounds = epochs
    else:
        rounds = int(max(math.ceil(int(n) / config.aggregate_every) for n in iterations))
    shape = (len(fleet.samples), len(splits), len(counts))
    total = {k: np.zeros(shape) for k in ("time", "server", "device", "uplink", "downlink", "device_cpu", "server_cpu")}
    sizes = {batch: full.astype(np.float64)}
    for r in sorted(set(rest.tolist()) - {0}):
        sizes[r] = sizes.get(r, 0) + (rest == r).astype(np.float64)
    f = stretch if host_cores else (1.0, 1.0)
    for b, per_device in sizes.items():
        for k, v in _iteration(costs, fleet, config.mode, b, splits, counts, f).items():
            total[k] += per_device[:, None, None] * v
    first = _round(costs, fleet, splits, costs.first_weights, f)
    later = _round(costs, fleet, splits, costs.weights, f)
    for k, v in later.items():
        total[k] = total[k] * epochs + first[k] + (rounds - 1) * v
    per_epoch = {k: v / epochs for k, v in total.items()}
    aggregate = 0.0 if config.mode == "sl" else rounds * costs.aggregate_s / epochs
    return Estimate(
        splits,
        counts,
        aggregate_s=f[1] * aggregate,
        aggregate_cpu_s=aggregate,
        sequential=config.mode == "sl",
        host_cores=host_cores,
        stretch=f,
        **per_epoch,
    )


def _iteration(
    m: CostModel, fleet: Fleet, mode: str, b: int, splits: np.ndarray, counts: np.ndarray, f: Stretch = (1.0, 1.0)
) -> dict[str, np.ndarray]:
    """One mini-batch of b samples: seconds of the device's iteration and of each resource's work, each
    computation stretched by f (a device's at least its slowdown times its compute), and seconds of compute."""
    k = np.maximum(fleet.slowdown[:, None, None], f[0])
    if mode == "fl":
        cpu = (m.device_train[b] + m.device_step[m.blocks]) * np.ones((1, len(splits), len(counts)))
        work = k * cpu
        zero = np.zeros_like(work)
        return {
            "time": work,
            "server": zero,
            "device": work,
            "uplink": zero,
            "downlink": zero,
            "device_cpu": cpu,
            "server_cpu": zero,
        }
    n = np.minimum(counts, b)
    q, extra = b // n, b % n

    def mean(table: np.ndarray) -> np.ndarray:  # per micro-batch, over the mini-batch's uneven cut: [1, i, j]
        rows = table[splits]
        return ((extra * rows[:, np.minimum(q + 1, m.batch_size)] + (n - extra) * rows[:, q]) / n)[None]

    up, down = fleet.up_mbps[:, None, None], fleet.down_mbps[:, None, None]
    latency = fleet.latency_s[:, None, None]
    activation, gradient = mean(m.activation_bytes), mean(m.gradient_bytes)
    computed, computed_back, served = mean(m.device_forward), mean(m.device_backward), mean(m.server_train)
    handed = f[0] * computed  # the activation leaves when the compute ends, before the emulated slowdown
    forward, backward, server = k * computed, k * computed_back, f[1] * served
    uplink, downlink = transmit_s(activation, up), transmit_s(gradient, down)
    first = handed + uplink + latency + m.wire_s(activation) + server + downlink + latency + m.wire_s(gradient)
    slowest = np.maximum(np.maximum(forward, uplink), np.maximum(server, downlink))
    count = n[None, None, :]
    # Micro-batches flow through forward, uplink, server and downlink like jobs through a flow shop: the last
    # gradient arrives (count - 1) slowest stages after the first; backward passes start after every forward.
    backwards_end = np.maximum(
        count * (forward + backward),
        np.maximum(first + count * backward, first + (count - 1) * slowest + backward),
    )
    step = m.device_step[splits][None, :, None]
    server_step = m.server_step[splits][None, :, None]
    return {
        "time": backwards_end + k * step,
        "server": count * server + f[1] * server_step,
        "device": count * (forward + backward) + k * step,
        "uplink": count * uplink,
        "downlink": count * downlink,
        "device_cpu": count * (computed + computed_back) + step,
        "server_cpu": count * served + server_step,
    }


def _round(
    m: CostModel, fleet: Fleet, splits: np.ndarray, w: WeightCosts, f: Stretch = (1.0, 1.0)
) -> dict[str, np.ndarray]:
    """A round's weights: down to the device at its start, up to the server at its end."""
    k = np.maximum(fleet.slowdown[:, None, None], f[0])
    up, down = fleet.up_mbps[:, None, None], fleet.down_mbps[:, None, None]
    latency = fleet.latency_s[:, None, None]
    up_bytes, down_bytes = w.up_bytes[splits][None, :, None], w.down_bytes[splits][None, :, None]
    server = (w.server_send + w.server_load)[splits][None, :, None]
    send, load = w.device_send[splits][None, :, None], w.device_load[splits][None, :, None]
    to_device, to_server = transmit_s(down_bytes, down), transmit_s(up_bytes, up)
    delay = 2 * latency + m.wire_s(down_bytes) + m.wire_s(up_bytes)
    time = f[1] * server + to_device + to_server + delay + k * load + f[0] * send
    return {
        "time": time,
        "server": f[1] * server,
        "device": k * (load + send),
        "uplink": to_server,
        "downlink": to_device,
        "device_cpu": (load + send) * np.ones_like(k),
        "server_cpu": server * np.ones_like(k),
    }


def minimise(time: np.ndarray, server: np.ndarray) -> tuple[np.ndarray, float]:
    """The choice per device (a column of each row) minimising max(max_d time[d, c_d], sum_d server[d, c_d]).

    Infinite times mark choices not allowed. Exact: for each threshold on the slowest device, every device takes
    its least server work within it; the thresholds worth trying are the candidates' own times.
    """
    thresholds, values = _sweep(time, server)
    best = int(np.argmin(values))
    return _within(time, server, thresholds[best]), float(values[best])


def _sweep(time: np.ndarray, server: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _within(time: np.ndarray, server: np.ndarray, threshold: float) -> np.ndarray:
    """Per device, the choice of least server work (then least time) among those within the threshold."""
    masked = np.where(time <= threshold, server, np.inf)
    least = masked.min(axis=1, keepdims=True)
    return np.where(masked == least, time, np.inf).argmin(axis=1)


def plan_run(
    config: RunConfig,
    model: nn.Sequential,
    input_shape: tuple[int, int, int],
    profile: Profile | None = None,
    samples: Sequence[int] | None = None,
) -> Planned:
    """Profile (unless given a profile), search and choose the run's plan; every `auto` gets a value."""
    asked = requested(config, len(model))
    name = canonical_model_name(config.model)
    codecs = (config.codec("up"), config.codec("down"))
    if profile is None:
        profile = profile_model(name, model, input_shape, config.batch_size, codecs=codecs)
    profile.check(name, model, input_shape)
    profile = with_codecs(profile, model, codecs)
    costs = CostModel.for_run(profile, config)
    samples = list(samples) if samples is not None else expected_samples(config)
    if min(samples) < 1:
        raise PlanError(
            f"device {samples.index(min(samples))} would hold no training samples ({config.devices} devices): "
            "use fewer devices or set samples_per_device"
        )
    # the planner keeps at least one block on every device, so raw data never leaves it; a config may still ask 0
    fixed = {s for s, _ in asked if s is not None}
    splits = np.array([len(model)] if config.mode == "fl" else sorted(set(range(1, len(model) + 1)) | fixed))
    most = 1 if config.mode != "pipelearn" else max(1, min(MAX_MICROBATCHES, config.batch_size // 2))
    counts = np.array(sorted(set(range(1, most + 1)) | {n for _, n in asked if n is not None}))
    allowed = np.ones((config.devices, len(splits), len(counts)), dtype=bool)
    for d, (s, n) in enumerate(asked):
        if s is not None:
            allowed[d] &= (splits == s)[:, None]
        if n is not None:
            allowed[d] &= (counts == n)[None, :]
    cores = host_cores(config)
    est = _contended(costs, Fleet.of(config, samples), config, splits, counts, cores, allowed)
    search = _Search(config, costs, est, allowed.reshape(config.devices, -1), samples)
    candidates = search.judge(_choices(est, search.allowed))
    best = candidates[0]
    plan = RunPlan(
        fixed_setups(config, list(best.splits), list(best.microbatches)),
        predicted_epoch_s=best.epoch_s,
        bound_s=best.bound_s,
        host_cores=cores,
    )
    return Planned(plan, candidates, profile, samples)


STRETCH_ROUNDS = 8
"""Most rounds of the fixed point between the estimate's stretch of compute and the plan it leads to."""


def _contended(
    costs: CostModel,
    fleet: Fleet,
    config: RunConfig,
    splits: np.ndarray,
    counts: np.ndarray,
    cores: float | None,
    allowed: np.ndarray,
) -> Estimate:
    """The estimate at the stretch of compute that its own best plan leads to on `cores` (none without cores).

    A longer stretch gives longer epochs, and so fewer processes computing at once and a shorter stretch: the
    stretch that reproduces itself lies between; each round moves halfway to what the last one implies. It lies
    within 1 and 1 + 1 / cores, as the epoch is never shorter than all compute over the cores.
    """
    est = estimate(costs, fleet, config, splits, counts, cores)
    if cores is None:
        return est
    flat = allowed.reshape(len(allowed), -1)
    for _ in range(STRETCH_ROUNDS):
        choice = np.unravel_index(_choices(est, flat)[0], (len(splits), len(counts)))
        implied = est.shared_stretch(*choice)
        if all(abs(a - b) <= 1e-3 * b for a, b in zip(implied, est.stretch, strict=True)):
            break
        stretch = ((est.stretch[0] + implied[0]) / 2, (est.stretch[1] + implied[1]) / 2)
        est = estimate(costs, fleet, config, splits, counts, cores, stretch)
    return est


LEANINGS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
"""Weights of a device's server work against its own time in the plans that trade one for the other."""


def _choices(est: Estimate, allowed: np.ndarray) -> list[np.ndarray]:
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
    thresholds, values = _sweep(time, server)
    picked = [_within(time, server, float(t)) for t in thresholds[np.argsort(values, kind="stable")[: 4 * TOP]]]
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


class _Search:
    """Judges candidate plans: by simulation where the schedules are small enough, else by the estimate."""

    def __init__(
        self, config: RunConfig, costs: CostModel, est: Estimate, allowed: np.ndarray, samples: list[int]
    ) -> None:
        if config.aggregate_every is None:  # every epoch is one round of the same mini-batches: time one
            config = dataclasses.replace(config, epochs=1)
        self.config, self.costs, self.est, self.allowed, self.samples = config, costs, est, allowed, samples
        self.shape = (len(est.splits), len(est.counts))
        self.budget = SIMULATED_ACTIONS
        self.seen: dict[tuple[int, ...], Candidate] = {}

    def judge(self, choices: list[np.ndarray]) -> list[Candidate]:
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
        per_epoch = [-(-n // self.config.batch_size) for n in self.samples]
        return sum(self.config.epochs * i * (6 * int(c) + 4) for i, c in zip(per_epoch, counts, strict=True))

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
        busy = busy_by_kind(sim.busy_s(), sim.epochs)
        return Candidate(splits, counts, sum(times) / len(times), busy, sim.bound_s() / sim.epochs, simulated=True)


def busy_by_kind(busy: dict[str, float], epochs: int) -> dict[str, float]:
    """Busy seconds per epoch of the server, and the mean over devices of their compute, uplinks and downlinks."""
    kinds: dict[str, list[float]] = {"server": [], "device": [], "uplink": [], "downlink": []}
    for track, seconds in busy.items():
        owner, what = track.split("/")
        kinds["server" if owner == "server" else "device" if what == "compute" else what].append(seconds)
    return {k: (sum(v) / len(v) if v else 0.0) / epochs for k, v in kinds.items()}


def run_simulation(config: RunConfig, plan: RunPlan, costs: CostModel, samples: list[int]) -> Simulation:
    """Simulate the schedule the runtime would execute for this configuration, plan and sample counts (the plan's
    host_cores shared by their compute)."""
    schedule = schedule_for(config, plan, samples)
    return simulate(schedule, action_costs(costs, schedule, plan.devices), plan.host_cores)
