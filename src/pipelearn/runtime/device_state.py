"""What a device keeps of itself on its own disk: its optimizer state (and random state) at the end of each round it
trains, written before it sends that round's weights, so that it rejoins, or a resumed run goes on, with the momentum
it had. The server's START says which round to take back (pipelearn.runtime.checks.Begin)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from pipelearn.runtime.checkpoint import CheckpointError, atomic_write

KEEP_DEVICE_ROUNDS = 3
"""How many rounds' optimizer state a device keeps: the server commits checkpoint R-1 before it sends round R+1's
weights (Aggregator.save waits for it), so the round a resumed run asks for is among the device's last three."""

_DEVICE_STATE = re.compile(r"optimizer-(?P<run>[0-9a-f]+)-round(?P<round>\d+)\.safetensors")


def device_state_file(directory: str | Path, run_id: str, round: int) -> Path:
    """Where a device keeps its optimizer state of one round of one run."""
    return Path(directory) / f"optimizer-{run_id}-round{round}.safetensors"


def save_device_state(
    directory: str | Path, run_id: str, device: int, round: int, optimizer: Mapping[str, torch.Tensor]
) -> None:
    """Write a device's optimizer state (and torch random state) at the end of `round`, atomically, and remove that
    run's states older than the last KEEP_DEVICE_ROUNDS rounds."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"optimizer/{k}": v for k, v in optimizer.items()} | {"rng/device": torch.get_rng_state()}
    metadata = {"run": run_id, "device": str(device), "round": str(round)}
    atomic_write(device_state_file(directory, run_id, round), st_save(tensors, metadata))
    for old in directory.iterdir():
        found = _DEVICE_STATE.fullmatch(old.name)
        if found and found["run"] == run_id and int(found["round"]) <= round - KEEP_DEVICE_ROUNDS:
            with contextlib.suppress(OSError):
                old.unlink()


def load_device_state(directory: str | Path, run_id: str, device: int, round: int) -> dict[str, torch.Tensor]:
    """A device's optimizer state at the end of `round` of run `run_id` (setting torch's random state to the one saved
    with it); CheckpointError where it is missing or is another run's or device's."""
    path = device_state_file(directory, run_id, round)
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except FileNotFoundError:
        raise CheckpointError(f"no optimizer state of round {round} in {directory} ({path.name} is missing)") from None
    except Exception as exc:  # safetensors raises its own errors for a damaged file
        raise CheckpointError(f"{path} cannot be read: {exc}") from exc
    wanted = {"run": run_id, "device": str(device), "round": str(round)}
    if {k: metadata.get(k) for k in wanted} != wanted:
        raise CheckpointError(f"{path} is the state of {metadata}, not of {wanted}")
    rng = tensors.pop("rng/device", None)
    if rng is not None:
        torch.set_rng_state(rng)
    return {k.removeprefix("optimizer/"): v for k, v in tensors.items()}
