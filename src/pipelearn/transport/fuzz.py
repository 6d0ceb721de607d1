"""Fuzz what a peer can send: mutate valid messages at random and check that each is either accepted as valid or
refused with WireError (protobuf's DecodeError for an envelope that does not parse), never anything else.

    python -m pipelearn.transport.fuzz --seconds 30            # or --iterations N; --seed S repeats a run

Mutations: bit flips, interesting bytes, truncation, appended and deleted bytes, a rewritten header length, NaN
and Inf written over tensor data, and edits of the safetensors header's JSON (dtype, shape, offsets, entries,
non-object JSON, deep nesting). Inputs that break the rule are written to --out and the command exits with 1.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from google.protobuf.message import DecodeError

from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import TensorSpec, WireError, decode, encode, spec_of
from pipelearn.transport.service import envelope

Decoder = Callable[[bytes, Mapping[str, TensorSpec]], Mapping[str, torch.Tensor]]

_INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, ord("{"), ord("}"), ord('"'), ord("["), ord("-"), ord("9")]
_DTYPES = ["F32", "F64", "F16", "BF16", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "U64", "C64", "", 7, None]
_NUMBERS = [0, 1, -1, 2, 3, 7, 2**31, 2**32 + 1, 2**63, 2**64, -(2**63), 1.5, "3", None, True]


@dataclass
class Report:
    """How many inputs ended each way, and the inputs that broke the rule."""

    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[tuple[bytes, str]] = field(default_factory=list)


def seeds() -> list[tuple[bytes, dict[str, TensorSpec]]]:
    """Valid payloads like those on the wire, each with the spec its receiver expects."""
    gen = torch.Generator().manual_seed(0)
    activation = {"activation": torch.randn(7, 4, 3, 3, generator=gen), "labels": torch.randint(0, 10, (7,))}
    weights = {
        "0.0.weight": torch.randn(4, 1, 3, 3, generator=gen),
        "0.0.bias": torch.randn(4, generator=gen),
        "0.1.running_mean": torch.zeros(4),
        "0.1.num_batches_tracked": torch.tensor(3),
        "2.weight": torch.randn(10, 36, generator=gen).half(),
    }
    gradient = {"gradient": torch.randn(7, 4, 3, 3, generator=gen).double()}
    empty = {"activation": torch.zeros(0, 4, 3, 3), "labels": torch.zeros(0, dtype=torch.int64)}
    flags = {"mask": torch.tensor([True, False, True]), "bytes": torch.arange(5, dtype=torch.uint8)}
    return [(encode(t), spec_of(t)) for t in (activation, weights, gradient, empty, flags)]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation of safetensors bytes."""
    return rng.choice(_MUTATIONS)(bytearray(data), rng)


def _flip(b: bytearray, rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 8)):
        if b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def _interesting(b: bytearray, rng: random.Random) -> bytes:
    if b:
        b[rng.randrange(len(b))] = rng.choice(_INTERESTING)
    return bytes(b)


def _truncate(b: bytearray, rng: random.Random) -> bytes:
    return bytes(b[: rng.randrange(len(b) + 1)])


def _append(b: bytearray, rng: random.Random) -> bytes:
    return bytes(b) + rng.randbytes(rng.choice([1, 4, 8, 64]))


def _delete(b: bytearray, rng: random.Random) -> bytes:
    at = rng.randrange(len(b) + 1)
    return bytes(b[:at] + b[at + rng.randint(1, 16) :])


def _length(b: bytearray, rng: random.Random) -> bytes:
    (size,) = struct.unpack("<Q", b[:8])
    new = rng.choice([0, 1, size - 1, size + 1, size + 8, len(b), 2**20 + 1, 2**63, 2**64 - 1])
    return struct.pack("<Q", max(0, min(new, 2**64 - 1))) + bytes(b[8:])


