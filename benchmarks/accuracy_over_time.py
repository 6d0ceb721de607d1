"""Train fl, sfl and pipelearn on one workload; draw test accuracy against wall-clock time and tabulate time to target.

Usage: python benchmarks/accuracy_over_time.py --target 0.9 --out runs/accuracy-over-time -- [pipelearn run flags...]

The default workload is VGG5 on MNIST, 4 devices over 4g, devices 10 times slower than the server, 3 epochs with
FedAvg every 2 iterations (5 rounds an epoch); flags after `--` override it. Each run evaluates its global model
after every round beside training. Writes accuracy_over_time.png, time_to_accuracy.md and one directory of results
per mode into --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pipelearn.bench.figures import plot_accuracy_over_time
from pipelearn.cli import _config, _parser
from pipelearn.metrics.rounds import time_to_accuracy_table
from pipelearn.runtime.launch import run_local

WORKLOAD = [
    "--model", "vgg5", "--dataset", "mnist", "--devices", "4", "--network", "4g", "--device-slowdown", "10",
    "--epochs", "3", "--aggregate-every", "2",
]  # fmt: skip


def main() -> None:
    """Run each mode on the workload; write the figure and the table, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["fl", "sfl", "pipelearn"])
    parser.add_argument("--target", type=float, default=0.9, help="the accuracy to time (a fraction)")
    parser.add_argument("--out", default="runs/accuracy-over-time")
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    torch.set_num_threads(1)
    out = Path(args.out)
    runs = []
    for mode in args.modes:
        flags = [
            *WORKLOAD,
            *rest,
            "--mode",
            mode,
            "--target-accuracy",
            str(args.target),
            "--out",
            str(out / mode),
            "--replace",
        ]
        config = _config(_parser().parse_args(["run", *flags]))
        print(f"{mode}: pipelearn run {' '.join(flags)}", flush=True)
        runs.append(run_local(config, progress=False))
    c = runs[0]["config"]
    workload = (
        f"{c['model']} on {c['dataset']}, {c['devices']} devices x {c['samples_per_device']} samples, {c['network']}, "
        f"device slowdown {c['device_slowdown']:g}, batch {c['batch_size']}, {c['epochs']} epochs, FedAvg every "
        f"{c['aggregate_every'] or 'epoch'} iterations, evaluated on {runs[0]['eval_samples']} test samples"
    )
    figure = plot_accuracy_over_time(
        runs, out / "accuracy_over_time.png", target=args.target, title=f"{runs[0]['model']} on {runs[0]['dataset']}"
    )
    table = time_to_accuracy_table(runs, args.target)
    (out / "time_to_accuracy.md").write_text(f"Workload: {workload}.\n\n{table}\n")
    (out / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    print(f"\nWorkload: {workload}.\n\n{table}\n\nfigure: {figure}")


if __name__ == "__main__":
    main()
