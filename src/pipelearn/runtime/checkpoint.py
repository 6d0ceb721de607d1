"""Checkpoints: after each aggregation, the global model (safetensors) and the run's state (JSON), written atomically.

A checkpoint is two files in the run's output directory: `checkpoint-roundR.safetensors` (the global weights after
round R) and `checkpoint.json`, which names that file and its SHA-256 and holds the rest (rounds done, sample counts,
drops and rejoins, the configuration). Each is written to a temporary file in the same directory, flushed to disk
and renamed over its target; `checkpoint.json` goes last, so it is the commit: a crash at any point leaves the
previous checkpoint whole, and older weight files are removed only after the new JSON is in place.

Optimizer state is not saved: a resumed run starts SGD momentum afresh on every device and server replica. So the
resumed result equals an uninterrupted run's when momentum is 0 (and the model has no dropout, whose draws come
from each process's random stream); otherwise it is the same training with momentum restarted at the checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pipelearn.config import ConfigError, RunConfig

FORMAT = 1
"""Bumped whenever the checkpoint's layout changes; other versions are refused."""

CHECKPOINT_FILE = "checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged or does not fit the run; the text says which and what to do."""


@dataclass
class Checkpoint:
    """The state of a run after an aggregation: enough to go on from the next round."""

    config: RunConfig
    rounds_done: int
    """Rounds aggregated; a resumed run starts at this round."""
    rounds: int
    """Rounds in the whole run."""
    samples: list[int]
    """Each device's training samples (the schedule is built from them)."""
    weights: dict[str, torch.Tensor]
    """The global model after round rounds_done - 1."""
    elapsed_s: float = 0.0
    """Training seconds from the run's start to this checkpoint (summed over resumptions)."""
    dropped: list[dict[str, Any]] = field(default_factory=list)
    rejoined: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old file or the new one, never a part."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def weights_file(rounds_done: int) -> str:
    """The name of the weights file of a checkpoint."""
    return f"checkpoint-round{rounds_done}.safetensors"


def save_checkpoint(directory: str | Path, checkpoint: Checkpoint) -> None:
    """Write a checkpoint into `directory` atomically, then remove the weight files of older ones."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = st_save({k: v.detach().cpu().contiguous() for k, v in checkpoint.weights.items()})
    name = weights_file(checkpoint.rounds_done)
    atomic_write(directory / name, weights)
    state = {
        "format": FORMAT,
        "rounds_done": checkpoint.rounds_done,
        "rounds": checkpoint.rounds,
        "weights": name,
        "sha256": hashlib.sha256(weights).hexdigest(),
        "samples": checkpoint.samples,
        "elapsed_s": checkpoint.elapsed_s,
        "dropped": checkpoint.dropped,
        "rejoined": checkpoint.rejoined,
        "errors": {str(d): text for d, text in checkpoint.errors.items()},
        "optimizer_state": "not saved; momentum restarts on resume",
        "config": json.loads(checkpoint.config.to_json()),
    }
    atomic_write(directory / CHECKPOINT_FILE, (json.dumps(state, indent=1) + "\n").encode())
    for old in directory.glob("checkpoint-round*.safetensors"):
        if old.name != name:
            with contextlib.suppress(OSError):
                old.unlink()


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read the last checkpoint written into `directory`, checking that its parts are whole and agree."""
    directory = Path(directory)
    path = directory / CHECKPOINT_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint in {directory}: {CHECKPOINT_FILE} is missing (the server writes one after each "
            "aggregation into the run's output directory)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else None
        raise CheckpointError(f"{path} has format {got!r}; this version of pipelearn reads format {FORMAT}")
    try:
        weights_path = directory / Path(str(state["weights"])).name
        data = weights_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != state["sha256"]:
            raise CheckpointError(f"{weights_path} does not match the SHA-256 in {path}: the weights are damaged")
        weights = st_load(data)
        config = RunConfig.from_json(json.dumps(state["config"]))
        return Checkpoint(
            config=config,
            rounds_done=int(state["rounds_done"]),
            rounds=int(state["rounds"]),
            samples=[int(n) for n in state["samples"]],
            weights=weights,
            elapsed_s=float(state["elapsed_s"]),
            dropped=list(state["dropped"]),
            rejoined=list(state["rejoined"]),
            errors={int(d): str(text) for d, text in state["errors"].items()},
        )
    except CheckpointError:
        raise
    except FileNotFoundError as exc:
        raise CheckpointError(f"the weights {exc.filename} that {path} names are missing") from None
    except ConfigError as exc:
        raise CheckpointError(f"the configuration in {path} is not valid: {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
        raise CheckpointError(f"{path} is damaged or incomplete ({type(exc).__name__}: {exc})") from exc


def check_fits(checkpoint: Checkpoint, state: Mapping[str, torch.Tensor], samples: list[int] | None = None) -> None:
    """Raise CheckpointError unless the checkpoint's weights fit a model's state dict (and its samples the devices')."""
    model = checkpoint.config.model
    missing, extra = sorted(set(state) - set(checkpoint.weights)), sorted(set(checkpoint.weights) - set(state))
    if missing or extra:
        raise CheckpointError(f"checkpoint weights do not fit {model}: missing {missing}, unexpected {extra}")
    for name, tensor in state.items():
        got = checkpoint.weights[name]
        if got.shape != tensor.shape or got.dtype != tensor.dtype:
            raise CheckpointError(
                f"checkpoint tensor {name!r} has shape {list(got.shape)} and dtype {got.dtype}; "
                f"{model} needs {list(tensor.shape)} and {tensor.dtype}"
            )
    if samples is not None and samples != checkpoint.samples:
        raise CheckpointError(
            f"the devices declare {samples} training samples but the checkpointed run had {checkpoint.samples}; "
            "resume with the same devices and data"
        )


class CheckpointWriter:
    """Writes checkpoints in the background, in order, so that a write never holds up training."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pending: Checkpoint | None = None
        self._failure: BaseException | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._write, daemon=True, name="checkpoints")
        self._thread.start()

    def submit(self, checkpoint: Checkpoint) -> None:
        """Queue a checkpoint; one still waiting to be written is superseded by this newer one."""
        with self._cond:
            self._pending = checkpoint
            self._cond.notify_all()

    def close(self) -> None:
        """Write what is queued and stop; raise if any write failed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        if self._failure is not None:
            raise RuntimeError(f"could not write a checkpoint into {self.directory}: {self._failure}")

    def _write(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                checkpoint, self._pending = self._pending, None
                if checkpoint is None:
                    return
            try:
                save_checkpoint(self.directory, checkpoint)
            except Exception as exc:
                logging.getLogger("pipelearn.server").error("writing a checkpoint failed: %s", exc)
                self._failure = exc
