"""The `pipelearn` command: run, server, device, credentials, plan, bench, report and train-local, over the API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelearn import __version__
from pipelearn.config import ConfigError, RunConfig, check_profile_in, did_you_mean, from_mapping, read_toml
from pipelearn.logs import LogSettings, setup_logging
from pipelearn.settings import RENAMED_FLAGS, add_flags, deprecations, typed_flags

if TYPE_CHECKING:
    from pipelearn.runtime.checkpoint import Checkpoint

log = logging.getLogger("pipelearn")

_LOCAL_SETTINGS = {"model", "dataset", "data_dir", "download", "batchnorm", "epochs", "batch_size"}
_LOCAL_SETTINGS |= {"samples_per_device", "lr", "momentum", "seed", "test_samples", "threads", "out"}
"""The settings `pipelearn train-local` takes: what one process training the whole model has."""
_LOCAL_DEFAULTS: dict[str, Any] = {"devices": 1, "samples_per_device": None, "epochs": 3, "mode": "fl"}
_LOCAL_DEFAULTS["out"] = "runs/train-local"
"""train-local's own defaults, where no TOML file is given."""
_LINK_RATES = ("up_mbps", "down_mbps", "latency_ms", "up_schedule", "down_schedule")
_OWN_PLAN = "for a plan of your own, use `pipelearn run`"
_BENCH_ALTERNATIVES = {
    "mode": "the bench runs each mode of --modes: give --modes MODE ...",
    "model": "the bench runs each model of --models: give --models MODEL ...",
    "network": "the bench runs each network of --networks: give --networks NETWORK ...",
    **{
        name: "the bench runs each network of --networks at its preset's rates; for a link of your own, use "
        "`pipelearn run`"
        for name in _LINK_RATES
    },
    "split": f"the bench runs each mode at the planner's best split and micro-batch count; {_OWN_PLAN}",
    "microbatches": f"the bench runs each mode at the planner's best split and micro-batch count; {_OWN_PLAN}",
}
"""Run settings the bench cannot honour, and what to give instead (they parse, hidden, to be refused so)."""
_ACCURACY_ALTERNATIVES = {
    "dataset": "the accuracy table trains each data set of --datasets: give --datasets DATASET ...",
    "network": "the accuracy table plans under 4g, 4g+ and wifi and trains over an unlimited link; leave it out",
    "profile_in": "the accuracy table profiles each model itself; leave it out",
}
"""Run settings the accuracy table (`bench --accuracy`) cannot honour, and what to give instead."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose `parse` names the closest option to a misspelt one (Python 3.11's does not)."""

    commands: dict[str, argparse.ArgumentParser]

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """Parse the command line; exit 2 with the closest known option of each unknown one."""
        args, extras = self.parse_known_args(argv)
        if extras:
            command = self.commands.get(getattr(args, "command", None) or "", self)
            known = [s for a in command._actions if a.help != argparse.SUPPRESS for s in a.option_strings]
            hints = "".join(did_you_mean(x.split("=")[0], known) for x in extras if x.startswith("--"))
            command.error(f"unrecognized arguments: {' '.join(extras)}{hints}")
        return args


def _add_config_flags(
    parser: argparse.ArgumentParser,
    *,
    only: set[str] | None = None,
    leave_out: Sequence[str] = (),
    hidden: Sequence[str] = (),
    defaults: Mapping[str, str] | None = None,
    renamed: Mapping[str, str] = RENAMED_FLAGS,
) -> None:
    parser.add_argument("config", nargs="?", metavar="CONFIG.toml", help="a TOML file of run settings (keys below)")
    add_flags(parser, only=only, leave_out=leave_out, hidden=hidden, defaults=defaults, renamed=renamed)


def _add_output_flags(parser: argparse.ArgumentParser, json_summary: bool = True) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    if json_summary:
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


def _file_values(args: argparse.Namespace) -> dict[str, Any]:
    return read_toml(args.config) if getattr(args, "config", None) else {}


def _given(args: argparse.Namespace) -> dict[str, str]:
    """Each run setting the user gave, by name: as the flag typed, or as the TOML file's key."""
    return {**{k: f"config key '{k}'" for k in _file_values(args)}, **typed_flags(args)}


def _config(
    args: argparse.Namespace, defaults: Mapping[str, Any] | None = None, unset: Mapping[str, Any] | None = None
) -> RunConfig:
    """The run's configuration: the flags over the TOML file over RunConfig's defaults (`defaults`, the command's own,
    replace those where no file is given; `unset`, where neither the file nor a flag gives the setting)."""
    file = _file_values(args)
    values: dict[str, Any] = dataclasses.asdict(RunConfig())
    if not args.config:
        values.update(defaults or {})
    values.update(file)
    values.update({k: v for k, v in (unset or {}).items() if k not in file})
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    for rate, schedule in (("up_mbps", "up_schedule"), ("down_mbps", "down_schedule")):
        if rate in given or schedule in given:  # a flag replaces the file's rate or schedule of its direction
            values[rate] = values[schedule] = None
    values.update(given)
    return from_mapping(values)


