"""Load: one server and many devices (separate processes) on loopback; peak memory and time per iteration.

Usage: python benchmarks/many_devices.py --devices 32 [-- pipelearn run flags...]

Defaults: synthetic data, VGG5, 50 samples per device in mini-batches of 25 (2 iterations an epoch), 2 epochs,
unlimited network, no device slowdown. Prints a markdown table and writes it, with the run's metrics, to
OUT/load.json. Exits 1 if any device failed.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

from pipelearn.cli import _config, _parser
from pipelearn.runtime.launch import run_local

_DEFAULTS = [
    "--dataset", "synthetic",
    "--model", "vgg5",
    "--samples-per-device", "50",
    "--batch-size", "25",
    "--epochs", "2",
    "--network", "unlimited",
    "--device-slowdown", "1",
    "--test-samples", "500",
    "--timeout-s", "600",
]  # fmt: skip


def main() -> int:
    """Run one server with --devices device processes; print and save peak memory and time per iteration."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=32)
    parser.add_argument("--out", default="runs/many-devices")
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    run_args = _parser().parse_args(
        ["run", *_DEFAULTS, *rest, "--devices", str(args.devices), "--out", args.out, "--replace"]
    )
    config = _config(run_args)
    began = time.perf_counter()
    metrics = run_local(config, progress=False)
    wall = time.perf_counter() - began
    # Linux reports ru_maxrss in KiB; for children it is the peak of the largest one that has been waited for
    server_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    device_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    iterations = max(math.ceil(d["samples"] / config.batch_size) for d in metrics["device"]) * config.epochs
    row = {
        "devices": config.devices,
        "mode": config.mode,
        "model": config.model,
        "iterations": iterations,
        "train_time_s": metrics["train_time_s"],
        "time_per_iteration_s": metrics["train_time_s"] / iterations,
        "wall_time_s": wall,
        "server_peak_rss_mib": server_mib,
        "largest_device_peak_rss_mib": device_mib,
        "failed_devices": metrics["failed_devices"],
        "test_accuracy": metrics["test_accuracy"],
    }
    print(
        "| devices | mode | iterations | time per iteration (s) | training (s) | wall, with start-up (s) | "
        "server peak RSS (MiB) | largest device peak RSS (MiB) | failed devices |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {row['devices']} | {row['mode']} | {iterations} | {row['time_per_iteration_s']:.3f} | "
        f"{row['train_time_s']:.1f} | {wall:.1f} | {server_mib:.0f} | {device_mib:.0f} | "
        f"{len(row['failed_devices'])} |",
        flush=True,
    )
    out = Path(config.out)
    (out / "load.json").write_text(json.dumps({**row, "metrics": metrics}, indent=1) + "\n")
    return 1 if row["failed_devices"] else 0


if __name__ == "__main__":
    sys.exit(main())
