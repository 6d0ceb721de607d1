"""The closed-form estimate of every device's epoch for every split and micro-batch count, all at once (numpy).

Per device and candidate (split, micro-batch count): the device's epoch on its own (its pipeline's fill, steady
state and drain, its rounds' weights; for one device this is exactly what the simulator gives), the server work it
brings and each resource's busy seconds. How a run is cut into mini-batches and rounds comes from the schedule
(pipelearn.schedule), as the simulator's schedule is built from it.

Where the server and devices share a host's cores (host_cores), their compute is one more shared resource: the
fleet's epoch is at least all their compute over the cores, and each computation is stretched by the sharing. The
estimate stretches the devices' compute by one factor and the server's by another: the cores' share a computation
gets while the other processes compute as often as they do on average over the epoch (a mean field).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelearn.config import RunConfig
from pipelearn.planner.costs import CostModel, WeightCosts, transmit_s
from pipelearn.schedule import epoch_batches, round_count


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
    epochs = config.epochs
    cuts = [epoch_batches(int(n), config.batch_size) for n in fleet.samples]
    rounds = round_count(config.mode, [sum(cut.values()) for cut in cuts], epochs, config.aggregate_every)
    shape = (len(fleet.samples), len(splits), len(counts))
    total = {k: np.zeros(shape) for k in ("time", "server", "device", "uplink", "downlink", "device_cpu", "server_cpu")}
    sizes: dict[int, np.ndarray] = {}  # per mini-batch size, how many of them each device's epoch holds
    for d, cut in enumerate(cuts):
        for b, n in cut.items():
            sizes.setdefault(b, np.zeros(len(cuts)))[d] = n
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
