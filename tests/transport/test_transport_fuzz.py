"""Tests for the decoder's fuzzer: the real decoder survives it, and it catches decoders that break the rule."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Mapping

import pytest
import torch

from pipelearn.transport.codec import TensorSpec, decode
from pipelearn.transport.fuzz import fuzz, main, mutate, seeds


def test_the_decoder_accepts_or_refuses_every_mutated_input() -> None:
    report = fuzz(iterations=3000, seed=1)
    assert report.findings == []
    assert report.outcomes["refused"] > 1000 and report.outcomes["accepted"] > 50


def test_the_fuzzer_catches_a_decoder_that_lets_nan_through() -> None:
    report = fuzz(iterations=2000, seed=2, decoder=lambda data, expected: decode(data, expected, finite=False))
    assert any("non-finite" in why for _, why in report.findings)


def test_the_fuzzer_catches_a_decoder_that_trusts_the_header() -> None:
    def trusting(data: bytes, expected: Mapping[str, TensorSpec]) -> dict[str, torch.Tensor]:
        (size,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + size])
        for name, info in meta.items():  # breaks on a header that is not an object, or lacks a field
            _ = name, info["shape"], info["dtype"]
        return decode(data, expected)

    report = fuzz(iterations=2000, seed=3, decoder=trusting)
    assert {why.split(":")[0] for _, why in report.findings} & {"AttributeError", "KeyError", "TypeError"}


def test_mutations_change_the_input() -> None:
    rng = random.Random(0)
    data, _ = seeds()[0]
    assert sum(mutate(data, rng) != data for _ in range(100)) > 80


def test_the_command_runs_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--iterations", "300", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("300 inputs: ") and "refused" in out
