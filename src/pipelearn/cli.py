"""The `pipelearn` command: run, server, device, credentials, plan, bench, report and train-local, over the API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelearn import __version__, api
from pipelearn.bench.accuracy import add_accuracy_flags
from pipelearn.config import MODES, NETWORK_PRESETS, ConfigError, RunConfig, from_mapping, load_toml
from pipelearn.metrics.rounds import best_accuracy
from pipelearn.metrics.summary import summary

if TYPE_CHECKING:
    from pipelearn.runtime.checkpoint import Checkpoint


def _int_or_auto(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {text!r}") from None


def _cores(text: str) -> float | str:
    if text in ("auto", "off"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of cores, 'auto' or 'off', got {text!r}") from None


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x32x32, got {text!r}") from None


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
    ("--model", "model", {"metavar": "NAME|MODULE:FUNCTION"}),
    ("--dataset", "dataset", {"metavar": "NAME|MODULE:FUNCTION"}),
    ("--synthetic-shape", "synthetic_shape", {"type": _shape, "metavar": "CxHxW"}),
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
    ("--optimizer-state", "optimizer_state", {"choices": ["keep", "reset"]}),
    ("--seed", "seed", {"type": int}),
    ("--test-samples", "test_samples", {"type": int}),
    ("--eval-every", "eval_every", {"type": int, "metavar": "ROUNDS"}),
    ("--eval-samples", "eval_samples", {"type": int, "metavar": "N"}),
    ("--target-accuracy", "target_accuracy", {"type": _float, "metavar": "A"}),
    ("--stop-at-target", "stop_at_target", {"action": "store_true"}),
    ("--threads", "threads", {"type": int}),
    ("--host-cores", "host_cores", {"type": _cores, "metavar": "N|auto|off"}),
    ("--profile-in", "profile_in", {"metavar": "FILE"}),
    ("--timeout", "timeout_s", {"type": _float, "metavar": "SECONDS"}),
    ("--compress", "compress", {"metavar": "none|fp16|bf16|int8|topk:R"}),
    ("--compress-up", "compress_up", {"metavar": "CODEC"}),
    ("--compress-down", "compress_down", {"metavar": "CODEC"}),
    ("--server-device", "server_device", {"metavar": "auto|cpu|cuda|cuda:N|mps"}),
    ("--server-amp", "server_amp", {"choices": ["off", "bf16"]}),
    ("--heartbeat", "heartbeat_s", {"type": _float, "metavar": "SECONDS"}),
    ("--liveness", "liveness_s", {"type": _float, "metavar": "SECONDS"}),
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
    parser.add_argument("--json", action="store_true", help="end with a JSON summary instead of the readable one")


def _add_security_flags(parser: argparse.ArgumentParser, metavar: str, what: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--credentials", metavar=metavar, help=what)
    group.add_argument(
        "--insecure", action="store_true", help="plain text, no authentication: anyone who can reach the port joins"
    )


def _security(args: argparse.Namespace) -> None:
    if args.credentials is None and not args.insecure:
        raise ConfigError(
            f"pipelearn {args.command} needs --credentials (made by `pipelearn credentials DIR --devices N`), "
            "or --insecure for plain text without authentication"
        )


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


def _resumed(args: argparse.Namespace) -> tuple[RunConfig, Checkpoint]:
    """The checkpoint in --resume DIR and its run's config, writing on into DIR; other run settings are refused."""
    given = [flag for flag, dest, _ in _RUN_FLAGS if getattr(args, dest, None) is not None]
    given += [
        flag
        for flag, dest in (("--download", "download"), ("--no-batchnorm", "batchnorm"))
        if vars(args)[dest] is not None
    ]
    if args.config or given:
        raise ConfigError(
            f"--resume continues a run with the settings in its checkpoint; leave out {args.config or given[0]}"
        )
    from pipelearn.runtime.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(args.resume)
    return dataclasses.replace(checkpoint.config, out=str(args.resume)), checkpoint


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipelearn", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pipelearn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train with a server and devices as local processes over loopback")
    _add_config_flags(run)
    plan = commands.add_parser(
        "plan", help="profile the model and choose each device's split and micro-batch count (auto unless given)"
    )
    _add_config_flags(plan)
    plan.add_argument("--profile-out", metavar="FILE", help="save the profile as JSON")
    plan.add_argument(
        "--calibrate",
        nargs="+",
        default=(),
        metavar="RUN_DIR",
        help="calibrate the profile by finished runs on this host (their actions' CPU seconds), then plan",
    )
    plan.add_argument(
        "--compare", metavar="RUN_DIR", help="a finished run's measured busy and idle times beside the prediction"
    )
    server = commands.add_parser("server", help="serve a run to devices on other machines")
    server.add_argument("--listen", required=True, metavar="HOST:PORT")
    _add_security_flags(server, "DIR", "the directory `pipelearn credentials` wrote (mutual TLS)")
    _add_config_flags(server)
    for command in (run, server):
        command.add_argument(
            "--resume",
            metavar="DIR",
            help="continue the run whose last checkpoint is in DIR (its output directory), with its settings",
        )
    device = commands.add_parser("device", help="join a server as one device")
    device.add_argument("--server", required=True, metavar="HOST:PORT")
    device.add_argument("--id", type=int, help="this device's id, 0..devices-1 (default: the one its credentials name)")
    _add_security_flags(device, "FILE", "this device's device-N.pem (or the directory holding it, with --id)")
    device.add_argument(
        "--data-dir", metavar="DIR", help="where this device's data set lives; the server's plan has no say"
    )
    device.add_argument("--download", action="store_true", help="fetch missing data set files (needs a network)")
    device.add_argument(
        "--timeout",
        type=_float,
        default=120.0,
        metavar="SECONDS",
        help="longest wait to reach the server and be admitted; then the device waits as long as the server is alive",
    )
    bench = commands.add_parser("bench", help="every mode on one workload under each network, with figures")
    _add_config_flags(bench)
    bench.add_argument("--quick", action="store_true", help="a small subset: VGG5 under 4g and wifi, one epoch")
    bench.add_argument("--resume", action="store_true", help="keep the runs an interrupted bench finished")
    bench.add_argument("--modes", nargs="+", metavar="MODE", help="only these modes (default: all four)")
    add_accuracy_flags(bench)
    report = commands.add_parser("report", help="draw the figures and tables of a recorded run or bench again")
    report.add_argument("directory", metavar="DIR", help="a run's --out directory, or a bench's")
    device.add_argument(
        "--model",
        metavar="NAME|MODULE:FUNCTION",
        help="this device's model; needed, and the server's, where the run uses a model plug-in",
    )
    device.add_argument(
        "--dataset",
        metavar="NAME|MODULE:FUNCTION",
        help="this device's data set; needed, and the server's, where the run uses a data plug-in",
    )
    device.add_argument(
        "--compute",
        default="cpu",
        metavar="auto|cpu|cuda|cuda:N|mps",
        help="where this device trains (default: cpu)",
    )
    credentials = commands.add_parser(
        "credentials", help="make a CA, a server certificate and one credential file per device, for mutual TLS"
    )
    credentials.add_argument("directory", metavar="DIR", help="a new directory to write them into")
    credentials.add_argument("--devices", type=int, required=True, help="how many device credentials (ids 0..N-1)")
    credentials.add_argument(
        "--host", action="append", default=[], metavar="NAME", help="a name devices dial the server by (repeatable)"
    )
    credentials.add_argument(
        "--ip", action="append", default=[], metavar="ADDR", help="an address devices dial the server at (repeatable)"
    )
    credentials.add_argument("--days", type=int, default=365, help="how long the certificates are valid")
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
    if metrics.get("plan", {}).get("predicted_epoch_s") is not None:
        shown["predicted_epoch_s"] = metrics["plan"]["predicted_epoch_s"]
    if "server" in metrics:
        shown["server_idle_s"] = metrics["server"]["idle_s"]
        shown["device_idle_s"] = [d["idle_s"] for d in metrics["device"]]
    shown.update(_accuracy_summary(metrics))
    return json.dumps(_rounded(shown), indent=1)


