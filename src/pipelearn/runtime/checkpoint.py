"""Checkpoints: after each aggregation, everything the next round needs, written atomically.

A checkpoint is three files in the run's output directory. `checkpoint-roundR.safetensors` holds the tensors: the
global model after round R, each server replica's optimizer state (its momentum buffers) and the server's random
state. `checkpoint-events.jsonl` is the run's timeline so far, one event a line, appended to at each checkpoint.
`checkpoint.json` names the tensors file and its SHA-256, says how much of the timeline is committed, and holds the
rest: rounds done, the plan in force from the next round, each device's last round, the rounds' records, sample
counts, drops and rejoins, bytes so far and the configuration. Each file is written to a temporary file in the same
directory, flushed to disk and renamed over its target (the timeline is appended to and flushed); `checkpoint.json`
goes last, so it is the commit: a crash at any point leaves the previous checkpoint whole (timeline past its
committed length is cut off when read or written), and older tensor files are removed only after the new JSON is in
place.

Devices keep their own optimizer state (pipelearn.runtime.device_state): the checkpoint says from which round, the
server's START tells each device. So a resumed or rejoining run goes on with the momentum it would have had.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pipelearn.config import ConfigError, RunConfig

FORMAT = 2
"""Bumped whenever the checkpoint's layout changes; format 1 (weights only, no optimizer state) is still read."""

CHECKPOINT_FILE = "checkpoint.json"
EVENTS_FILE = "checkpoint-events.jsonl"


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged or does not fit the run; the text says which and what to do."""


@dataclass
class Checkpoint:
    """The state of a run after an aggregation: enough to go on from the next round as if it had not stopped."""

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
    run_id: str = ""
    """The run's identity, which a device's saved optimizer state must carry to be taken."""
    plan: dict[str, Any] | None = None
    """The plan in force from round rounds_done (RunPlan.to_dict), which a resumed run keeps; None: plan afresh."""
    optimizers: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    """Per device, its server replica's optimizer state after the last round the device finished
    (training.optimizer_tensors)."""
    device_rounds: dict[int, int] = field(default_factory=dict)
    """Per device, the last round it finished: the round whose optimizer state it restores from its own disk."""
    rng: torch.Tensor | None = None
    """The server's torch random state."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """The rounds' records so far (pipelearn.metrics.rounds.RoundRecord as dicts)."""
    events: Sequence[Mapping[str, Any]] = ()
    """The run's timeline so far, each event's times in seconds from the run's start of training."""
    bytes_up: list[int] = field(default_factory=list)
    """Per device, bytes received from it so far (over every part of the run)."""
    bytes_down: list[int] = field(default_factory=list)
    directory: Path | None = None
    """Where it was read from (set by load_checkpoint; the directory a link such as runs/latest points at)."""


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
    """The name of the tensors file of a checkpoint."""
    return f"checkpoint-round{rounds_done}.safetensors"