def _nonfinite(b: bytearray, rng: random.Random) -> bytes:
    (size,) = struct.unpack("<Q", b[:8])
    start = 8 + size
    if len(b) - start >= 4:
        at = start + 4 * rng.randrange((len(b) - start) // 4)
        b[at : at + 4] = struct.pack("<f", rng.choice([float("nan"), float("inf"), float("-inf")]))
    return bytes(b)


def _header(b: bytearray, rng: random.Random) -> bytes:
    (size,) = struct.unpack("<Q", b[:8])
    meta = json.loads(b[8 : 8 + size])
    body = bytes(b[8 + size :])
    names = [n for n in meta if n != "__metadata__"]
    name = rng.choice(names) if names else "x"
    entry = meta.setdefault(name, {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})
    choice = rng.randrange(9)
    if choice == 0:
        entry["dtype"] = rng.choice(_DTYPES)
    elif choice == 1 and isinstance(entry.get("shape"), list):
        shape = entry["shape"]
        if shape and rng.random() < 0.7:
            shape[rng.randrange(len(shape))] = rng.choice(_NUMBERS)
        else:
            shape.append(rng.choice(_NUMBERS))
    elif choice == 2:
        entry["data_offsets"] = [rng.choice(_NUMBERS), rng.choice(_NUMBERS)]
    elif choice == 3:
        entry["shape"] = rng.choice([None, "4", {}, [[1]], []])
    elif choice == 4:
        del meta[name]
    elif choice == 5:
        meta[f"extra{rng.randrange(3)}"] = dict(entry)
    elif choice == 6:
        meta = rng.choice([[], "x", 3, None, [meta]])
    elif choice == 7:
        text = "[" * rng.choice([100, 10_000, 100_000]) + "]" * rng.choice([0, 100])
        return struct.pack("<Q", len(text)) + text.encode() + body
    else:
        meta["__metadata__"] = rng.choice([{"a": "b"}, {"a": 1}, [], "x"])
    text = json.dumps(meta)
    return struct.pack("<Q", len(text)) + text.encode() + body


_MUTATIONS = [_flip, _interesting, _truncate, _append, _delete, _length, _nonfinite, _header, _header]


def check_payload(data: bytes, expected: Mapping[str, TensorSpec], decoder: Decoder = decode) -> str:
    """Decode one payload; 'accepted' or 'refused', or raise AssertionError if the decoder broke the rule."""
    try:
        tensors = decoder(data, expected)
    except WireError:
        return "refused"
    got = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    assert got == dict(expected), f"accepted tensors {got} that differ from the expected {dict(expected)}"
    for name, t in tensors.items():
        assert not t.is_floating_point() or bool(torch.isfinite(t).all()), f"accepted non-finite tensor {name!r}"
    return "accepted"


def check_envelope(data: bytes, expected: Mapping[str, TensorSpec], decoder: Decoder = decode) -> str:
    """Parse one serialized envelope and decode its tensors, as the server does with what a device sends."""
    try:
        message = pb.Envelope.FromString(data)
    except DecodeError:
        return "refused"
    return check_payload(message.tensors, expected, decoder)


def fuzz(
    seconds: float | None = None, iterations: int | None = None, seed: int = 0, decoder: Decoder = decode
) -> Report:
    """Mutate the seeds until the time or the iterations run out; every input's outcome goes in the report."""
    rng = random.Random(seed)
    report = Report()
    corpus = seeds()
    deadline = time.monotonic() + seconds if seconds is not None else None
    done = 0
    while (iterations is None or done < iterations) and (deadline is None or time.monotonic() < deadline):
        data, expected = rng.choice(corpus)
        for _ in range(rng.choice([1, 1, 2, 3])):
            try:
                data = mutate(data, rng)
            except Exception:  # a mutation that needs a well-formed header found none: keep the input as it is
                break
        target = check_payload
        if rng.random() < 0.25:  # the whole envelope, as gRPC hands it over, mutated or not
            data = envelope(pb.ACTIVATION, 1, iteration=0, tensors=data).SerializeToString()
            if rng.random() < 0.5:
                data = _flip(bytearray(data), rng)
            target = check_envelope
        try:
            report.outcomes[target(data, expected, decoder)] += 1
        except Exception as exc:  # anything but a refusal by WireError (or DecodeError) is a finding
            report.outcomes["finding"] += 1
            report.findings.append((data, f"{type(exc).__name__}: {exc}"))
        done += 1
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer from the command line; exit status 1 if any input broke the rule."""
    parser = argparse.ArgumentParser(prog="python -m pipelearn.transport.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="how long to fuzz (default 10 s)")
    parser.add_argument("--iterations", type=int, default=None, help="how many inputs to try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="fuzz-findings", help="where inputs that broke the rule are written")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None or args.iterations is not None else 10.0
    torch.set_num_threads(1)
    report = fuzz(seconds, args.iterations, args.seed)
    total = sum(report.outcomes.values())
    print(f"{total} inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())))
    if report.findings:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for i, (data, why) in enumerate(report.findings[:100]):
            (out / f"finding-{i}.bin").write_bytes(data)
            print(f"finding {i}: {why}", file=sys.stderr)
        print(f"{len(report.findings)} inputs broke the rule; the first are in {out}/", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
