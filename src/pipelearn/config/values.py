"""The values settings take: modes, codecs, link presets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

Mode = Literal["fl", "sl", "sfl", "pipelearn"]
MODES: tuple[str, ...] = get_args(Mode)
CODECS: tuple[str, ...] = ("none", "fp16", "bf16", "int8", "topk")
"""Tensor compression on the wire; topk is written topk:R (see pipelearn.transport.compress)."""
Direction = Literal["up", "down"]
RateSteps = tuple[tuple[float, float], ...]
"""A link's rate over time: (seconds since training start, Mbit/s) steps, the first at 0 s."""
COMPUTE_SETTING = r"auto|cpu|mps|cuda(:\d+)?"
"""What a compute setting (server_device, a device's --compute) may say."""


@dataclass(frozen=True)
class Link:
    """One device's network: bit rates in Mbit/s (inf for unlimited) and one-way latency in ms."""

    up_mbps: float
    """Uplink rate, device to server."""
    down_mbps: float
    """Downlink rate, server to device."""
    latency_ms: float
    """One-way latency, added to every message in each direction."""


NETWORK_PRESETS: dict[str, Link] = {
    "4g": Link(up_mbps=10, down_mbps=25, latency_ms=30),
    "4g+": Link(up_mbps=20, down_mbps=60, latency_ms=20),
    "wifi": Link(up_mbps=50, down_mbps=50, latency_ms=5),
    "unlimited": Link(up_mbps=math.inf, down_mbps=math.inf, latency_ms=0),
}
"""This project's assumptions; the paper does not state its rates."""


def parse_codec(text: str) -> tuple[str, float]:
    """A compression setting's codec and kept fraction: 'topk:0.1' is ('topk', 0.1), 'int8' is ('int8', 1.0)."""
    name, _, ratio = text.partition(":")
    if name not in CODECS or (name == "topk") != bool(ratio):
        raise ValueError(f"unknown compression {text!r}; expected {_CODEC_CHOICES}")
    if name != "topk":
        return name, 1.0
    try:
        fraction = float(ratio)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction < 1:
        raise ValueError(f"compression {text!r} keeps a fraction {ratio!r}; topk:R needs 0 < R < 1, as in topk:0.1")
    return name, fraction


_CODEC_CHOICES = "none, fp16, bf16, int8 or topk:R with 0 < R < 1 (topk:0.1 keeps the largest tenth)"
