"""Whose an output directory is: a run never writes over another run's results, a finished run is never resumed, and
the default output directory is a new one per run, with `runs/latest` pointing at the newest."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

from pipelearn.config import ConfigError, RunConfig

DEFAULT_OUT = "runs/latest"
"""RunConfig's default `out`: not a directory but the link to the newest run's own directory."""
RESULTS = ("metrics.json", "trace.json", "model.safetensors", "checkpoint.json", "checkpoint-events.jsonl")
"""The files that make a directory hold a run's results (finished: metrics.json; under way or stopped: a
checkpoint)."""
_ALSO_THE_RUNS = ("timeline.png", "accuracy.png", "bench_wall.json")
_PATTERNS = ("checkpoint-round*.safetensors", ".*.tmp")
SCRATCH = (".credentials", "device-state")
"""Folders a run keeps in its output directory: the launcher's throw-away credentials, the local devices' state."""


class FinishedRunError(ValueError):
    """`--resume` was given a run that has finished: nothing was changed."""


def results_in(directory: Path) -> list[str]:
    """The names of the run results that `directory` holds."""
    return [name for name in RESULTS if (directory / name).exists()]


def claim(config: RunConfig, resuming: bool = False) -> RunConfig:
    """The configuration with the output directory this run may write into, made ready for it.

    The default `runs/latest` becomes a new directory of this run's own, and `runs/latest` a link to it. A directory
    given that holds another run's results is refused (ConfigError) unless `replace` is set, when those results are
    removed; a resumed run must be unfinished (FinishedRunError, before anything is touched). What a stopped run left
    behind (its throw-away credentials, half-written temporary files) is removed.
    """
    out = Path(config.out)
    if resuming:
        if (out / "metrics.json").exists():
            raise FinishedRunError(
                f"the run in {out} is finished: its results are in {out / 'metrics.json'}, and nothing was changed. "
                "To train further, start a new run (with --out elsewhere)"
            )
        _clear(out, (".credentials",), (".*.tmp",))
        return config
    if config.out == DEFAULT_OUT:
        return dataclasses.replace(config, out=str(_new_run_directory(out.parent, config.mode)))
    found = results_in(out)
    if found and not config.replace:
        unfinished = "metrics.json" not in found and (out / "checkpoint.json").exists()
        shown = str(out).replace("{", "{{").replace("}", "}}")  # the message's braces name keys
        way_on = f", `pipelearn run --resume {shown}` to continue that run" if unfinished else ""
        raise ConfigError(
            f"{shown} holds the results of another run ({', '.join(found)}): give a new {{0}}{way_on}, or --replace "
            "(config key replace) to replace them",
            "out",
        )
    _clear(out, (*SCRATCH,), (*RESULTS, *_ALSO_THE_RUNS, *_PATTERNS))
    return config


def _clear(out: Path, folders: tuple[str, ...], patterns: tuple[str, ...]) -> None:
    for name in folders:
        shutil.rmtree(out / name, ignore_errors=True)
    for pattern in patterns:
        for path in out.glob(pattern):
            with contextlib.suppress(OSError):
                path.unlink()


def _new_run_directory(root: Path, mode: str) -> Path:
    """A new directory under `root` named for the time and mode, with `root/latest` pointing at it."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        directory = root / (f"{stamp}-{mode}" if n == 1 else f"{stamp}-{mode}-{n}")
        try:
            directory.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise OSError(f"could not make a new run directory in {root}")
    link = root / Path(DEFAULT_OUT).name
    if link.exists() and not link.is_symlink():
        print(f"run: {link} is a directory of its own (an earlier pipelearn's); left as it is", file=sys.stderr)
        return directory
    temporary = root / f".latest.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(directory.name, temporary)
    os.replace(temporary, link)  # atomically: `latest` always names a run
    return directory
