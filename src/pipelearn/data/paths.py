"""Where data sets live on disk when the caller names no directory."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "PIPELEARN_DATA_DIR"


def default_data_dir() -> Path:
    """$PIPELEARN_DATA_DIR, else $XDG_CACHE_HOME/pipelearn, else ~/.cache/pipelearn."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "pipelearn"


def resolve_root(root: str | Path | None) -> Path:
    """The directory to read from: `root` if given, else the default data directory."""
    return Path(root).expanduser() if root is not None else default_data_dir()
