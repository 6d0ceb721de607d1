"""What each action of a schedule costs, from a profile: seconds of compute, bytes on the wire.

Tables are indexed [split point, micro-batch size] (or [split point]) so the simulator can look up one action and
the search can read whole rows at once. Compute seconds are the profiled machine's, before a device's slowdown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pipelearn.config import Link
from pipelearn.plan import DeviceSetup
from pipelearn.planner.profile import Profile, Timing
from pipelearn.planner.simulate import Cost
from pipelearn.schedule import Action, Op, Resource, Schedule

Table = np.ndarray
"""float64 seconds or bytes, [split] or [split, micro-batch size]."""


class CostModel:
    """Seconds and bytes of every kind of action, by split point and micro-batch size (0..batch_size)."""

    def __init__(self, profile: Profile, batch_size: int, devices: int) -> None:
        profile.covers(batch_size)
        self.blocks = len(profile.blocks)
        self.batch_size = batch_size
        sizes = np.arange(batch_size + 1)
        per_sample = np.array([profile.input_bytes, *profile.output_bytes], dtype=np.float64)
        self.activation_bytes: Table = (
            np.outer(per_sample + 8, sizes) + profile.activation_overhead_bytes
        )  # activation and int64 labels
        self.gradient_bytes: Table = np.outer(per_sample, sizes) + profile.gradient_overhead_bytes
        self.weight_bytes: Table = _prefix(np.array(profile.weight_bytes, dtype=np.float64))
        dev, srv = profile.device, profile.server
        forward, backward = (
            _prefix(_curves(dev.forward_s, profile.sizes, sizes)),
            _prefix(_curves(dev.backward_s, profile.sizes, sizes)),
        )
        self.device_forward: Table = forward + _codec(dev, self.activation_bytes)
        """Forward of blocks 1..p, then the activation encoded."""
        self.device_backward: Table = backward + _codec(dev, self.gradient_bytes)
        """The gradient decoded, then backward of blocks 1..p."""
        self.device_train: np.ndarray = forward[-1] + backward[-1] + _curve(dev.loss_s, profile.sizes, sizes)
        """fl: forward, loss and backward of the whole model, by micro-batch size."""
        self.device_step: Table = _prefix(np.array(dev.step_s))
        self.device_weights: Table = _codec(dev, self.weight_bytes)
        """Encoding (or decoding) the device part's weights."""
        server_work = _suffix(
            _curves(srv.forward_s, profile.sizes, sizes) + _curves(srv.backward_s, profile.sizes, sizes)
        )
        self.server_train: Table = (
            _codec(srv, self.activation_bytes)
            + server_work
            + _curve(srv.loss_s, profile.sizes, sizes)
            + _codec(srv, self.gradient_bytes)
        )
        """The activation decoded, forward, loss and backward of blocks p+1..L, the gradient encoded."""
        self.server_step: Table = _suffix(np.array(srv.step_s))
        self.server_weights: Table = _codec(srv, self.weight_bytes)
        model_bytes = float(self.weight_bytes[-1])
        self.aggregate_s = float(devices * model_bytes * srv.aggregate_s_per_byte + _codec(srv, model_bytes))
        """FedAvg over every device's model, then loading the replicas."""
        self._wire = (srv.wire_s, srv.wire_s_per_byte)

    def wire_s(self, nbytes: np.ndarray | float) -> np.ndarray:
        """Seconds a message of nbytes spends being serialised and parsed, beyond its link."""
        return self._wire[0] + self._wire[1] * np.asarray(nbytes, dtype=np.float64)

    def transfer(self, nbytes: float, mbps: float, latency_ms: float) -> Cost:
        """A message's cost on a link: busy for its bytes at the rate, delivered one latency (and parsing) later."""
        busy = float(transmit_s(nbytes, mbps))
        return Cost(busy, busy + latency_ms / 1e3 + float(self.wire_s(nbytes)))


def transmit_s(nbytes: np.ndarray | float, mbps: np.ndarray | float) -> np.ndarray:
    """Seconds to put nbytes on a link of mbps Mbit/s (0 on an unlimited one, whose rate is inf)."""
    return np.asarray(nbytes, dtype=np.float64) * 8 / (np.asarray(mbps, dtype=np.float64) * 1e6)


