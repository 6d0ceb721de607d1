"""The `pipelearn` command line's parser: its commands and their flags (run settings from pipelearn.settings)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from pipelearn import __version__
from pipelearn.config import did_you_mean
from pipelearn.logs import LogSettings
from pipelearn.settings import RENAMED_FLAGS, RenamedFlag, add_flags

DESCRIPTION = (
    "The `pipelearn` command: run, server, device, credentials, plan, bench, report and train-local, over the API."
)

_LOCAL_SETTINGS = {"model", "dataset", "data_dir", "download", "batchnorm", "epochs", "batch_size"}
_LOCAL_SETTINGS |= {"samples_per_device", "lr", "momentum", "seed", "test_samples", "threads", "out", "replace"}
"""The settings `pipelearn train-local` takes: what one process training the whole model has."""
_RAY_SETTINGS = ("launcher", "ray_address", "ray_server_cpus", "ray_server_gpus", "ray_device_cpus")
"""The settings of who places a run's processes: `pipelearn run`'s alone."""
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


def _parser() -> _Parser:
    parser = _Parser(prog="pipelearn", description=DESCRIPTION, allow_abbrev=False)
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
    # the namespaces are made, and Ray places processes, by `pipelearn run`
    _add_config_flags(server, leave_out=["netns", *_RAY_SETTINGS])
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
    device.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where this device keeps its optimizer state of its last rounds, to go on with it when it rejoins or "
        "the run is resumed (give the same DIR again). Default: nowhere; momentum then starts afresh",
    )
    timeout: dict[str, Any] = {"dest": "timeout_s", "type": float, "default": 120.0, "metavar": "SECONDS"}
    device.add_argument(
        "--timeout-s",
        **timeout,
        help="longest wait to reach the server and be admitted; then the device waits as long as the server is "
        "alive. Unit: seconds. Default: 120.",
    )
    device.add_argument("--timeout", **timeout, action=RenamedFlag, help=argparse.SUPPRESS)  # the old spelling
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
    device.add_argument("--quiet", action="store_true", help="only warnings and errors: no connecting or round lines")
    for each in (run, server, device):
        add_flags(each, LogSettings)
    bench = command("bench", "every mode on one workload under each network, with figures")
    _add_config_flags(
        bench,
        hidden=list(_BENCH_ALTERNATIVES),
        defaults={
            "samples_per_device": "500 for vgg5, 200 for resnet18 (--regime edge: 200, 100; --quick: 300); "
            "--accuracy: 2500",
            "epochs": "2 (--regime edge, --quick: 1); --accuracy: 10",
            "test_samples": "1000 for resnet18, else the whole split",
            "eval_every": "0 for resnet18, else 1; --accuracy: 0",
            "out": "runs/bench; --accuracy: runs/accuracy",
        },
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="minutes: VGG5 under wifi, one epoch, in each regime of --regime (default: both), with a verdict each",
    )
    bench.add_argument(
        "--regime",
        nargs="+",
        choices=("strong", "edge"),
        metavar="REGIME",
        help="strong (devices 4 times slower than the server) or edge (40 times: Raspberry-Pi-class boards), or "
        "both. Default: strong (--quick: both).",
    )
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
