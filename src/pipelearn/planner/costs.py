"""What each action of a schedule costs, from a profile: seconds of compute, bytes on the wire, under the run's
compression.

Tables are indexed [split point, micro-batch size] (or [split point]) so the simulator can look up one action and
the search can read whole rows at once. Compute seconds are the profiled machine's, before a device's slowdown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipelearn.config import Link, RunConfig
from pipelearn.plan import DeviceSetup
from pipelearn.planner.profile import Profile, ProfileError, Timing
from pipelearn.planner.simulate import Cost
from pipelearn.schedule import Action, Key, Op, Resource, Schedule
from pipelearn.transport.channel import weight_codec
from pipelearn.transport.codec import TensorSpec
from pipelearn.transport.compress import Codec, payload_bytes, wire_forms

Table = np.ndarray
"""float64 seconds or bytes, [split] or [split, micro-batch size]."""


class CostModel:
    """Seconds and bytes of every kind of action, by split point and micro-batch size (0..batch_size).

    `up` and `down` are the run's compression codecs (RunConfig.codec), as the runtime's channels apply them: up
    to what devices send (activations and labels, weights), down to what the server sends (gradients, weights).
    Bytes are those on the wire; a codec's seconds to compress and decompress are added to the compute of the
    side that does them. Each compute table holds one action's seconds per entry, as a side's calibration (if
    its profile has one) says the runs take them.
    """

    def __init__(
        self,
        profile: Profile,
        batch_size: int,
        devices: int,
        *,
        up: Codec | str = "none",
        down: Codec | str = "none",
    ) -> None:
        profile.covers(batch_size)
        self.up, self.down = Codec.parse(up), Codec.parse(down)
        self.blocks = len(profile.blocks)
        self.batch_size = batch_size
        sizes = np.arange(batch_size + 1)
        per_sample = np.array([profile.input_bytes, *profile.output_bytes], dtype=np.float64)
        floats: Table = np.outer(per_sample, sizes)  # the activation (and its gradient) as float32
        self.activation_bytes: Table = (
            floats + 8 * sizes + profile.activation_overhead_bytes + _compressed(self.up, "activation", floats)
        )  # activation and int64 labels
        self.gradient_bytes: Table = (
            floats + profile.gradient_overhead_bytes + _compressed(self.down, "gradient", floats)
        )
        self.weight_bytes: Table = _prefix(np.array(profile.weight_bytes, dtype=np.float64))
        """The device part's state uncompressed (safetensors), as the server holds it."""
        dev, srv = profile.device, profile.server
        on_device, on_server = _calibrated(dev), _calibrated(srv)
        forward, backward = (
            _prefix(_curves(dev.forward_s, profile.sizes, sizes)),
            _prefix(_curves(dev.backward_s, profile.sizes, sizes)),
        )
        self.device_forward: Table = on_device(forward + _coding(dev, self.up, floats, self.activation_bytes)[0])
        """Forward of blocks 1..p, then the activation compressed and encoded."""
        self.device_backward: Table = on_device(backward + _coding(dev, self.down, floats, self.gradient_bytes)[1])
        """The gradient decoded and decompressed, then backward of blocks 1..p."""
        self.device_train: np.ndarray = on_device(forward[-1] + backward[-1] + _curve(dev.loss_s, profile.sizes, sizes))
        """fl: forward, loss and backward of the whole model, by micro-batch size."""
        self.device_step: Table = on_device(_prefix(np.array(dev.step_s)))
        server_work = _suffix(
            _curves(srv.forward_s, profile.sizes, sizes) + _curves(srv.backward_s, profile.sizes, sizes)
        )
        self.server_train: Table = on_server(
            _coding(srv, self.up, floats, self.activation_bytes)[1]
            + server_work
            + _curve(srv.loss_s, profile.sizes, sizes)
            + _coding(srv, self.down, floats, self.gradient_bytes)[0]
        ) + np.where(sizes > 0, _messages(srv, self.activation_bytes) + _messages(srv, self.gradient_bytes), 0.0)
        """The activation decoded, forward, loss and backward of blocks p+1..L, the gradient encoded; and what the
        two messages' transport holds up the server's compute, as calibrated."""
        self.server_step: Table = on_server(_suffix(np.array(srv.step_s)))
        self.weights = _weight_costs(profile, self.up, self.down)
        """A round's weights, both ways (after the first round)."""
        self.first_weights = _weight_costs(profile, weight_codec(self.up, True), weight_codec(self.down, True))
        """The first round's weights (which top-k sends whole)."""
        model_bytes = float(self.weight_bytes[-1])
        self.aggregate_s = float(
            on_server(devices * (model_bytes * srv.aggregate_s_per_byte + _load(srv, model_bytes)))
        )
        """FedAvg over every device's model, then loading each device's server replica (at most the whole model)."""
        self._wire = (srv.wire_s, srv.wire_s_per_byte)

    @classmethod
    def for_run(cls, profile: Profile, config: RunConfig) -> CostModel:
        """The cost model of a run: its batch size, devices and compression."""
        return cls(profile, config.batch_size, config.devices, up=config.codec("up"), down=config.codec("down"))

    def round_weights(self, round_: int) -> WeightCosts:
        """The weights of one round."""
        return self.first_weights if round_ == 0 else self.weights

    def wire_s(self, nbytes: np.ndarray | float) -> np.ndarray:
        """Seconds a message of nbytes spends being serialised and parsed, beyond its link."""
        return self._wire[0] + self._wire[1] * np.asarray(nbytes, dtype=np.float64)

    def transfer(self, nbytes: float, mbps: float, latency_ms: float) -> Cost:
        """A message's cost on a link: busy for its bytes at the rate, delivered one latency (and parsing) later."""
        busy = float(transmit_s(nbytes, mbps))
        return Cost(busy, busy + latency_ms / 1e3 + float(self.wire_s(nbytes)))


