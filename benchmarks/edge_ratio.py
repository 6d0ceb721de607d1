"""How much slower a Raspberry-Pi-class board is than this machine: one image of MobileNet v2 at 300x300, timed here
in CPU seconds on one torch thread, against the published Raspberry Pi times of the same network.

Usage: python benchmarks/edge_ratio.py [--runs 10]

The published figures (docs/bench.md cites them) are the inference of MobileNet v2 SSD at 300x300 in TensorFlow, on
the whole board; this times the MobileNet v2 backbone alone (without the SSD detection layers, so its time is a
lower bound and the ratio an upper bound) in PyTorch, forward only, in CPU time (the time other processes take on a
shared machine is not counted).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

PUBLISHED_MS = {"Raspberry Pi 3 Model B+, TensorFlow": 654.0, "Raspberry Pi 4, TensorFlow": 483.5}
"""MobileNet v2 SSD, 300x300, ms per image: github.com/aallan/benchmarking-ml-on-the-edge (README's table)."""
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
"""MobileNet v2's inverted residual stages: expansion, channels, repeats, first stride (Sandler et al. 2018)."""


def _conv(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return nn.Sequential(*layers, nn.ReLU6()) if relu else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1), with the shortcut where shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [_conv(cin, hidden, 1, 1)] if expand != 1 else []
        layers += [_conv(hidden, hidden, 3, stride, groups=hidden), _conv(hidden, cout, 1, 1, relu=False)]
        self.body = nn.Sequential(*layers)
        self.shortcut = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output."""
        return x + self.body(x) if self.shortcut else self.body(x)


def mobilenet_v2() -> nn.Sequential:
    """MobileNet v2's feature extractor (width 1.0), up to its last 1x1 convolution of 1280 channels."""
    layers: list[nn.Module] = [_conv(3, 32, 3, 2)]
    cin = 32
    for expand, cout, repeats, stride in SETTINGS:
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    return nn.Sequential(*layers, _conv(cin, 1280, 1, 1))


def cpu_ms_per_image(runs: int) -> list[float]:
    """CPU milliseconds of each of `runs` forward passes of one 300x300 image, after two to warm up."""
    torch.set_num_threads(1)
    model, image = mobilenet_v2().eval(), torch.randn(1, 3, 300, 300)
    times = []
    with torch.no_grad():
        for i in range(runs + 2):
            began = time.process_time()
            model(image)
            if i >= 2:
                times.append(1000 * (time.process_time() - began))
    return times


def main() -> None:
    """Print this machine's time per image and each published board's time over it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    times = cpu_ms_per_image(parser.parse_args().runs)
    here = statistics.median(times)
    print(f"this machine, one torch thread: median {here:.1f} ms CPU per image (fastest {min(times):.1f} ms)")
    for board, ms in PUBLISHED_MS.items():
        print(f"{board}: {ms} ms published, {ms / here:.1f}x this machine's median, {ms / min(times):.1f}x its fastest")


if __name__ == "__main__":
    main()