def _curve(values: Sequence[float], measured: Sequence[int], sizes: np.ndarray) -> np.ndarray:
    """Seconds at every size, interpolated between the measured ones (flat beyond them); 0 for no samples."""
    out = np.interp(sizes, measured, values)
    out[sizes == 0] = 0.0
    return out


def _curves(rows: Sequence[Sequence[float]], measured: Sequence[int], sizes: np.ndarray) -> np.ndarray:
    return np.array([_curve(r, measured, sizes) for r in rows]).reshape(len(rows), len(sizes))


def _prefix(per_block: np.ndarray) -> np.ndarray:
    """Row p: the sum over blocks 1..p (row 0 is zeros)."""
    zeros = np.zeros((1, *per_block.shape[1:]))
    return np.concatenate([zeros, np.cumsum(per_block, axis=0)])


def _suffix(per_block: np.ndarray) -> np.ndarray:
    """Row p: the sum over blocks p+1..L (row L is zeros)."""
    total = _prefix(per_block)
    return total[-1] - total


def _codec(timing: Timing, nbytes: np.ndarray | float) -> np.ndarray:
    return timing.codec_s + timing.codec_s_per_byte * np.asarray(nbytes, dtype=np.float64)


def action_costs(model: CostModel, schedule: Schedule, setups: Sequence[DeviceSetup]) -> Callable[[Action], Cost]:
    """Each action's cost in a run of these device setups: what the simulator times the schedule with.

    A device action occupies the device for its compute times the slowdown, but hands its message to the link
    when the compute itself ends: the runtime emulates the slowdown by sleeping after the action's work. Device and
    server actions compute for their profiled seconds (cpu_s), which stretch where processes share a host's cores.
    """

    def cost(action: Action) -> Cost:
        key = action.key
        if key.resource is Resource.SERVER:
            seconds = _server_seconds(model, key.op, setups[key.device].split if key.device >= 0 else 0, size(action))
            return Cost(seconds, seconds, seconds)
        setup = setups[key.device]
        if key.resource is Resource.DEVICE:
            seconds = _device_seconds(model, key.op, setup.split, size(action))
            return Cost(seconds * setup.slowdown, seconds, seconds)
        nbytes = _bytes(model, key.op, setup.split, size(action))
        return model.transfer(nbytes, *_direction(setup.link, key.resource))

    def size(action: Action) -> int:
        key = action.key
        return schedule.microbatch_sizes(key.device, key.iteration)[key.microbatch] if key.iteration >= 0 else 0

    return cost


def _device_seconds(model: CostModel, op: Op, split: int, n: int) -> float:
    match op:
        case Op.FORWARD:
            return float(model.device_forward[split, n])
        case Op.BACKWARD:
            return float(model.device_backward[split, n])
        case Op.TRAIN:
            return float(model.device_train[n])
        case Op.STEP:
            return float(model.device_step[split])
        case Op.SEND_WEIGHTS:
            return float(model.device_weights[split])
        case Op.LOAD_WEIGHTS:
            return float(2 * model.device_weights[split])  # decoded, then copied into the model
    raise ValueError(f"a device does not {op!r}")


def _server_seconds(model: CostModel, op: Op, split: int, n: int) -> float:
    match op:
        case Op.TRAIN:
            return float(model.server_train[split, n])
        case Op.STEP:
            return float(model.server_step[split])
        case Op.SEND_WEIGHTS | Op.LOAD_WEIGHTS:
            return float(model.server_weights[split])
        case Op.AGGREGATE:
            return model.aggregate_s
    raise ValueError(f"the server does not {op!r}")


def _bytes(model: CostModel, op: Op, split: int, n: int) -> float:
    if op is Op.ACTIVATION:
        return float(model.activation_bytes[split, n])
    if op is Op.GRADIENT:
        return float(model.gradient_bytes[split, n])
    return float(model.weight_bytes[split])


def _direction(link: Link, resource: Resource) -> tuple[float, float]:
    return (link.up_mbps if resource is Resource.UPLINK else link.down_mbps), link.latency_ms