@dataclass(frozen=True)
class WeightCosts:
    """One round's weights, by split: bytes each way, and seconds of each side's part in sending and loading them."""

    up_bytes: Table
    """The device part's state as a device sends it."""
    down_bytes: Table
    """The device part's state as the server sends it."""
    device_send: Table
    """Compressing and encoding it (and rebuilding the reference, for error feedback)."""
    device_load: Table
    """Decoding and decompressing it, then copying it into the model."""
    server_send: Table
    server_load: Table


def _weight_costs(profile: Profile, up: Codec, down: Codec) -> WeightCosts:
    """What weights cost under these codecs; under one that compresses, the profile's state tensors give the sizes."""
    dev, srv = profile.device, profile.server
    raw = _prefix(np.array(profile.weight_bytes, dtype=np.float64))
    compressing = [c for c in (up, down) if c.name != "none"]
    blocks = range(len(profile.blocks))
    states = [_state_specs(profile, compressing[0], b) if compressing else {} for b in blocks]
    floating = [[math.prod(s) for s, d in state.values() if d.is_floating_point] for state in states]
    floats = _prefix(np.array([4 * sum(f) for f in floating], dtype=np.float64))  # what codecs compress, as float32
    tensors = _prefix(np.array([len(f) for f in floating], dtype=np.float64))
    every = profile.weight_tensors or [[]] * len(blocks)  # a profile too old to list them: one fixed cost a message
    messages = np.maximum(_prefix(np.array([len(b) for b in every], dtype=np.float64)), 1.0)
    messages[0] = 0.0  # at split 0 a device sends no weights

    def sized(codec: Codec) -> Table:
        if codec.name == "none":
            return raw
        extra = [
            payload_bytes(wire_forms(dict.fromkeys(state, codec), state)) - payload_bytes(state) if state else 0
            for state in states
        ]
        return raw + _prefix(np.array(extra, dtype=np.float64))

    def coding(timing: Timing, codec: Codec) -> tuple[Table, Table]:  # safetensors' fixed cost is per tensor
        return _coding(timing, codec, floats, raw, tensors if codec.name != "none" else messages)

    def send(timing: Timing, codec: Codec) -> Table:  # with error feedback, the sender decompresses what it sent
        encode, decode = coding(timing, codec)
        return encode if codec.name == "none" else encode + decode

    on_device, on_server = _calibrated(dev), _calibrated(srv)
    return WeightCosts(
        up_bytes=sized(up),
        down_bytes=sized(down),
        device_send=on_device(send(dev, up)),
        device_load=on_device(coding(dev, down)[1] + _load(dev, raw)),
        server_send=on_server(send(srv, down)) + _messages(srv, sized(down)),
        server_load=on_server(coding(srv, up)[1]) + _messages(srv, sized(up)),
    )


def _calibrated(timing: Timing) -> Callable[[np.ndarray | float], np.ndarray]:
    """Seconds of actions on a side as its calibration says runs take them (as profiled where it has none)."""
    if timing.calibration is None:
        return lambda seconds: np.asarray(seconds, dtype=np.float64)
    return timing.calibration.apply


def _messages(timing: Timing, nbytes: Table) -> Table:
    """Seconds of a side's compute that messages of nbytes (none where 0) hold up, as calibrated (0 where not)."""
    held = timing.calibration.message_s if timing.calibration is not None else 0.0
    return np.where(nbytes > 0, held, 0.0)


def _state_specs(profile: Profile, codec: Codec, block: int) -> dict[str, TensorSpec]:
    if profile.weight_tensors is None:
        raise ProfileError(
            f"the profile lists no weight tensors, which compression ({codec}) needs: make it again with "
            "`pipelearn plan --profile-out FILE`"
        )
    return {t.name: (tuple(t.shape), _dtype(t.dtype)) for t in profile.weight_tensors[block]}


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ProfileError(f"the profile names a weight tensor's dtype {name!r}, which torch does not have")
    return dtype


