"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

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