def _accuracy_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    if metrics.get("rounds"):
        shown["best_accuracy"] = best_accuracy(metrics)
        shown["eval_s"] = metrics["eval_s"]
    if metrics.get("target_accuracy") is not None:
        shown["target_accuracy"] = metrics["target_accuracy"]
        shown["time_to_accuracy_s"] = metrics["time_to_accuracy_s"]
        shown["target_round"] = metrics["target_round"]
        if metrics.get("stopped_at_target"):
            shown["stopped_after_round"] = metrics["stopped_after_round"]
    return shown


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
        if args.command == "credentials":
            from pipelearn.transport.credentials import make_credentials

            written = make_credentials(args.directory, args.devices, args.host, args.ip, args.days)
            print("\n".join(str(p) for p in written))
            print(
                f"pipelearn: give {args.directory} to `pipelearn server --credentials` and each device only its own "
                "device-N.pem; the CA's private key was not kept",
                file=sys.stderr,
            )
            return 0
        if args.command == "report":
            from pipelearn.bench.report import report

            for path in report(args.directory):
                print(path)
            return 0
        if args.command == "bench":
            from pipelearn.bench.accuracy import WORKLOAD, accuracy_command, check_accuracy_flags
            from pipelearn.bench.runner import BenchPlan, bench, parse_modes
            from pipelearn.models import canonical_model_name

            check_accuracy_flags(args)
            if args.accuracy:
                print(accuracy_command(args, _config(args, **WORKLOAD)))
                return 0
            plan = BenchPlan.quick() if args.quick else BenchPlan()
            if args.modes:
                plan = dataclasses.replace(plan, modes=parse_modes(args.modes))
            if args.models:
                plan = dataclasses.replace(plan, models=tuple(canonical_model_name(m) for m in args.models))
            out = Path(args.out or "runs/bench")
            bench(_config(args), plan, out, resume=args.resume, progress=not args.quiet)
            print(f"bench: table in {out}/bench.md, results in {out}/bench.json, figures in {out}/*.png")
            return 0
        if args.command == "device":
            _security(args)
            from pipelearn.transport.credentials import load_device_credentials

            key = load_device_credentials(args.credentials, args.id) if args.credentials else None
            device = key.device if key is not None else args.id
            if device is None:
                raise ConfigError("pipelearn device --insecure needs --id, this device's id")
            api.join(
                args.server,
                device,
                model=args.model,
                dataset=args.dataset,
                compute=args.compute,
                timeout_s=args.timeout,
                credentials=key,
                insecure=args.insecure,
                data_dir=args.data_dir,
                download=args.download,
            )
            return 0
        if args.command == "plan":
            from pipelearn.planner.command import plan_command

            config = _config(args)  # the run-wide split and micro-batch count are the planner's unless given
            config = dataclasses.replace(
                config,
                split="auto" if args.split is None else config.split,
                microbatches="auto" if args.microbatches is None else config.microbatches,
            )
            print(
                plan_command(
                    config,
                    as_json=args.json,
                    profile_in=config.profile_in,
                    profile_out=args.profile_out,
                    compare=args.compare,
                    calibrate_from=args.calibrate,
                )
            )
            return 0
        if args.command == "train-local":
            config = _config(args, devices=1, samples_per_device=None, epochs=3, mode="fl", out="runs/train-local")
            metrics = api.train_local(config, progress=not args.quiet)
        elif args.command == "server":
            config, resume = _resumed(args) if args.resume else (_config(args), None)
            if config.netns:
                raise ConfigError("netns is for `pipelearn run`, which makes the namespaces; drop it for a server")
            _security(args)
            from pipelearn.transport.credentials import load_server_credentials

            tls = load_server_credentials(args.credentials) if args.credentials else None
            metrics = api.serve(
                config, args.listen, credentials=tls, insecure=tls is None, progress=not args.quiet, resume=resume
            )
        else:
            config, resume = _resumed(args) if args.resume else (_config(args), None)
            metrics = api.run(config, progress=not args.quiet, resume=resume)
        if args.command != "train-local":
            from pipelearn.bench.report import report_run

            report_run(Path(config.out))
    except (ConfigError, ValueError, OSError) as exc:
        print(f"pipelearn: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"pipelearn: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pipelearn: interrupted", file=sys.stderr)
        return 130
    print(_summary(metrics) if args.json else summary(metrics, config.out))
    return 0
