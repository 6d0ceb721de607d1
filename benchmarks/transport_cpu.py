"""What a message costs in CPU beyond the compute the traces record: whole runs that differ only in micro-batches.

Each run's CPU is every process's (the server, the devices and this one, by getrusage); from it the script takes
the CPU seconds the run's compute actions recorded (trace.json's cpu_s). What is left is start-up, the final
evaluation and the transport (gRPC's threads, the link shaper, on both ends), of which only the transport grows with
the messages. The difference of the mean leftovers of two micro-batch counts over the difference of their messages
(activations and gradients) is the CPU each message costs. The planner's simulator does not count it as load on the
cores (see docs/RESULTS.md).

Usage:
  python benchmarks/transport_cpu.py --out runs/transport-cpu                  # VGG5, split 2, wifi, 1 and 25
  python benchmarks/transport_cpu.py --microbatches 1 8 --repeats 2 --out runs/transport-cpu
"""

from __future__ import annotations

import argparse
import resource
import statistics
from pathlib import Path

import torch

from pipelearn.config import RunConfig
from pipelearn.plan import schedule_for
from pipelearn.planner.calibrate import RecordedRun
from pipelearn.runtime.launch import run_local
from pipelearn.schedule import Op


def process_cpu_s() -> float:
    """User and system seconds of this process and its children that have ended."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def traced(run_dir: Path) -> tuple[float, int]:
    """The CPU seconds a finished run's compute actions recorded, and its activation and gradient messages."""
    run = RecordedRun.load(run_dir)
    schedule = schedule_for(run.config, run.plan, run.samples)
    return sum(run.cpu.values()), sum(a.key.op in (Op.ACTIVATION, Op.GRADIENT) for a in schedule.actions())


def main() -> None:
    """Run each micro-batch count --repeats times; print each run, then the CPU a message costs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--microbatches", type=int, nargs=2, default=[1, 25], metavar=("FEW", "MANY"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default="runs/transport-cpu")
    args = parser.parse_args()
    if args.microbatches[0] == args.microbatches[1] or args.repeats < 1:
        parser.error("give two different micro-batch counts and --repeats of at least 1")
    torch.set_num_threads(1)
    left: dict[int, list[float]] = {n: [] for n in args.microbatches}
    messages: dict[int, int] = {}
    for repeat in range(1, args.repeats + 1):
        for n in args.microbatches:
            where = Path(args.out) / f"n{n}-r{repeat}"
            config = RunConfig(
                model="vgg5",
                dataset="mnist",
                samples_per_device=300,
                batch_size=100,
                epochs=args.epochs,
                test_samples=1000,
                eval_every=0,
                devices=4,
                device_slowdown=4.0,
                network="wifi",
                split=2,
                microbatches=n,
                out=str(where),
                replace=True,
            ).validate()
            before = process_cpu_s()
            metrics = run_local(config, progress=False)
            total = process_cpu_s() - before
            compute, messages[n] = traced(where)
            left[n].append(total - compute)
            print(
                f"micro-batches {n}, run {repeat}: CPU {total:.2f} s, of it compute {compute:.2f} s, the rest "
                f"{total - compute:.2f} s; {messages[n]} messages; training {metrics['train_time_s']:.2f} s",
                flush=True,
            )
    few, many = args.microbatches
    extra = statistics.fmean(left[many]) - statistics.fmean(left[few])
    print(
        f"the rest: {statistics.fmean(left[few]):.2f} s with {few}, {statistics.fmean(left[many]):.2f} s with {many} "
        f"(means of {args.repeats}); {extra:.2f} s for {messages[many] - messages[few]} more messages: "
        f"{1e3 * extra / (messages[many] - messages[few]):.2f} ms of CPU a message, both ends together"
    )


if __name__ == "__main__":
    main()
