"""A model's profile, as data: per block, forward and backward seconds at several micro-batch sizes, output and
weight bytes; optimizer steps, the codec, FedAvg and the bytes every message adds; the compression codecs' timings.
Saved and loaded as JSON; planner/measure.py makes one on this machine.

Seconds are CPU seconds of the machine that measured them, for both sides. A device's forward, backward and loss
count only their user-space share, which its slowdown multiplies as the runtime emulates it (the kernel's share,
mostly page faults of large fresh tensors, is not slowed there). A profile made elsewhere can give the device and
the server timings of their own (`device` and `server` in the JSON).

Compression is optional: each side's `compression` holds timings per codec (keyed by its setting, e.g. 'int8'),
measured for the codecs a run asks for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from pipelearn.config import ConfigError
from pipelearn.transport.compress import Codec

PROFILE_FORMAT = 1
"""Bumped when the JSON layout changes; other formats are refused."""


class ProfileError(ConfigError):
    """A profile does not fit the run (another model, input shape or batch size) or is malformed."""


@dataclass(frozen=True)
class CodecFit:
    """Seconds to compress and to decompress one float tensor under a codec, safetensors and checks included:
    fixed per tensor, and per byte of the tensor's float32 form."""

    compress_s: float
    compress_s_per_byte: float
    decompress_s: float
    decompress_s_per_byte: float


@dataclass(frozen=True)
class StateTensor:
    """One tensor of a block's state, named as the runtime sends it (block index first, e.g. '1.weight')."""

    name: str
    shape: list[int]
    dtype: str
    """The torch dtype's name, e.g. 'float32'."""


@dataclass(frozen=True)
class Calibration:
    """What a side's compute actions cost in recorded runs against what the profile predicts, fitted as a line:
    an action the profile times at x CPU seconds took factor * x + overhead_s (planner/calibrate.py)."""

    factor: float
    overhead_s: float
    """Fixed CPU seconds of every action beyond its work: the runtime's bookkeeping, its threads' hand-overs."""
    actions: int
    """How many recorded actions it was fitted to."""
    message_s: float = 0.0
    """Seconds of the server's compute each message it receives or sends holds up, beyond the actions' own CPU:
    the transport's threads parse, frame and pace messages holding the interpreter's lock, which the compute then
    waits for. Fitted to the runs' epoch times (planner/calibrate.py); only the server's is fitted and charged (a
    device's stays 0)."""

    def apply(self, seconds: np.ndarray | float) -> np.ndarray:
        """Seconds of actions as the runs would take them (an action of no seconds is none, and stays 0)."""
        seconds = np.asarray(seconds, dtype=np.float64)
        return np.where(seconds > 0, self.factor * seconds + self.overhead_s, 0.0)


@dataclass(frozen=True)
class Timing:
    """Seconds of work on one machine; per-size lists follow Profile.sizes."""

    forward_s: list[list[float]]
    """Per block, per size: the block's forward pass on a micro-batch of that size."""
    backward_s: list[list[float]]
    """Per block, per size: the block's backward pass from its output's gradient."""
    loss_s: list[float]
    """Per size: the cross-entropy loss, forward and backward."""
    step_s: list[float]
    """Per block: an SGD (momentum) step over the block's parameters."""
    codec_s: float
    """Fixed seconds of encoding or decoding one tensor message (safetensors)."""
    codec_s_per_byte: float
    """Seconds per byte of encoding or decoding."""
    wire_s: float
    """Fixed seconds of putting one message on the wire and reading it off (protobuf), outside the link."""
    wire_s_per_byte: float
    """Seconds per byte of that."""
    aggregate_s_per_byte: float
    """FedAvg seconds per byte of one device's model, its check for non-finite values included."""
    compression: dict[str, CodecFit] = field(default_factory=dict)
    """Per compression codec other than none, by its setting ('int8', 'topk:0.1'): its fitted seconds."""
    load_s_per_byte: float | None = None
    """Seconds per byte of loading weights into a model (load_state_dict); None in a profile made before it was
    measured, where the codec's per-byte seconds stand in."""
    calibration: Calibration | None = None
    """How this side's actions compared with these timings in recorded runs (`pipelearn plan --calibrate`); None
    where the timings stand as measured."""


