"""Profile a model: per block, forward and backward seconds at several micro-batch sizes, output and weight bytes;
optimizer steps, the codec, FedAvg and the bytes every message adds; the compression codecs a run asks for.
Saved and loaded as JSON.

Seconds are measured on this machine, once, for both sides, in CPU seconds. A device's forward, backward and loss
count only their user-space share, which its slowdown multiplies as the runtime emulates it (the kernel's share,
mostly page faults of large fresh tensors, is not slowed there). A profile made elsewhere can give the device and
the server timings of their own (`device` and `server` in the JSON).

Compression is optional: each side's `compression` holds timings per codec (keyed by its setting, e.g. 'int8'),
measured for the codecs a run asks for (`with_codecs` adds those a loaded profile lacks, on this machine).
"""

from __future__ import annotations

import copy
import functools
import json
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelearn.config import ConfigError
from pipelearn.schedule import Key, Op, Resource
from pipelearn.training import fedavg, scaled_loss
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import check_finite, decode, encode
from pipelearn.transport.compress import Codec, time_codec
from pipelearn.transport.service import transfer

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
    before compression was planned for; `with_codecs` fills it in from the model."""

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


def profile_sizes(batch_size: int) -> list[int]:
    """Micro-batch sizes to measure: powers of two from 2 below the mini-batch, and the mini-batch itself.

    Size 1 is left out: BatchNorm cannot train on one sample where a feature map is 1x1.
    """
    sizes = {batch_size}
    size = 2
    while size < batch_size:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def profile_model(
    model_name: str,
    model: nn.Sequential,
    input_shape: tuple[int, int, int],
    batch_size: int,
    *,
    codecs: Sequence[Codec | str] = (),
    repeats: int = 5,
    budget_s: float = 0.3,
) -> Profile:
    """Measure a copy of `model` in training mode (the model itself is left untouched), and the `codecs`.

    Every time is the least of a few runs (at most `repeats`, fewer once a size has taken `budget_s`), measured
    in CPU seconds with one torch thread (see _clock): other processes can only ever add to a measurement.
    """
    model = copy.deepcopy(model).train()
    blocks = list(model)
    sizes = profile_sizes(batch_size)
    with torch.no_grad():
        outputs = _output_shapes(blocks, input_shape)
    classes = outputs[-1][0] if outputs else 1
    for _ in range(2):  # warm-up: first calls allocate, pick kernels and build lazily made state
        _pass(blocks, input_shape, classes, min(2, batch_size))
    forward: list[list[float]] = [[] for _ in blocks]
    backward: list[list[float]] = [[] for _ in blocks]
    loss: list[float] = []
    user: list[float] = []
    for n in sizes:
        before = _user_and_system()
        runs = _repeat(functools.partial(_pass, blocks, input_shape, classes, n), repeats, budget_s)
        user.append(_user_share(before, _user_and_system()))
        for i in range(len(blocks)):
            forward[i].append(min(r[0][i] for r in runs))
            backward[i].append(min(r[1][i] for r in runs))
        loss.append(min(r[2] for r in runs))
    codec = _fit(lambda nbytes: _codec_seconds(nbytes), repeats)
    wire = _fit(lambda nbytes: _wire_seconds(nbytes), repeats)
    state = model.state_dict()
    model_bytes = len(encode(state))
    aggregate, load = _aggregate_seconds(model, repeats)
    timing = Timing(
        forward_s=forward,
        backward_s=backward,
        loss_s=loss,
        step_s=[_step_seconds(b, repeats) for b in blocks],
        codec_s=codec[0],
        codec_s_per_byte=codec[1],
        wire_s=wire[0],
        wire_s_per_byte=wire[1],
        aggregate_s_per_byte=aggregate / (2 * model_bytes),
        load_s_per_byte=load / model_bytes,
    )
    per_sample = [4 * _numel(s) for s in outputs]
    first = per_sample[0] if per_sample else 4 * _numel(input_shape)
    first_shape = outputs[0] if outputs else tuple(input_shape)
    profile = Profile(
        model=model_name,
        blocks=block_names(model),
        input_shape=list(input_shape),
        sizes=sizes,
        input_bytes=4 * _numel(input_shape),
        output_bytes=per_sample,
        weight_bytes=[len(encode(b.state_dict())) if b.state_dict() else 0 for b in blocks],
        activation_overhead_bytes=_message_bytes(
            {"activation": torch.zeros(batch_size, *first_shape), "labels": torch.zeros(batch_size, dtype=torch.int64)}
        )
        - batch_size * (first + 8),
        gradient_overhead_bytes=_message_bytes({"gradient": torch.zeros(batch_size, *first_shape)})
        - batch_size * first,
        device=replace(
            timing,
            forward_s=[[t * u for t, u in zip(row, user, strict=True)] for row in forward],
            backward_s=[[t * u for t, u in zip(row, user, strict=True)] for row in backward],
            loss_s=[t * u for t, u in zip(loss, user, strict=True)],
        ),
        server=timing,
        weight_tensors=state_tensors(model),
    )
    return with_codecs(profile, model, codecs, repeats=repeats)


def state_tensors(model: nn.Sequential) -> list[list[StateTensor]]:
    """Per block, the tensors of its state as the runtime names them."""
    return [
        [
            StateTensor(f"{i}.{name}", list(t.shape), str(t.dtype).removeprefix("torch."))
            for name, t in b.state_dict().items()
        ]
        for i, b in enumerate(model)
    ]


def with_codecs(profile: Profile, model: nn.Sequential, codecs: Sequence[Codec | str], *, repeats: int = 5) -> Profile:
    """The profile with what compression under `codecs` needs: the model's state tensors, and each codec's
    timings, measured on this machine (for both sides) where the profile lacks them."""
    missing = sorted(
        {str(c) for c in map(Codec.parse, codecs) if c.name != "none"}
        - (profile.device.compression.keys() & profile.server.compression.keys())
    )
    if not missing and profile.weight_tensors is not None:
        return profile
    fits = {name: _codec_fit(Codec.parse(name), repeats) for name in missing}
    return replace(
        profile,
        weight_tensors=profile.weight_tensors if profile.weight_tensors is not None else state_tensors(model),
        device=replace(profile.device, compression={**fits, **profile.device.compression}),
        server=replace(profile.server, compression={**fits, **profile.server.compression}),
    )


def _numel(shape: Sequence[int]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _output_shapes(blocks: list[nn.Module], input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    x = torch.zeros(2, *input_shape)
    shapes = []
    for block in blocks:
        x = block(x)
        shapes.append(tuple(x.shape[1:]))
    return shapes


def _pass(
    blocks: list[nn.Module], input_shape: tuple[int, ...], classes: int, n: int
) -> tuple[list[float], list[float], float]:
    """One training pass, block by block: each block's forward and backward seconds, and the loss's."""
    x = torch.randn(n, *input_shape)
    y = torch.randint(0, classes, (n,))
    inputs, outputs, forward = [], [], []
    h = x
    for i, block in enumerate(blocks):
        inp = h.detach().requires_grad_(i > 0)  # a device's input needs no gradient; every later one does
        start = _clock()
        h = block(inp)
        forward.append(_clock() - start)
        inputs.append(inp)
        outputs.append(h)
    logits = h.detach().requires_grad_()
    start = _clock()
    scaled_loss(logits, y, n).backward()
    loss = _clock() - start
    gradient = logits.grad
    backward = [0.0] * len(blocks)
    for i in reversed(range(len(blocks))):
        start = _clock()
        if outputs[i].requires_grad:
            outputs[i].backward(gradient)
        backward[i] = _clock() - start
        gradient = inputs[i].grad if inputs[i].grad is not None else torch.zeros_like(inputs[i])
    for block in blocks:
        block.zero_grad(set_to_none=True)
    return forward, backward, loss


def _clock() -> float:
    """This thread's CPU seconds where torch computes on this thread alone, else wall seconds.

    CPU time leaves out the time other processes hold the cores, which on a busy machine swamps small timings.
    """
    return time.thread_time() if torch.get_num_threads() == 1 else time.perf_counter()


def _user_and_system() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime, usage.ru_stime


def _user_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The share of this thread's CPU time between two readings spent in user space (1 where torch uses more
    threads, or none was spent).

    A device's emulated slowdown multiplies its work's CPU time by such a share (runtime/device.py): the kernel's
    part, mostly page faults of large fresh tensors, is not slowed. The kernel splits a thread's time into user and
    system at its clock ticks, so the share is read over all the passes of one size rather than per block.
    """
    user, system = after[0] - before[0], after[1] - before[1]
    if torch.get_num_threads() != 1 or user + system <= 0:
        return 1.0
    return user / (user + system)


