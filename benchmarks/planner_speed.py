"""How long the planner takes to plan a large heterogeneous fleet (the search alone, from a profile).

Usage: python benchmarks/planner_speed.py [--devices 1000 10000] [--profile-in FILE] [--repeats 5] [--host-cores N]

Devices draw their slowdown (1-10), network preset and uplink rate (2-50 Mbit/s) from a seeded generator. The
profile is measured once (vgg5 on MNIST's shape, batch 100) unless one is given; the time reported is planning
only: the closed-form estimate of every candidate of every device, the fleet optimum and the candidates' ranking.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Literal

import torch

from pipelearn.config import NETWORK_PRESETS, DeviceOverride, RunConfig
from pipelearn.data.dealing import data_shape
from pipelearn.models import canonical_model_name
from pipelearn.models.parts import make_model
from pipelearn.planner.command import compact
from pipelearn.planner.measure import profile_model
from pipelearn.planner.profile import load_profile
from pipelearn.planner.search import plan_run


def fleet(devices: int, seed: int = 0, cores: float | Literal["auto", "off"] = "off") -> RunConfig:
    """A heterogeneous fleet of `devices` devices, each with its own slowdown, network and uplink rate, each on
    hardware of its own (or all sharing `cores` CPU cores)."""
    rng = random.Random(seed)
    presets = [name for name in NETWORK_PRESETS if name != "unlimited"]
    overrides = {
        d: DeviceOverride(
            network=rng.choice(presets),
            up_mbps=round(rng.uniform(2, 50), 1),
            device_slowdown=round(rng.uniform(1, 10), 1),
        )
        for d in range(devices)
    }
    return RunConfig(
        devices=devices,
        split="auto",
        microbatches="auto",
        samples_per_device=1000,
        device_overrides=overrides,
        host_cores=cores,
    ).validate()


def main() -> None:
    """Plan each fleet size a few times; print the fastest and median planning time and the plan."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, nargs="+", default=[1000])
    parser.add_argument("--profile-in", metavar="FILE")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--host-cores", default="off", help="cores the server and every device share (default: off, a real fleet)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    cores = args.host_cores if args.host_cores in ("auto", "off") else float(args.host_cores)
    base = RunConfig().validate()
    shape, classes = data_shape(base)
    model = make_model(base, shape, classes)
    if args.profile_in:
        profile = load_profile(args.profile_in)
    else:
        profile = profile_model(canonical_model_name(base.model), model, shape, base.batch_size)
    print("| devices | planning time, fastest (s) | median (s) | predicted epoch (s) | splits | micro-batches |")
    print("|---|---|---|---|---|---|")
    for devices in args.devices:
        config = fleet(devices, cores=cores)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            planned = plan_run(config, model, shape, profile)
            times.append(time.perf_counter() - started)
        plan = planned.plan
        print(
            f"| {devices} | {min(times):.3f} | {statistics.median(times):.3f} | {plan.predicted_epoch_s:.2f} | "
            f"{compact(plan.splits)} | {compact(plan.microbatches)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
