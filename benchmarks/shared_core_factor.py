"""How much slower the server's part of a model computes beside emulated devices on the same machine's cores.

Usage:
  python benchmarks/shared_core_factor.py --model vgg5 --dataset mnist --size 12 --split 2 --devices 1 4
  python benchmarks/shared_core_factor.py --model resnet18 --dataset synthetic --size 6 --split 5 --devices 1 4

For each device count: that many processes each train the device's part (the blocks up to --split) on micro-batches
of --size, then wait (slowdown - 1) times as long, as an emulated device does. The server's part (the blocks after
the split, with the loss) is timed in CPU seconds in short windows, alternately with the devices paused (SIGSTOP) and
running (SIGCONT), so that slow drifts of the machine fall on both sides alike. Prints, per trial, the median ratio
of a window's time with the devices running to the one before it, with them paused.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time

import torch

from pipelearn.config import RunConfig
from pipelearn.data.dealing import data_shape
from pipelearn.models.parts import make_model
from pipelearn.training import scaled_loss


def compete(config: RunConfig, size: int, split: int, slowdown: float) -> None:
    """An emulated device: train the device's part, wait out its slowdown, again, until killed."""
    shape, classes = data_shape(config)
    part = list(make_model(config, shape, classes).train())[:split]
    x = torch.randn(size, *shape)

    def train() -> None:
        h = x
        for block in part:
            h = block(h)
        h.backward(torch.ones_like(h))

    train()
    print("computing", flush=True)
    while True:
        began = time.thread_time()
        train()
        time.sleep((time.thread_time() - began) * (slowdown - 1))


def main() -> None:
    """Time the server's part beside each number of emulated devices; print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vgg5")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--size", type=int, default=12, help="samples per micro-batch")
    parser.add_argument("--split", type=int, default=2, help="blocks on the device")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 4], help="emulated devices beside the server")
    parser.add_argument("--slowdown", type=float, default=4.0, help="the devices' slowdown (1: they never wait)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--windows", type=int, default=10, help="window pairs per trial")
    parser.add_argument("--compete", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = RunConfig(model=args.model, dataset=args.dataset, synthetic_shape=(3, 32, 32)).validate()
    if args.compete:
        compete(config, args.size, args.split, args.slowdown)
        return
    shape, classes = data_shape(config)
    blocks = list(make_model(config, shape, classes).train())
    if not 0 < args.split < len(blocks):
        parser.error(f"--split must leave blocks on both sides: 1 to {len(blocks) - 1} for {args.model}")
    with torch.no_grad():
        x = torch.randn(args.size, *shape)
        for block in blocks[: args.split]:
            x = block(x)
    server, labels = blocks[args.split :], torch.randint(0, classes, (args.size,))

    def step() -> float:
        activation = x.detach().requires_grad_()
        began = time.thread_time()
        h = activation
        for block in server:
            h = block(h)
        scaled_loss(h, labels, args.size).backward()
        seconds = time.thread_time() - began
        for block in server:
            block.zero_grad(set_to_none=True)
        return seconds

    for _ in range(3):
        step()
    flags = [*sys.argv[1:], "--compete"]
    for count in args.devices:
        rivals = [
            subprocess.Popen([sys.executable, __file__, *flags], stdout=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        try:
            for rival in rivals:
                assert rival.stdout is not None
                rival.stdout.readline()
            for trial in range(args.trials):
                ratios = []
                for _ in range(args.windows):
                    for rival in rivals:
                        rival.send_signal(signal.SIGSTOP)
                    time.sleep(0.005)
                    alone = statistics.median(step() for _ in range(3))
                    for rival in rivals:
                        rival.send_signal(signal.SIGCONT)
                    time.sleep(0.005)
                    ratios.append(statistics.median(step() for _ in range(3)) / alone)
                print(
                    f"{args.model} split {args.split}, {args.size} samples, {count} device(s) at slowdown "
                    f"{args.slowdown:g}, trial {trial}: median {statistics.median(ratios):.3f} "
                    f"(windows {min(ratios):.2f}-{max(ratios):.2f})",
                    flush=True,
                )
        finally:
            for rival in rivals:
                rival.kill()
                rival.wait()


if __name__ == "__main__":
    main()