def _repeat(run: Callable[[], Any], repeats: int, budget_s: float) -> list[Any]:
    """At most `repeats` runs, fewer once `budget_s` is spent (always one)."""
    results: list[Any] = []
    start = time.perf_counter()
    while len(results) < repeats and (not results or time.perf_counter() - start < budget_s):
        results.append(run())
    return results


def _time(run: Callable[[], Any]) -> float:
    start = _clock()
    run()
    return _clock() - start


def _step_seconds(block: nn.Module, repeats: int) -> float:
    """An SGD (momentum) step over the block's parameters and the gradients' release, as the runtime takes it."""
    params = [p for p in block.parameters() if p.requires_grad]
    if not params:
        return 0.0
    optimizer = torch.optim.SGD(params, lr=1e-9, momentum=0.9)

    def step() -> float:
        for p in params:
            p.grad = torch.zeros_like(p)
        return _time(lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True)))

    step()  # the first step makes the momentum buffers
    return min(step() for _ in range(repeats))


def _aggregate_seconds(model: nn.Module, repeats: int) -> tuple[float, float]:
    """Seconds of the server's FedAvg of two copies of the model as the runtime does it (each checked for
    non-finite values, then averaged), and of loading the result into the model."""
    states = [{k: v.clone() for k, v in model.state_dict().items()} for _ in range(2)]

    def average() -> dict[str, torch.Tensor]:
        for state in states:
            check_finite(state, "a device's model")
        return fedavg(states, [1.0, 1.0])

    average()  # warm-up
    aggregate = min(_time(average) for _ in range(repeats))
    averaged = average()
    load = min(_time(lambda: model.load_state_dict(averaged)) for _ in range(repeats))
    return aggregate, load


