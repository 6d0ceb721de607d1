"""How faithful is the user-space link shaper? The same workload under it and under the kernel's (tc in network
namespaces, `--netns`), per mode and network preset, and the ratio of their epoch times; a markdown table.

Usage (as root on Linux): python benchmarks/netns_fidelity.py --modes fl sfl pipelearn --networks 4g 4g+ wifi \\
    -- [pipelearn run flags...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from pipelearn.cli import _config, _parser
from pipelearn.runtime.launch import run_local
from pipelearn.runtime.netns import unavailable_reason


def _run(rest: list[str], mode: str, network: str, out: Path, netns: bool) -> dict[str, Any]:
    flags = [
        "run",
        *rest,
        "--mode",
        mode,
        "--network",
        network,
        "--out",
        str(out),
        "--replace",
        *(["--netns"] if netns else []),
    ]
    return run_local(_config(_parser().parse_args(flags)), progress=False)


def _uplink_mbps(out: Path) -> float | None:
    """The median rate of the uplink transfers in a run's trace (bytes over duration), in Mbit/s."""
    events = json.loads((out / "trace.json").read_text())["traceEvents"]
    rates = [e["args"]["bytes"] * 8 / e["dur"] for e in events if e.get("cat") == "uplink" and e.get("dur", 0) > 0]
    return statistics.median(rates) if rates else None


def main() -> None:
    """Run every mode under every network with both shapers; print one table row per pair of runs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["fl", "sfl", "pipelearn"])
    parser.add_argument("--networks", nargs="+", default=["4g", "4g+", "wifi"])
    parser.add_argument("--repeats", type=int, default=1, help="pairs of runs per mode and network")
    parser.add_argument("--out", default="runs/netns-fidelity")
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"netns_fidelity: the kernel shaper needs network namespaces, which cannot be made here: {reason}")
    print(
        "| network | mode | epoch time, user space (s) | epoch time, kernel (s) | kernel / user space | "
        "uplink transfers, user space (Mbit/s) | kernel (Mbit/s) |"
    )
    print("|---|---|---|---|---|---|---|")
    ratios: dict[tuple[str, str], list[float]] = {}
    for network in args.networks:
        for mode in args.modes:
            for repeat in range(args.repeats):
                rows: dict[str, Any] = {}
                order = (("user", False), ("kernel", True))
                for shaper, netns in order[:: 1 if repeat % 2 == 0 else -1]:  # alternated, so drift hits both
                    out = Path(args.out) / f"{network}-{mode}-{repeat}-{shaper}"
                    metrics = _run(rest, mode, network, out, netns)
                    rows[shaper] = {"epochs": metrics["epoch_times_s"], "uplink_mbps": _uplink_mbps(out)}
                user, kernel = (statistics.mean(rows[s]["epochs"]) for s in ("user", "kernel"))
                up = [rows[s]["uplink_mbps"] for s in ("user", "kernel")]
                print(
                    f"| {network} | {mode} | {user:.2f} | {kernel:.2f} | {kernel / user:.3f} | "
                    + " | ".join("-" if r is None else f"{r:.2f}" for r in up)
                    + " |",
                    flush=True,
                )
                record = {"network": network, "mode": mode, "repeat": repeat, **rows}
                (Path(args.out) / f"{network}-{mode}-{repeat}.json").write_text(json.dumps(record, indent=1))
                ratios.setdefault((network, mode), []).append(kernel / user)
    print("\n| network | mode | pairs | median kernel / user space | within 10% |")
    print("|---|---|---|---|---|")
    for (network, mode), values in ratios.items():
        middle = statistics.median(values)
        print(f"| {network} | {mode} | {len(values)} | {middle:.3f} | {'yes' if abs(middle - 1) <= 0.1 else 'no'} |")


if __name__ == "__main__":
    main()