def _resumed(args: argparse.Namespace) -> tuple[RunConfig, Checkpoint]:
    """The checkpoint in --resume DIR and its run's config, writing on into DIR; other run settings are refused."""
    given = list(typed_flags(args).values())
    if args.config or given:
        raise ConfigError(
            f"--resume continues a run with the settings in its checkpoint; leave out {args.config or given[0]}"
        )
    from pipelearn.runtime.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(args.resume)
    return dataclasses.replace(checkpoint.config, out=str(args.resume)), checkpoint


def _parser() -> _Parser:
    parser = _Parser(prog="pipelearn", description=__doc__, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"pipelearn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do, one of:")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, allow_abbrev=False)

    run = command("run", "train with a server and devices as local processes over loopback")
    _add_config_flags(run)
    plan = command("plan", "profile the model and choose each device's split and micro-batch count (auto unless given)")
    _add_config_flags(plan, leave_out=["out"])
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
    plan.add_argument("--json", action="store_true", help="the choice and the candidates as JSON instead of a table")
    server = command("server", "serve a run to devices on other machines")
    server.add_argument("--listen", required=True, metavar="HOST:PORT", help="the address and port devices dial")
    _add_security_flags(server, "DIR", "the directory `pipelearn credentials` wrote (mutual TLS)")
    _add_config_flags(server, leave_out=["netns"])  # the namespaces are made by `pipelearn run`
    for each in (run, server):
        each.add_argument(
            "--resume",
            metavar="DIR",
            help="continue the run whose last checkpoint is in DIR (its output directory), with its settings",
        )
        _add_output_flags(each)
    device = command("device", "join a server as one device")
    device.add_argument("--server", required=True, metavar="HOST:PORT", help="the address of the run's server")
    device.add_argument(
        "--id", type=int, metavar="N", help="this device's id, 0..devices-1. Default: the one its credentials name."
    )
    _add_security_flags(device, "FILE", "this device's device-N.pem (or the directory holding it, with --id)")
    device.add_argument(
        "--data-dir", metavar="DIR", help="where this device's data set lives; the server's plan has no say"
    )
    device.add_argument("--download", action="store_true", help="fetch missing data set files (needs a network)")
    timeout: dict[str, Any] = {"dest": "timeout_s", "type": float, "default": 120.0, "metavar": "SECONDS"}
    device.add_argument(
        "--timeout-s",
        **timeout,
        help="longest wait to reach the server and be admitted; then the device waits as long as the server is "
        "alive. Unit: seconds. Default: 120.",
    )
    # the old spelling, which pipelearn.runtime.launch still passes: to warn (action=RenamedFlag) once it does not
    device.add_argument("--timeout", **timeout, help=argparse.SUPPRESS)
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
        "--compute", default="cpu", metavar="auto|cpu|cuda|cuda:N|mps", help="where this device trains. Default: cpu."
    )
    for each in (run, server, device):
        add_flags(each, LogSettings)
    bench = command("bench", "every mode on one workload under each network, with figures")
    _add_config_flags(
        bench,
        hidden=list(_BENCH_ALTERNATIVES),
        defaults={
            "samples_per_device": "500 for vgg5, 200 for resnet18 (--quick: 300); --accuracy: 2500",
            "epochs": "2 (--quick: 1); --accuracy: 10",
            "test_samples": "1000 for resnet18, else the whole split",
            "eval_every": "0 for resnet18, else 1; --accuracy: 0",
            "out": "runs/bench; --accuracy: runs/accuracy",
        },
    )
    bench.add_argument("--quick", action="store_true", help="a small subset: VGG5 under 4g and wifi, one epoch")
    bench.add_argument("--resume", action="store_true", help="keep the runs an interrupted bench finished")
    bench.add_argument("--modes", nargs="+", metavar="MODE", help="only these modes. Default: all four.")
    bench.add_argument("--models", nargs="+", metavar="MODEL", help="only these models (of the bench or the table)")
    bench.add_argument("--networks", nargs="+", metavar="NETWORK", help="only these networks. Default: 4g, 4g+, wifi.")
    bench.add_argument(
        "--accuracy",
        action="store_true",
        help="Table 1: test accuracy of fl, sfl and pipelearn per data set and model (writes accuracy.json, .md)",
    )
    bench.add_argument("--datasets", nargs="+", metavar="DATASET", help="with --accuracy: only these data sets")
    _add_output_flags(bench, json_summary=False)
    report = command("report", "draw the figures and tables of a recorded run or bench again")
    report.add_argument("directory", metavar="DIR", help="a run's --out directory, or a bench's")
    credentials = command(
        "credentials", "make a CA, a server certificate and one credential file per device, for mutual TLS"
    )
    credentials.add_argument("directory", metavar="DIR", help="a new directory to write them into")
    credentials.add_argument(
        "--devices", type=int, required=True, metavar="N", help="how many device credentials (ids 0..N-1)"
    )
    credentials.add_argument(
        "--host", action="append", default=[], metavar="NAME", help="a name devices dial the server by (repeatable)"
    )
    credentials.add_argument(
        "--ip", action="append", default=[], metavar="ADDR", help="an address devices dial the server at (repeatable)"
    )
    credentials.add_argument(
        "--days", type=int, default=365, metavar="DAYS", help="how long the certificates are valid. Default: 365."
    )
    local = command("train-local", "train the whole model in this one process (the baseline)")
    _add_config_flags(
        local,
        only=_LOCAL_SETTINGS,
        defaults={"samples_per_device": "the whole training split", "epochs": "3", "out": "runs/train-local"},
        renamed={"--samples": "samples_per_device"},
    )
    _add_output_flags(local)
    parser.commands = dict(commands.choices)
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
    from pipelearn.metrics.rounds import best_accuracy

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


