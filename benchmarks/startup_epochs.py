"""Whether one-off start-up costs leak into training: the first epoch's time against the later epochs'.

Usage: python benchmarks/startup_epochs.py --out runs/startup-epochs [--repeats 3 --epochs 3 --slowdown 3]

Each run trains VGG5 without BatchNorm on synthetic data, 2 devices of 300 samples, pipelearn over an unlimited
link. Start-up (data, model, replicas, warm-up) is paid before READY, so the first epoch should take about as long
as the slowest later one; before start-up moved out of it, it took over 3 times as long. Prints each run's epoch
times, the start-up each side reported, and the first epoch over the slowest later one.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from pipelearn.config import RunConfig
from pipelearn.runtime.launch import run_local


def main() -> None:
    """Run --repeats runs; print each, then the median ratio of the first epoch to the slowest later one."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--slowdown", type=float, default=3.0)
    parser.add_argument("--out", default="runs/startup-epochs")
    args = parser.parse_args()
    if args.epochs < 2 or args.repeats < 1:
        parser.error("give --epochs of at least 2 (a first and a later one) and --repeats of at least 1")
    torch.set_num_threads(1)
    ratios = []
    for repeat in range(1, args.repeats + 1):
        config = RunConfig(
            mode="pipelearn",
            model="vgg5",
            batchnorm=False,
            dataset="synthetic",
            devices=2,
            samples_per_device=300,
            batch_size=20,
            microbatches=3,
            split=2,
            epochs=args.epochs,
            test_samples=200,
            network="unlimited",
            device_slowdown=args.slowdown,
            server_device="cpu",
            out=str(Path(args.out) / f"r{repeat}"),
            replace=True,
        ).validate()
        metrics = run_local(config, progress=False)
        first, *later = metrics["epoch_times_s"]
        ratios.append(first / max(later))
        startup = metrics["startup_s"]
        print(
            f"run {repeat}: epochs {', '.join(f'{t:.3f}' for t in metrics['epoch_times_s'])} s; start-up server "
            f"{startup['server']:.2f} s, devices {', '.join(f'{s:.2f}' for s in startup['devices'])} s; "
            f"first / slowest later {ratios[-1]:.2f}"
        )
    print(f"median first epoch / slowest later one: {statistics.median(ratios):.2f} over {len(ratios)} runs")


if __name__ == "__main__":
    main()
