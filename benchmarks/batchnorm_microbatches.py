"""Does BatchNorm on micro-batches cost pipelearn accuracy? sfl against pipelearn at several micro-batch counts.

Usage: python benchmarks/batchnorm_microbatches.py --microbatches 8 25 --seeds 0 1 --out runs/batchnorm -- [flags]

sfl trains on whole mini-batches; pipelearn with N micro-batches normalises each micro-batch by its own statistics
and updates BatchNorm's running statistics N times per mini-batch. Without BatchNorm the two do the same
arithmetic, so any difference with it is BatchNorm's. The default workload is VGG5 on MNIST, 4 devices x 500
samples, batch 100, 5 epochs, split 2, over an unlimited link (accuracy does not depend on the link); flags after
`--` override it (`--no-batchnorm` for the control). Writes batchnorm.md and batchnorm.json into --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from pipelearn.cli import _config, _parser
from pipelearn.runtime.launch import run_local

WORKLOAD = [
    "--model", "vgg5", "--dataset", "mnist", "--devices", "4", "--samples-per-device", "500", "--epochs", "5",
    "--network", "unlimited", "--device-slowdown", "1", "--split", "2", "--eval-every", "0",
]  # fmt: skip


def main() -> None:
    """Run sfl and pipelearn at each micro-batch count for each seed; write and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--microbatches", nargs="+", type=int, default=[8, 25])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--out", default="runs/batchnorm")
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    torch.set_num_threads(1)
    out = Path(args.out)
    settings = [("sfl", 1)] + [("pipelearn", n) for n in args.microbatches]
    runs = []
    for seed in args.seeds:
        for mode, n in settings:
            flags = [*WORKLOAD, *rest, "--mode", mode, "--microbatches", str(n), "--seed", str(seed)]
            flags += ["--out", str(out / f"{mode}-mb{n}-seed{seed}"), "--replace"]
            print(f"pipelearn run {' '.join(flags)}", flush=True)
            began = time.monotonic()
            metrics = run_local(_config(_parser().parse_args(["run", *flags])), progress=False)
            runs.append(
                {
                    "mode": mode,
                    "microbatches": n,
                    "seed": seed,
                    "test_accuracy": metrics["test_accuracy"],
                    "wall_s": time.monotonic() - began,
                }
            )
            print(f"    test accuracy {100 * metrics['test_accuracy']:.2f}%", flush=True)
    c = metrics["config"]
    workload = (
        f"{c['model']} on {c['dataset']} (BatchNorm {'on' if c['batchnorm'] else 'off'}), {c['devices']} devices x "
        f"{c['samples_per_device']} samples, batch {c['batch_size']}, {c['epochs']} epochs, split {c['split']}, "
        f"seeds {', '.join(map(str, args.seeds))}"
    )
    lines = [
        f"Workload: {workload}.",
        "",
        "| mode | micro-batches | samples per micro-batch | test accuracy per seed (%) | mean (%) "
        "| mean - sfl (points) |",
        "|---|---|---|---|---|---|",
    ]
    means = {}
    for mode, n in settings:
        accuracies = [100 * r["test_accuracy"] for r in runs if (r["mode"], r["microbatches"]) == (mode, n)]
        means[n] = statistics.mean(accuracies)
        lines.append(
            f"| {mode} | {n} | {c['batch_size'] / n:.1f} | {', '.join(f'{a:.2f}' for a in accuracies)} "
            f"| {means[n]:.2f} | {means[n] - means[1]:+.2f} |"
        )
    table = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "batchnorm.md").write_text(table)
    (out / "batchnorm.json").write_text(json.dumps({"workload": workload, "runs": runs}, indent=1) + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
