"""One run under the local launcher and under launcher ray, side by side: wall time, start-up and memory.

Usage: python benchmarks/launchers.py --devices 32 --launcher local|ray [-- pipelearn run flags...]

The run is benchmarks/many_devices.py's (synthetic data, VGG5, 50 samples per device, 2 epochs, unlimited network).
Memory is sampled every half second, by a process of its own, over this process and all its descendants (under
launcher ray without an address, Ray's own processes and workers are among them): the peak of their summed PSS
(shared pages counted once) and of their summed RSS. Under launcher ray, the time `ray.init` took is the first share
of the start-up Ray adds. Prints one JSON line and writes it to OUT/launcher.json. Exits 1 if any device failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from many_devices import _DEFAULTS

from pipelearn.cli import _config, _parser


def _descendants(root: int) -> list[int]:
    """`root` and every process below it, from /proc."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                stack += [int(c) for c in (task / "children").read_text().split()]
    return found


def _memory_kib(pids: list[int]) -> tuple[int, int]:
    """Summed PSS and RSS of `pids`, KiB."""
    pss = rss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
        except OSError:
            pass
    return pss, rss


def _sample(root: int, peak: Any, done: Any) -> None:
    """Every half second until `done`, the summed PSS and RSS of `root` and its descendants (less this sampler) into
    `peak`, where higher."""
    while not done.wait(0.5):
        pss, rss = _memory_kib([p for p in _descendants(root) if p != os.getpid()])
        peak[0], peak[1] = max(peak[0], pss), max(peak[1], rss)


def main() -> int:
    """Run once under the launcher asked; print and save wall time, start-up and peak memory."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=32)
    parser.add_argument("--launcher", choices=("local", "ray"), default="local")
    parser.add_argument("--out", default="runs/launchers")
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    out = f"{args.out}/{args.launcher}-{args.devices}"
    flags = [*_DEFAULTS, *rest, "--devices", str(args.devices), "--launcher", args.launcher, "--out", out]
    config = _config(_parser().parse_args(["run", *flags]))
    # the sampler is a process of its own: a thread of this one would hold the local launcher's server back
    context = multiprocessing.get_context("spawn")
    peak = context.Array("q", 2)
    done = context.Event()
    sampler = context.Process(target=_sample, args=(os.getpid(), peak, done), daemon=True)
    sampler.start()
    began = time.perf_counter()
    init_s = None
    if args.launcher == "ray":
        import ray

        ray.init(include_dashboard=False, configure_logging=False)
        init_s = time.perf_counter() - began
        from pipelearn.runtime.ray_launch import run_ray as launch
    else:
        from pipelearn.runtime.launch import run_local as launch
    metrics = launch(config, progress=False)
    wall = time.perf_counter() - began
    done.set()
    sampler.join()
    row = {
        "launcher": args.launcher,
        "devices": config.devices,
        "wall_time_s": round(wall, 1),
        "ray_init_s": None if init_s is None else round(init_s, 1),
        "train_time_s": round(metrics["train_time_s"], 1),
        "server_startup_s": round(metrics["startup_s"]["server"], 1),
        "mean_device_startup_s": round(sum(metrics["startup_s"]["devices"]) / config.devices, 1),
        "peak_pss_mib": peak[0] // 1024,
        "peak_rss_mib": peak[1] // 1024,
        "failed_devices": metrics["failed_devices"],
    }
    print(json.dumps(row))
    (Path(out) / "launcher.json").write_text(json.dumps(row, indent=2) + "\n")
    return 1 if metrics["failed_devices"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