@dataclass(frozen=True)
class Profile:
    """What the planner knows of a model on given hardware."""

    model: str
    """The zoo model's name."""
    blocks: list[str]
    """Each block's type and parameter count, which a run's model must match."""
    input_shape: list[int]
    """The shape of one input sample."""
    sizes: list[int]
    """The micro-batch sizes measured; costs between them are interpolated."""
    input_bytes: int
    """Bytes of one input sample as float32 (the activation at split 0)."""
    output_bytes: list[int]
    """Per block, bytes of one sample's output as float32."""
    weight_bytes: list[int]
    """Per block, bytes of its state (parameters and buffers) as safetensors."""
    activation_overhead_bytes: int
    """Bytes an activation message adds to its tensors (envelope, safetensors header); labels are 8 per sample."""
    gradient_overhead_bytes: int
    """Bytes a gradient message adds to its tensor."""
    device: Timing
    """Seconds on a device before its slowdown."""
    server: Timing
    """Seconds on the server."""
    format: int = PROFILE_FORMAT
    """The JSON layout's version."""
    weight_tensors: list[list[StateTensor]] | None = None
    """Per block, the tensors of its state: what compressed weight sizes are computed from. None in a profile made
    before compression was planned for; measure.py's `with_codecs` fills it in from the model."""

    def check(self, model_name: str, model: nn.Sequential, input_shape: Sequence[int], source: str = "") -> None:
        """Raise ProfileError unless this profile was made for this model (blocks, names) and input shape."""
        blocks = block_names(model)
        if self.model != model_name or self.blocks != blocks or list(self.input_shape) != list(input_shape):
            where = f" {source}" if source else ""
            raise ProfileError(
                f"profile{where} was made for {self.model} ({len(self.blocks)} blocks: {', '.join(self.blocks)}) on "
                f"inputs {_shape(self.input_shape)}; this run has {model_name} ({len(blocks)} blocks: "
                f"{', '.join(blocks)}) on inputs {_shape(input_shape)}: make a profile for this run with "
                "`pipelearn plan --profile-out FILE` and its settings"
            )

    def covers(self, batch_size: int, source: str = "") -> None:
        """Raise ProfileError unless micro-batches of up to `batch_size` samples were measured."""
        if batch_size > max(self.sizes):
            where = f" {source}" if source else ""
            raise ProfileError(
                f"profile{where} measured micro-batches of up to {max(self.sizes)} samples; this run's mini-batches "
                f"hold {batch_size}: profile again with --batch-size {batch_size}"
            )


def block_names(model: nn.Sequential) -> list[str]:
    """Each block's type and parameter count, e.g. 'ConvBlock[320]'."""
    return [f"{type(b).__name__}[{sum(p.numel() for p in b.parameters())}]" for b in model]


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def state_tensors(model: nn.Sequential) -> list[list[StateTensor]]:
    """Per block, the tensors of its state as the runtime names them."""
    return [
        [
            StateTensor(f"{i}.{name}", list(t.shape), str(t.dtype).removeprefix("torch."))
            for name, t in b.state_dict().items()
        ]
        for i, b in enumerate(model)
    ]


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write a profile as JSON."""
    Path(path).write_text(json.dumps(asdict(profile), indent=1) + "\n")


def load_profile(path: str | Path) -> Profile:
    """Read a profile written by save_profile; ProfileError if it is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ProfileError(f"profile file {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ProfileError(f"profile file {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        got = data.get("format") if isinstance(data, dict) else None
        raise ProfileError(f"profile file {path} has format {got!r}; this version reads format {PROFILE_FORMAT}")
    try:
        values = {f.name: data[f.name] for f in fields(Profile) if f.name in data or f.default is MISSING}
        values["device"], values["server"] = _timing(data["device"]), _timing(data["server"])
        if values.get("weight_tensors") is not None:
            values["weight_tensors"] = [[StateTensor(**t) for t in block] for block in values["weight_tensors"]]
        profile = Profile(**values)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ProfileError(f"profile file {path} is malformed: {exc!r}") from exc
    except ValueError as exc:
        raise ProfileError(f"profile file {path} is malformed: its compression timings: {exc}") from exc
    n, sizes = len(profile.blocks), len(profile.sizes)
    if profile.weight_tensors is not None and len(profile.weight_tensors) != n:
        raise ProfileError(f"profile file {path} is malformed: its weight_tensors are not {n} blocks")
    for side in (profile.device, profile.server):
        if not (
            len(profile.output_bytes) == len(profile.weight_bytes) == len(side.step_s) == n
            and len(side.forward_s) == len(side.backward_s) == n
            and all(len(row) == sizes for row in [*side.forward_s, *side.backward_s, side.loss_s])
        ):
            raise ProfileError(f"profile file {path} is malformed: its tables are not all {n} blocks x {sizes} sizes")
    return profile


def _timing(data: dict[str, Any]) -> Timing:
    """A side's timings from JSON; a codec's key must be a setting that parses (ValueError if not)."""
    compression = data.get("compression", {})
    fits = {str(Codec.parse(k)): CodecFit(**v) for k, v in compression.items()}
    calibration = data.get("calibration")
    return Timing(**{**data, "compression": fits, "calibration": calibration and Calibration(**calibration)})
