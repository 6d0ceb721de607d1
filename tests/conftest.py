"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelearn.logs import setup_logging

TESTS = Path(__file__).parent


@pytest.fixture
def plugin_nets(monkeypatch: pytest.MonkeyPatch) -> str:
    """The module of user-written plug-ins, importable here and in device processes started from here."""
    monkeypatch.syspath_prepend(str(TESTS))
    return "plugin_nets"


@pytest.fixture(autouse=True, scope="session")
def pipelearn_logging() -> None:
    """The pipelearn loggers write to stderr as the command line has them (`ROLE: warning: ...`), in every test."""
    setup_logging()


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> None:
    """Compute on one thread, as every process of a run does: on a shared machine torch's threads spin against other
    work, and a test of a few milliseconds' arithmetic can then take seconds."""
    import torch

    torch.set_num_threads(1)


_PROCESSES = {"device", "run", "server", "train-local", "bench", "pipelearn.runtime.netns_server"}
"""Commands of `python -m pipelearn ...` (and the netns server) that train or serve: only slow tests start them."""


@pytest.fixture(autouse=True)
def slow_tests_are_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked `slow` that starts a server, or a server's or a device's process, fails saying to mark it:
    the fast tier (`-m "not slow"`) stays fast."""
    if request.node.get_closest_marker("slow") is not None:
        return
    import subprocess

    from pipelearn.runtime.sessions import Sessions

    def refuse(what: str) -> None:
        pytest.fail(f"{request.node.nodeid} {what}: mark it @pytest.mark.slow", pytrace=False)

    def listen(*args: Any, **kwargs: Any) -> int:
        refuse("starts a server")
        return 0

    real_init = subprocess.Popen.__init__

    def popen(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        argv = [str(a) for a in args] if isinstance(args, list | tuple) else str(args).split()
        if "-m" in argv and argv.index("-m") + 1 < len(argv):
            module = argv[argv.index("-m") + 1 :]
            helped = "--help" in module or "-h" in module
            if module[0] == "pipelearn.runtime.netns_server" or (
                module[0] == "pipelearn" and _PROCESSES & set(module[1:2]) and not helped
            ):
                refuse(f"starts `{' '.join(module[:2])}`")
        real_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(Sessions, "listen", listen)
    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
