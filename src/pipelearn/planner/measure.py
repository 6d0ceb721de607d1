"""Measure a model's profile on this machine: per block, forward and backward seconds at several micro-batch
sizes, output and weight bytes; optimizer steps, the codec, FedAvg and the bytes every message adds; the compression
codecs a run asks for (`with_codecs` adds those a loaded profile lacks).

Seconds are measured once, for both sides, in CPU seconds. A device's forward, backward and loss count only their
user-space share, which its slowdown multiplies as the runtime emulates it.
"""

from __future__ import annotations

import copy
import functools
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from pipelearn.planner.profile import CodecFit, Profile, Timing, block_names, state_tensors
from pipelearn.schedule import Key, Op, Resource
from pipelearn.training import fedavg, scaled_loss
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import check_finite, decode, encode
from pipelearn.transport.compress import Codec, time_codec
from pipelearn.transport.service import transfer


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