def _tensors(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint under one name: model/KEY, optimizer/DEVICE/PARAMETER/KEY and rng/server."""
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in checkpoint.weights.items()}
    for d, state in checkpoint.optimizers.items():
        tensors.update({f"optimizer/{d}/{k}": v.detach().cpu().contiguous() for k, v in state.items()})
    if checkpoint.rng is not None:
        tensors["rng/server"] = checkpoint.rng.contiguous()
    return tensors


def _committed_events(directory: Path, previous: Mapping[str, Any] | None, run_id: str) -> int:
    """How many events of the timeline file the checkpoint before this one committed (0 if none of this run)."""
    if previous is None or previous.get("run") != run_id or not isinstance(previous.get("events"), dict):
        return 0
    committed = previous["events"]
    path = directory / EVENTS_FILE
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size < committed["bytes"]:
        return 0  # shorter than committed: rewrite it whole
    if size > committed["bytes"]:  # an append whose checkpoint never committed
        os.truncate(path, committed["bytes"])
    return int(committed["count"])


def _append_events(directory: Path, events: Sequence[Mapping[str, Any]], already: int) -> dict[str, int]:
    """Bring the timeline file to `events` (its first `already` are in it), flushed to disk; its committed length."""
    path = directory / EVENTS_FILE
    lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events[already:]).encode()
    if already == 0:
        atomic_write(path, lines)
    elif lines:
        with open(path, "ab") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
    return {"count": len(events), "bytes": path.stat().st_size}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def save_checkpoint(directory: str | Path, checkpoint: Checkpoint) -> None:
    """Write a checkpoint into `directory` atomically, then remove the tensor files of older ones."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = st_save(_tensors(checkpoint))
    name = weights_file(checkpoint.rounds_done)
    atomic_write(directory / name, tensors)
    previous = _read_json(directory / CHECKPOINT_FILE)
    already = _committed_events(directory, previous, checkpoint.run_id)
    events = _append_events(directory, checkpoint.events, min(already, len(checkpoint.events)))
    state = {
        "format": FORMAT,
        "run": checkpoint.run_id,
        "rounds_done": checkpoint.rounds_done,
        "rounds": checkpoint.rounds,
        "weights": name,
        "sha256": hashlib.sha256(tensors).hexdigest(),
        "events": events,
        "samples": checkpoint.samples,
        "elapsed_s": checkpoint.elapsed_s,
        "dropped": checkpoint.dropped,
        "rejoined": checkpoint.rejoined,
        "errors": {str(d): text for d, text in checkpoint.errors.items()},
        "plan": checkpoint.plan,
        "device_rounds": {str(d): r for d, r in checkpoint.device_rounds.items()},
        "records": checkpoint.records,
        "bytes_up": checkpoint.bytes_up,
        "bytes_down": checkpoint.bytes_down,
        "config": json.loads(checkpoint.config.to_json()),
    }
    atomic_write(directory / CHECKPOINT_FILE, (json.dumps(state, indent=1) + "\n").encode())
    for old in directory.glob("checkpoint-round*.safetensors"):
        if old.name != name:
            with contextlib.suppress(OSError):
                old.unlink()


def _read_events(directory: Path, committed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The committed part of the timeline file: its first `bytes`, which must hold `count` events."""
    path = directory / EVENTS_FILE
    with open(path, "rb") as f:
        data = f.read(int(committed["bytes"]))
    events = [json.loads(line) for line in data.splitlines() if line]
    if len(data) != committed["bytes"] or len(events) != committed["count"]:
        raise CheckpointError(f"{path} holds less of the timeline than {CHECKPOINT_FILE} committed: it is damaged")
    return events


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
    if not isinstance(state, dict) or state.get("format") not in (1, FORMAT):
        got = state.get("format") if isinstance(state, dict) else None
        raise CheckpointError(f"{path} has format {got!r}; this version of pipelearn reads formats 1 and {FORMAT}")
    try:
        weights_path = directory / Path(str(state["weights"])).name
        data = weights_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != state["sha256"]:
            raise CheckpointError(f"{weights_path} does not match the SHA-256 in {path}: the weights are damaged")
        tensors = st_load(data)
        config = RunConfig.from_json(json.dumps(state["config"]))
        checkpoint = Checkpoint(
            config=config,
            rounds_done=int(state["rounds_done"]),
            rounds=int(state["rounds"]),
            samples=[int(n) for n in state["samples"]],
            weights=tensors,
            elapsed_s=float(state["elapsed_s"]),
            dropped=list(state["dropped"]),
            rejoined=list(state["rejoined"]),
            errors={int(d): str(text) for d, text in state["errors"].items()},
            directory=directory.resolve() if directory.is_symlink() else directory,  # runs/latest: its run's own
        )
        if state["format"] == 1:  # weights only: momentum restarts, the plan is made afresh
            return checkpoint
        checkpoint.weights, checkpoint.optimizers = {}, {}
        for key, tensor in tensors.items():
            kind, _, rest = key.partition("/")
            if kind == "model":
                checkpoint.weights[rest] = tensor
            elif kind == "optimizer":
                d, _, label = rest.partition("/")
                checkpoint.optimizers.setdefault(int(d), {})[label] = tensor
            elif key == "rng/server":
                checkpoint.rng = tensor
        checkpoint.run_id = str(state["run"])
        checkpoint.plan = state["plan"]
        checkpoint.device_rounds = {int(d): int(r) for d, r in state["device_rounds"].items()}
        checkpoint.records = list(state["records"])
        checkpoint.events = _read_events(directory, state["events"])
        checkpoint.bytes_up = [int(n) for n in state["bytes_up"]]
        checkpoint.bytes_down = [int(n) for n in state["bytes_down"]]
        return checkpoint
    except CheckpointError:
        raise
    except FileNotFoundError as exc:
        raise CheckpointError(f"the file {exc.filename} that {path} names is missing") from None
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
        self.written = 0
        """rounds_done of the last checkpoint written (0 before any)."""
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

    def wait_written(self, rounds_done: int) -> None:
        """Block until the checkpoint after `rounds_done` rounds (or a later one) is on disk, or a write failed."""
        with self._cond:
            self._cond.wait_for(lambda: self.written >= rounds_done or self._failure is not None or self._closed)

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
                with self._cond:
                    self._failure = exc
                    self._cond.notify_all()
            else:
                with self._cond:
                    self.written = checkpoint.rounds_done
                    self._cond.notify_all()
