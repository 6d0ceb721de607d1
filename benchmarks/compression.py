"""Run each compression setting against none on two workloads and print a markdown table of time, bytes, accuracy.

Workloads (pipelearn mode under 4g unless flags say otherwise):
- vgg5-mnist: the defaults of `pipelearn run` (MNIST, VGG5, 4 devices x 1,000 samples, split 2, 2 epochs); real
  data, so its test accuracy is the one that says what a codec costs;
- resnet18-cifar-shaped: ResNet18 on synthetic 3x32x32 images of 10 classes, written in CIFAR-10's binary format
  and read by the CIFAR-10 loader (4 devices x 250 samples, 1 epoch); it shows the time and bytes of a model whose
  activations are 20 times larger, and its accuracy only shows that training still works.

A setting is a codec for both directions (int8) or UP/DOWN (int8/none compresses what devices send only).

Usage: python benchmarks/compression.py [--workloads ...] [--settings ...] [--seeds 0 1 2] -- [pipelearn run flags...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pipelearn.cli import _config, _parser
from pipelearn.data import synthetic_dataset
from pipelearn.runtime.launch import run_local

SETTINGS = ["none", "fp16", "bf16", "int8", "topk:0.1", "topk:0.01", "int8/none", "topk:0.1/none"]

CIFAR_SHAPED: dict[Literal["train", "test"], int] = {"train": 5 * 1000, "test": 1000}
"""Samples of the synthetic CIFAR-shaped set: five training files of 1,000 and a test file."""


def workload_flags(name: str, data: Path) -> list[str]:
    """The `pipelearn run` flags of a workload (flags after `--` override them)."""
    if name == "vgg5-mnist":
        return ["--model", "vgg5", "--dataset", "mnist"]
    if name == "resnet18-cifar-shaped":
        write_cifar_shaped(data)
        return [
            *("--model", "resnet18", "--dataset", "cifar10", "--data-dir", str(data)),
            *("--samples-per-device", "250", "--epochs", "1", "--test-samples", "1000"),
        ]
    raise SystemExit(f"unknown workload {name!r}; choose vgg5-mnist or resnet18-cifar-shaped")


def write_cifar_shaped(directory: Path) -> None:
    """Write learnable synthetic 3x32x32 images in CIFAR-10's binary format (label byte, then the pixel planes)."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in CIFAR_SHAPED.items():
        data = synthetic_dataset(count, (3, 32, 32), 10, seed=7, split=split)
        records = np.concatenate(
            [data.labels.numpy().astype(np.uint8)[:, None], data.images.numpy().reshape(count, -1)], axis=1
        )
        files = ["test_batch.bin"] if split == "test" else [f"data_batch_{i}.bin" for i in range(1, 6)]
        for name, part in zip(files, np.array_split(records, len(files)), strict=True):
            (directory / name).write_bytes(part.tobytes())


def compress_flags(setting: str) -> list[str]:
    """`--compress` flags of a setting: CODEC, or UP/DOWN."""
    up, _, down = setting.partition("/")
    return ["--compress-up", up, "--compress-down", down] if down else ["--compress", up]


def run(workload: str, setting: str, seed: int, flags: list[str], rest: list[str], out: Path) -> dict[str, Any]:
    """One run; its metrics, also kept in out/row.json."""
    argv = [
        "run",
        *flags,
        "--network",
        "4g",
        *rest,
        *compress_flags(setting),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--replace",
    ]
    metrics = run_local(_config(_parser().parse_args(argv)), progress=False)
    (out / "row.json").write_text(json.dumps({"workload": workload, "setting": setting, **metrics}, indent=1))
    return metrics


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Means over seeds: epoch time, bytes each way, test accuracy."""
    return {
        "epoch_s": statistics.mean(statistics.mean(m["epoch_times_s"]) for m in runs),
        "up": statistics.mean(m["bytes_up"] for m in runs),
        "down": statistics.mean(m["bytes_down"] for m in runs),
        "accuracy": statistics.mean(m["test_accuracy"] for m in runs),
        "spread": max(m["test_accuracy"] for m in runs) - min(m["test_accuracy"] for m in runs),
    }


def main() -> None:
    """Run every setting of every workload (none first); print one table row per setting."""
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["vgg5-mnist", "resnet18-cifar-shaped"])
    parser.add_argument("--settings", nargs="+", default=SETTINGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default="runs/compression")
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    settings = ["none", *(s for s in args.settings if s != "none")]
    print(
        "| workload | compress (up/down) | epoch time (s) | speed-up | bytes up (MB) | up / none | "
        "bytes down (MB) | test accuracy | vs none (points) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for workload in args.workloads:
        flags = workload_flags(workload, Path(args.out) / "cifar-shaped")
        base: dict[str, float] | None = None
        for setting in settings:
            runs = [
                run(
                    workload,
                    setting,
                    seed,
                    flags,
                    rest,
                    Path(args.out) / f"{workload}-{setting.replace('/', '-')}-{seed}",
                )
                for seed in args.seeds
            ]
            row = summary(runs)
            base = base or row
            spread = f" (spread {100 * row['spread']:.2f})" if len(runs) > 1 else ""
            print(
                f"| {workload} | {setting} | {row['epoch_s']:.1f} | {base['epoch_s'] / row['epoch_s']:.2f}x | "
                f"{row['up'] / 1e6:.2f} | {row['up'] / base['up']:.3f} | {row['down'] / 1e6:.2f} | "
                f"{100 * row['accuracy']:.2f}%{spread} | {100 * (row['accuracy'] - base['accuracy']):+.2f} |",
                flush=True,
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