def _refuse_for_bench(args: argparse.Namespace, given: Mapping[str, str]) -> None:
    """Refuse each run setting given that the bench (or its accuracy table) would not honour, naming what to give."""
    refused = dict(_BENCH_ALTERNATIVES)
    if args.accuracy:  # the table refuses link rates itself (it trains over an unlimited link)
        refused = {k: v for k, v in refused.items() if k not in _LINK_RATES} | _ACCURACY_ALTERNATIVES
    for name, said in given.items():
        if name in refused:
            raise ConfigError(f"{said}: {refused[name]}")


def _bench(args: argparse.Namespace) -> None:
    from pipelearn.bench.accuracy import WORKLOAD, accuracy_command, check_accuracy_flags
    from pipelearn.bench.runner import BenchPlan, bench

    given = _given(args)
    _refuse_for_bench(args, given)
    check_accuracy_flags(args)
    if args.accuracy:
        config = _config(args, WORKLOAD)
        out = Path(config.out if "out" in given else "runs/accuracy")
        log.info("%s", accuracy_command(args, config, out))
        return
    config = _config(args)
    check_profile_in(config)
    plan = (BenchPlan.quick() if args.quick else BenchPlan()).chosen(args.modes, args.models, args.networks)
    out = Path(config.out if "out" in given else "runs/bench")
    bench(config, plan.with_workload(config, given), out, resume=args.resume, progress=not args.quiet)
    print(f"bench: table in {out}/bench.md, results in {out}/bench.json, figures in {out}/*.png")


def _plan_config(args: argparse.Namespace) -> RunConfig:
    """`pipelearn plan`'s configuration: the run's, 'auto' where neither the file nor a flag gives a run-wide split
    or micro-batch count."""
    return _config(args, unset={"split": "auto", "microbatches": "auto"})


def _command(args: argparse.Namespace) -> tuple[dict[str, Any], RunConfig] | None:
    """Carry out the command; the metrics and configuration of a training, which main summarises."""
    if args.command == "credentials":
        from pipelearn.transport.credentials import make_credentials

        written = make_credentials(args.directory, args.devices, args.host, args.ip, args.days)
        print("\n".join(str(p) for p in written))
        log.info(
            "give %s to `pipelearn server --credentials` and each device only its own device-N.pem; the CA's private "
            "key was not kept",
            args.directory,
        )
        return None
    if args.command == "report":
        from pipelearn.bench.report import report

        for path in report(args.directory):
            print(path)
        return None
    if args.command == "bench":
        _bench(args)
        return None
    from pipelearn import api  # torch and grpc load here, not for --help

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
            timeout_s=args.timeout_s,
            credentials=key,
            insecure=args.insecure,
            data_dir=args.data_dir,
            download=args.download,
        )
        return None
    if args.command == "plan":
        from pipelearn.planner.command import plan_command

        config = _plan_config(args)
        check_profile_in(config)  # plan reads the profile whatever is fixed
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
        return None
    if args.command == "train-local":
        config = _config(args, _LOCAL_DEFAULTS)
        return api.train_local(config, progress=not args.quiet), config
    config, resume = _resumed(args) if args.resume else (_config(args), None)
    for warning in check_profile_in(config):
        log.warning("%s", warning)
    if args.command == "server":
        if config.netns:
            raise ConfigError("{0} is for `pipelearn run`, which makes the namespaces; drop it for a server", "netns")
        _security(args)
        from pipelearn.transport.credentials import load_server_credentials

        tls = load_server_credentials(args.credentials) if args.credentials else None
        metrics = api.serve(
            config, args.listen, credentials=tls, insecure=tls is None, progress=not args.quiet, resume=resume
        )
    else:
        metrics = api.run(config, progress=not args.quiet, resume=resume)
    from pipelearn.bench.report import report_run

    report_run(Path(config.out))
    return metrics, config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse(argv)
    try:
        setup_logging(getattr(args, "log_file", None))
    except OSError as exc:
        setup_logging()
        log.error("--log-file %s: %s", args.log_file, exc.strerror or exc)
        return 2
    for warning in deprecations(args):
        log.warning("%s", warning)
    try:
        done = _command(args)
    except ConfigError as exc:
        log.error("%s", exc.message(typed_flags(args)))
        return 2
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130
    if done is not None:
        from pipelearn.metrics.summary import summary

        metrics, config = done
        print(_summary(metrics) if args.json else summary(metrics, config.out))
    return 0