def _compressed(codec: Codec, name: str, floats: Table) -> Table:
    """Bytes a codec adds to (or, negative, takes from) the safetensors of a float32 tensor `name` of `floats`
    bytes per [split, micro-batch size] (a message's labels, if any, go as they are): data and header."""
    out = np.zeros_like(floats)
    if codec.name == "none":
        return out
    for (split, n), nbytes in np.ndenumerate(floats):
        if n:
            specs = {name: ((n, int(nbytes) // 4 // n), torch.float32)}
            out[split, n] = payload_bytes(wire_forms({name: codec}, specs)) - payload_bytes(specs)
    return out


def _coding(
    timing: Timing, codec: Codec, floats: Table, wire: Table, tensors: Table | float = 1.0
) -> tuple[Table, Table]:
    """Seconds to send (compress, encode) and to receive (decode, decompress) tensors of `floats` float32 bytes
    in all (`tensors` of them), whose message is `wire` bytes uncompressed."""
    if codec.name == "none":
        seconds = _codec(timing, wire, tensors)
        return seconds, seconds
    fit = timing.compression.get(str(codec))
    if fit is None:
        raise ProfileError(
            f"the profile has no timings of compression {codec}: profile with it (`pipelearn plan --compress "
            f"{codec} --profile-out FILE`), or plan with the model at hand, which measures it"
        )
    return (
        fit.compress_s * tensors + fit.compress_s_per_byte * floats,
        fit.decompress_s * tensors + fit.decompress_s_per_byte * floats,
    )


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


def _load(timing: Timing, nbytes: np.ndarray | float) -> np.ndarray:
    """Seconds to load weights of nbytes into a model (a profile too old to have measured it: the codec's)."""
    if timing.load_s_per_byte is None:
        return _codec(timing, nbytes)
    return timing.load_s_per_byte * np.asarray(nbytes, dtype=np.float64)


def _codec(timing: Timing, nbytes: np.ndarray | float, tensors: np.ndarray | float = 1.0) -> np.ndarray:
    return timing.codec_s * np.asarray(tensors) + timing.codec_s_per_byte * np.asarray(nbytes, dtype=np.float64)


def action_costs(model: CostModel, schedule: Schedule, setups: Sequence[DeviceSetup]) -> Callable[[Action], Cost]:
    """Each action's cost in a run of these device setups (their slowdowns and links; each round's split is the
    schedule's): what the simulator times the schedule with.

    A device action occupies the device for its compute times the slowdown, but hands its message to the link
    when the compute itself ends: the runtime emulates the slowdown by sleeping after the action's work. Device and
    server actions compute for their profiled seconds (cpu_s), which stretch where processes share a host's cores.
    """

    def cost(action: Action) -> Cost:
        key = action.key
        split = schedule.setup(key.device, key.round).split if key.device >= 0 else 0
        if key.resource is Resource.SERVER:
            seconds = _server_seconds(model, key, split, size(action))
            return Cost(seconds, seconds, seconds)
        setup = setups[key.device]
        if key.resource is Resource.DEVICE:
            seconds = _device_seconds(model, key, split, size(action))
            return Cost(seconds * setup.slowdown, seconds, seconds)
        nbytes = _bytes(model, key, split, size(action))
        return model.transfer(nbytes, *_direction(setup.link, key.resource))

    def size(action: Action) -> int:
        key = action.key
        return schedule.microbatch_sizes(key.device, key.iteration)[key.microbatch] if key.iteration >= 0 else 0

    return cost


def _device_seconds(model: CostModel, key: Key, split: int, n: int) -> float:
    match key.op:
        case Op.FORWARD:
            return float(model.device_forward[split, n])
        case Op.BACKWARD:
            return float(model.device_backward[split, n])
        case Op.TRAIN:
            return float(model.device_train[n])
        case Op.STEP:
            return float(model.device_step[split])
        case Op.SEND_WEIGHTS:
            return float(model.round_weights(key.round).device_send[split])
        case Op.LOAD_WEIGHTS:
            return float(model.round_weights(key.round).device_load[split])
    raise ValueError(f"a device does not {key.op!r}")


def _server_seconds(model: CostModel, key: Key, split: int, n: int) -> float:
    match key.op:
        case Op.TRAIN:
            return float(model.server_train[split, n])
        case Op.STEP:
            return float(model.server_step[split])
        case Op.SEND_WEIGHTS:
            return float(model.round_weights(key.round).server_send[split])
        case Op.LOAD_WEIGHTS:
            return float(model.round_weights(key.round).server_load[split])
        case Op.AGGREGATE:
            return model.aggregate_s
    raise ValueError(f"the server does not {key.op!r}")


def _bytes(model: CostModel, key: Key, split: int, n: int) -> float:
    if key.op is Op.ACTIVATION:
        return float(model.activation_bytes[split, n])
    if key.op is Op.GRADIENT:
        return float(model.gradient_bytes[split, n])
    weights = model.round_weights(key.round)
    return float((weights.up_bytes if key.resource is Resource.UPLINK else weights.down_bytes)[split])


def _direction(link: Link, resource: Resource) -> tuple[float, float]:
    return (link.up_mbps if resource is Resource.UPLINK else link.down_mbps), link.latency_ms
