"""The `pipelearn` command: run, server, device and train-local."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from pipelearn import __version__
from pipelearn.config import MODES, NETWORK_PRESETS, ConfigError, RunConfig, from_mapping, load_toml


def _int_or_auto(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _schedule(text: str) -> list[list[float]]:
    try:
        return [[float(t), float(mbps)] for t, mbps in (step.split(":") for step in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected SECONDS:MBPS steps separated by commas (0:10,30:2,60:10), got {text!r}"
        ) from None


_RUN_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--mode", "mode", {"choices": MODES}),
    ("--model", "model", {}),
    ("--dataset", "dataset", {}),
    ("--data-dir", "data_dir", {"metavar": "DIR"}),
    ("--devices", "devices", {"type": int}),
    ("--network", "network", {"choices": list(NETWORK_PRESETS)}),
    ("--up-mbps", "up_mbps", {"type": _float}),
    ("--down-mbps", "down_mbps", {"type": _float}),
    ("--latency-ms", "latency_ms", {"type": _float}),
    ("--up-schedule", "up_schedule", {"type": _schedule, "metavar": "S:MBPS,..."}),
    ("--down-schedule", "down_schedule", {"type": _schedule, "metavar": "S:MBPS,..."}),
    ("--netns", "netns", {"action": "store_true", "help": "devices and server as hosts in network namespaces"}),
    ("--device-slowdown", "device_slowdown", {"type": _float, "metavar": "K"}),
    ("--split", "split", {"type": _int_or_auto, "metavar": "P|auto"}),
    ("--microbatches", "microbatches", {"type": _int_or_auto, "metavar": "N|auto"}),
    ("--epochs", "epochs", {"type": int}),
    ("--batch-size", "batch_size", {"type": int}),
    ("--samples-per-device", "samples_per_device", {"type": int, "metavar": "S"}),
    ("--partition", "partition", {"choices": ["iid", "dirichlet"]}),
    ("--dirichlet-alpha", "dirichlet_alpha", {"type": _float}),
    ("--aggregate-every", "aggregate_every", {"type": int, "metavar": "ITERATIONS"}),
    ("--lr", "lr", {"type": _float}),
    ("--momentum", "momentum", {"type": _float}),
    ("--seed", "seed", {"type": int}),
    ("--test-samples", "test_samples", {"type": int}),
    ("--threads", "threads", {"type": int}),
    ("--timeout", "timeout_s", {"type": _float, "metavar": "SECONDS"}),
    ("--out", "out", {"metavar": "DIR"}),
]
_LOCAL_FLAGS = {
    "--model",
    "--dataset",
    "--data-dir",
    "--epochs",
    "--batch-size",
    "--lr",
    "--momentum",
    "--seed",
    "--test-samples",
    "--threads",
    "--out",
}


def _add_config_flags(parser: argparse.ArgumentParser, only: set[str] | None = None) -> None:
    parser.add_argument("config", nargs="?", metavar="CONFIG.toml", help="a TOML file of run settings")
    for flag, dest, extra in _RUN_FLAGS:
        if only is None or flag in only:
            parser.add_argument(flag, dest=dest, default=None, **extra)
    parser.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="fetch the data set's official files when they are missing (needs a network)",
    )
    parser.add_argument(
        "--no-batchnorm",
        dest="batchnorm",
        action="store_false",
        default=None,
        help="build the zoo model without BatchNorm",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace, **defaults: Any) -> RunConfig:
    base = load_toml(args.config) if args.config else RunConfig()
    values = dataclasses.asdict(base)
    values["device_overrides"] = {k: dataclasses.asdict(v) for k, v in base.device_overrides.items()}
    if not args.config:
        values.update(defaults)
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    for rate, schedule in (("up_mbps", "up_schedule"), ("down_mbps", "down_schedule")):
        if rate in given or schedule in given:  # a flag replaces the file's rate or schedule of its direction
            values[rate] = values[schedule] = None
    values.update(given)
    return from_mapping(values)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipelearn", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pipelearn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train with a server and devices as local processes over loopback")
    _add_config_flags(run)
    server = commands.add_parser("server", help="serve a run to devices on other machines")
    server.add_argument("--listen", required=True, metavar="HOST:PORT")
    _add_config_flags(server)
    device = commands.add_parser("device", help="join a server as one device")
    device.add_argument("--server", required=True, metavar="HOST:PORT")
    device.add_argument("--id", required=True, type=int, help="this device's id, 0..devices-1")
    device.add_argument(
        "--timeout",
        type=_float,
        default=120.0,
        metavar="SECONDS",
        help="longest wait for the server before the device gives up",
    )
    local = commands.add_parser("train-local", help="train the whole model in this one process (the baseline)")
    _add_config_flags(local, only=_LOCAL_FLAGS)
    local.add_argument(
        "--samples",
        dest="samples_per_device",
        type=int,
        default=None,
        help="training samples to use (default: the whole training split)",
    )
    return parser


def _summary(metrics: dict[str, Any]) -> str:
    shown: dict[str, Any] = {
        k: metrics[k]
        for k in ("mode", "model", "dataset", "train_time_s", "epoch_times_s", "test_accuracy")
        if k in metrics
    }
    if "server" in metrics:
        shown["server_idle_s"] = metrics["server"]["idle_s"]
        shown["device_idle_s"] = [d["idle_s"] for d in metrics["device"]]
    return json.dumps(_rounded(shown), indent=1)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "device":
            from pipelearn.runtime.device import run_device

            run_device(args.server, args.id, args.timeout)
            return 0
        if args.command == "train-local":
            from pipelearn.trainer import train_local

            config = _config(args, devices=1, samples_per_device=None, epochs=3, mode="fl", out="runs/train-local")
            metrics = train_local(config, progress=not args.quiet)
        elif args.command == "server":
            from pipelearn.runtime.server import serve

            config = _config(args)
            if config.netns:
                raise ConfigError("netns is for `pipelearn run`, which makes the namespaces; drop it for a server")
            metrics = serve(config, args.listen, progress=not args.quiet)
        else:
            from pipelearn.runtime.launch import run_local

            metrics = run_local(_config(args), progress=not args.quiet)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"pipelearn: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"pipelearn: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pipelearn: interrupted", file=sys.stderr)
        return 130
    print(_summary(metrics))
    return 0
