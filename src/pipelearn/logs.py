"""One log for every process (the command line, a run's server, each device): `setup_logging` once, then
`logging.getLogger("pipelearn.ROLE")` and `progress_bar`.

On a terminal, log lines are written through the progress bar's own writer (tqdm.write), so none is glued onto a
bar's line. Where stderr is not a terminal (a file, a pipe, CI), there are no bars: a bar is a plain log line at
every tenth of its way, and nothing is written with a carriage return. `--log-file FILE` also appends the log, with
times, to FILE. Lines read `ROLE: message`, `ROLE: warning: message`, `ROLE: error: message`, where ROLE is the
logger's name after `pipelearn.` for a process's own logger (server, device, run, bench) and `pipelearn` otherwise.

gRPC's native (C-core) log is off unless asked for: importing pipelearn sets GRPC_VERBOSITY=NONE where the
environment does not set it (`quiet_grpc`); set GRPC_VERBOSITY=INFO (and GRPC_TRACE) to see it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

ROLES = ("server", "device", "run", "bench")
"""Loggers `pipelearn.ROLE` whose lines are prefixed by their role; every other pipelearn logger's by `pipelearn`."""
_TAG = "_pipelearn_handler"


@dataclass
class LogSettings:
    """How a process logs: settings of the command line (run, server, device), not of a run's configuration."""

    log_file: str | None = field(default=None, metadata={"metavar": "FILE"})
    """Also append this process's log to FILE, each line with its time (progress bars stay on the terminal)."""


def quiet_grpc() -> None:
    """Turn gRPC's native log off unless the environment asks for it; before grpc is first imported."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    os.environ.setdefault("GRPC_TRACE", "")


def is_terminal(stream: TextIO) -> bool:
    """Whether a stream is a terminal, where progress bars redraw their line."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = record.name.split(".")
        role = parts[1] if len(parts) > 1 and parts[0] == "pipelearn" and parts[1] in ROLES else "pipelearn"
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        text = f"{role}: {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _Console(logging.Handler):
    """Writes to stderr (as it is when the line is written), through tqdm on a terminal."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self.stream or sys.stderr
            text = self.format(record)
            if is_terminal(stream):
                from tqdm import tqdm

                tqdm.write(text, file=stream)
            else:
                stream.write(text + "\n")
                stream.flush()
        except Exception:
            self.handleError(record)


def setup_logging(
    log_file: str | None = None, *, stream: TextIO | None = None, level: int = logging.INFO
) -> logging.Logger:
    """Send the `pipelearn` loggers' messages to `stream` (default: stderr) and, where given, to `log_file`; call it
    once a process, or again to change where they go. Returns the `pipelearn` logger."""
    root = logging.getLogger("pipelearn")
    for handler in [h for h in root.handlers if getattr(h, _TAG, False)]:
        root.removeHandler(handler)
        handler.close()
    console: logging.Handler = _Console(stream)
    console.setFormatter(_Formatter())
    handlers = [console]
    if log_file is not None:
        written = logging.FileHandler(log_file, encoding="utf-8")
        written.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(written)
    for handler in handlers:
        setattr(handler, _TAG, True)
        root.addHandler(handler)
    root.setLevel(level)
    return root


class Progress(Protocol):
    """What a progress bar offers: tqdm's, or plain lines where stderr is no terminal."""

    def update(self, n: int = 1) -> Any: ...
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...
    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Progress: ...
    def __exit__(self, *exc: object) -> None: ...
    def __iter__(self) -> Iterator[Any]: ...


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    stream: TextIO | None = None,
    log: logging.Logger | None = None,
) -> Progress:
    """A progress bar on `stream` (default: stderr) where it is a terminal; elsewhere a line on `log` (default: the
    `pipelearn` logger) at every tenth of the way and at the end; nothing where not `enabled`."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    if not enabled or is_terminal(stream):
        bar: Progress = tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, disable=not enabled)
        return bar
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return _Lines(iterable, total, desc, unit, log or logging.getLogger("pipelearn"))


class _Lines:
    """A progress bar's stand-in where stderr is no terminal: plain log lines, never a carriage return."""

    def __init__(
        self, iterable: Iterable[Any] | None, total: int | None, desc: str, unit: str, log: logging.Logger
    ) -> None:
        self.iterable, self.total, self.desc, self.unit, self.log = iterable, total, desc, unit, log
        self.n, self.postfix, self._said, self._closed = 0, "", 0, False

    def update(self, n: int = 1) -> None:
        """Count `n` more done; say so where that passes another tenth of the total."""
        self.n += n
        if self.total and self.n * 10 // self.total > self._said:
            self._say()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """The text after the count, as tqdm's."""
        self.postfix = s

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """key=value text after the count, as tqdm's."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **kwargs}.items())

    def close(self) -> None:
        """Say where it ended, unless just said."""
        if not self._closed and self.n and (not self.total or self.n * 10 // self.total != self._said):
            self._say()
        self._closed = True

    def _say(self) -> None:
        self._said = self.n * 10 // self.total if self.total else self._said
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        postfix = f" ({self.postfix})" if self.postfix else ""
        self.log.info("%s%s %s%s", f"{self.desc}: " if self.desc else "", count, self.unit, postfix)

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update()
        self.close()
