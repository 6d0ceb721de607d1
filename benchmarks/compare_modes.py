"""Run the four modes side by side on one workload and print a markdown table of what each measured.

Usage: python benchmarks/compare_modes.py --networks 4g wifi -- [pipelearn run flags...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipelearn.cli import _config, _parser
from pipelearn.runtime.launch import run_local


def main() -> None:
    """Run every mode under every network named; print one table row per run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", nargs="+", default=["fl", "sl", "sfl", "pipelearn"])
    parser.add_argument("--networks", nargs="+", default=["4g", "wifi"])
    parser.add_argument("--out", default="runs/compare")
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    print(
        "| network | mode | epoch time (s) | server idle (s) | mean device idle (s) | test accuracy | "
        "busiest resource | its busy time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for network in args.networks:
        for mode in args.modes:
            out = Path(args.out) / f"{network}-{mode}"
            run_args = _parser().parse_args(
                ["run", *rest, "--mode", mode, "--network", network, "--out", str(out), "--replace"]
            )
            metrics = run_local(_config(run_args), progress=False)
            epochs = metrics["epoch_times_s"]
            idle = [d["idle_s"] for d in metrics["device"]]
            print(
                f"| {network} | {mode} | {sum(epochs) / len(epochs):.1f} | {metrics['server']['idle_s']:.1f} | "
                f"{sum(idle) / len(idle):.1f} | {metrics['test_accuracy']:.4f} | "
                f"{metrics['bottleneck']['resource']} | {metrics['bottleneck']['busy_s']:.1f} |",
                flush=True,
            )
            (out / "row.json").write_text(json.dumps({"network": network, "mode": mode, **metrics}, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