def _codec_seconds(nbytes: int) -> float:
    """Mean seconds of one encode or decode of a float32 tensor of about nbytes."""
    tensor = torch.zeros(max(nbytes // 4, 1))
    data = encode({"t": tensor})
    return (_time(lambda: encode({"t": tensor})) + _time(lambda: decode(data))) / 2


def _wire_seconds(nbytes: int) -> float:
    """Seconds to serialise a message of about nbytes and parse it back."""
    message = transfer(Key(Resource.UPLINK, 0, Op.ACTIVATION, 0, 0, 0), bytes(nbytes))
    return _time(lambda: pb.Envelope.FromString(message.SerializeToString()))


_SMALL, _LARGE = 1 << 10, 4 << 20
"""The message sizes, in bytes, that fitted lines go through."""


def _fit(measure: Callable[[int], float], repeats: int) -> tuple[float, float]:
    """A straight line (fixed seconds, seconds per byte) through the least of a few runs at 1 kB and 4 MB."""
    measure(_LARGE)  # warm-up
    a = min(measure(_SMALL) for _ in range(repeats))
    b = min(measure(_LARGE) for _ in range(repeats))
    return _line(a, b)


def _line(small_s: float, large_s: float) -> tuple[float, float]:
    per_byte = max(large_s - small_s, 0.0) / (_LARGE - _SMALL)
    return max(small_s - _SMALL * per_byte, 0.0), per_byte


def _codec_fit(codec: Codec, repeats: int) -> CodecFit:
    """Straight lines through a codec's median times on float32 tensors of 1 kB and 4 MB."""
    time_codec(codec, (_LARGE // 4,), repeats=1, clock=_clock)  # warm-up
    small, large = (time_codec(codec, (n // 4,), repeats=repeats, clock=_clock) for n in (_SMALL, _LARGE))
    compress = _line(small.compress_s, large.compress_s)
    decompress = _line(small.decompress_s, large.decompress_s)
    return CodecFit(*compress, *decompress)


def _message_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return transfer(Key(Resource.UPLINK, 0, Op.ACTIVATION, 0, 0, 0), encode(tensors)).ByteSize()


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
