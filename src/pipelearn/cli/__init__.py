"""The `pipelearn` command: run, server, device, credentials, plan, bench, report and train-local, over the API."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelearn.cli.parser import _ACCURACY_ALTERNATIVES, _BENCH_ALTERNATIVES, _LINK_RATES, _LOCAL_DEFAULTS
from pipelearn.cli.parser import _parser as _parser
from pipelearn.cli.summary import _summary as _summary
from pipelearn.config import ConfigError, RunConfig, check_profile_in, from_mapping, read_toml
from pipelearn.logs import setup_logging
from pipelearn.settings import deprecations, typed_flags

if TYPE_CHECKING:
    from pipelearn.runtime.checkpoint import Checkpoint

log = logging.getLogger("pipelearn")


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
    return dataclasses.replace(checkpoint.config, out=str(checkpoint.directory)), checkpoint


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
    if args.accuracy and args.regime:
        raise ConfigError(
            "--regime is for the timing bench; the accuracy table plans at the --device-slowdown given (default 4)"
        )
    if args.accuracy:
        config = _config(args, WORKLOAD)
        out = Path(config.out if "out" in given else "runs/accuracy")
        log.info("%s", accuracy_command(args, config, out))
        return
    config = _config(args)
    check_profile_in(config)
    names = list(dict.fromkeys(args.regime or (("strong", "edge") if args.quick else ("strong",))))
    if len(names) > 1 and "device_slowdown" in given:
        raise ConfigError(
            f"{given['device_slowdown']}: the regimes {' and '.join(names)} each run at their own slowdown; give "
            "--regime strong or --regime edge to run one at yours"
        )
    plans = [
        BenchPlan.of(name, args.quick).chosen(args.modes, args.models, args.networks).with_workload(config, given)
        for name in names
    ]
    out = Path(config.out if "out" in given else "runs/bench")
    result = bench(config, plans, out, resume=args.resume, progress=not args.quiet)
    for sentence in result["verdicts"]:
        print(sentence)
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
            state_dir=args.state_dir,
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
    if args.command == "server":
        if config.netns:
            raise ConfigError("{0} is for `pipelearn run`, which makes the namespaces; drop it for a server", "netns")
        if config.launcher != "local":
            raise ConfigError("{0} is for `pipelearn run`, which places processes; drop it for a server", "launcher")
        _security(args)
        from pipelearn.transport.credentials import load_server_credentials

        tls = load_server_credentials(args.credentials) if args.credentials else None
        metrics = api.serve(
            config, args.listen, credentials=tls, insecure=tls is None, progress=not args.quiet, resume=resume
        )
    else:
        metrics = api.run(config, progress=not args.quiet, resume=resume)
    from pipelearn.bench.report import report_run

    config = dataclasses.replace(config, out=metrics["config"]["out"])  # the run's own directory (runs/latest's)
    report_run(Path(config.out))
    return metrics, config


def _device_quiet(args: argparse.Namespace) -> bool:
    return args.command == "device" and args.quiet


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse(argv)
    try:
        setup_logging(getattr(args, "log_file", None), level=logging.WARNING if _device_quiet(args) else logging.INFO)
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
