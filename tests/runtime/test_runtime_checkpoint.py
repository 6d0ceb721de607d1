"""Checkpoints survive a crash at any point of a write, and a run killed with SIGKILL resumes to the same model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelearn.cli import main
from pipelearn.config import RunConfig
from pipelearn.runtime import checkpoint as ckpt
from pipelearn.runtime.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    CheckpointError,
    check_fits,
    load_checkpoint,
    save_checkpoint,
)
from pipelearn.runtime.launch import run_local


def _checkpoint(rounds_done: int, size: int = 1000) -> Checkpoint:
    return Checkpoint(
        config=RunConfig(dataset="synthetic", devices=2),
        rounds_done=rounds_done,
        rounds=10,
        samples=[40, 50],
        weights={"w": torch.full((size,), float(rounds_done)), "b": torch.arange(3)},
        elapsed_s=1.5 * rounds_done,
        dropped=[{"device": 1, "round": 0, "time_s": 0.5, "reason": "device 1 disconnected"}],
        errors={1: "device 1 disconnected"},
    )


def test_a_checkpoint_reads_back_as_it_was_written(tmp_path: Path):
    save_checkpoint(tmp_path, _checkpoint(1))
    save_checkpoint(tmp_path, _checkpoint(2))
    loaded = load_checkpoint(tmp_path)
    assert loaded.rounds_done == 2 and loaded.rounds == 10 and loaded.samples == [40, 50]
    assert torch.equal(loaded.weights["w"], torch.full((1000,), 2.0)) and torch.equal(
        loaded.weights["b"], torch.arange(3)
    )
    assert loaded.config == RunConfig(dataset="synthetic", devices=2)
    assert loaded.errors == {1: "device 1 disconnected"} and loaded.dropped[0]["device"] == 1
    assert loaded.elapsed_s == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-round2.safetensors", CHECKPOINT_FILE]


@pytest.mark.parametrize("crash_at", ["weights fsync", "weights rename", "state fsync", "state rename"])
def test_a_write_that_crashes_part_way_leaves_the_previous_checkpoint_whole(tmp_path: Path, monkeypatch, crash_at):
    save_checkpoint(tmp_path, _checkpoint(1))
    calls = {"fsync": 0, "replace": 0}
    real_fsync, real_replace = os.fsync, os.replace
    step, which = crash_at.split()[1], 1 if crash_at.startswith("weights") else 2

    def fsync(fd: int) -> None:
        if step == "fsync" and os.fstat(fd).st_size > 0 and not os.path.isdir(f"/proc/self/fd/{fd}"):
            calls["fsync"] += 1
            if calls["fsync"] == which:
                raise KeyboardInterrupt("power lost")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls["replace"] += 1
        if step == "rename" and calls["replace"] == which:
            raise KeyboardInterrupt("power lost")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "fsync", fsync)
    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, _checkpoint(2))
    monkeypatch.undo()
    loaded = load_checkpoint(tmp_path)
    assert loaded.rounds_done == 1
    assert torch.equal(loaded.weights["w"], torch.full((1000,), 1.0))
    assert not list(tmp_path.glob(".*.tmp"))  # the half-written temporary file is gone


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from pipelearn.config import RunConfig
    from pipelearn.runtime.checkpoint import Checkpoint, save_checkpoint
    torch.set_num_threads(1)
    for r in range(1, 10_000):
        weights = {"w": torch.full((1_000_000,), float(r))}
        save_checkpoint(sys.argv[1], Checkpoint(RunConfig(), r, 10_000, [1], weights))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.13, 0.31])
def test_a_writer_killed_at_any_moment_leaves_a_whole_checkpoint(tmp_path: Path, delay_s: float):
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / CHECKPOINT_FILE).exists():
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.005)
        time.sleep(delay_s)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    loaded = load_checkpoint(tmp_path)
    assert loaded.rounds_done >= 1
    assert torch.equal(loaded.weights["w"], torch.full((1_000_000,), float(loaded.rounds_done)))


def test_damaged_or_missing_checkpoints_are_refused_with_the_reason(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, _checkpoint(3))
    weights = tmp_path / "checkpoint-round3.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_text("{")
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(tmp_path)


def test_weights_or_samples_that_do_not_fit_are_refused(tmp_path: Path):
    checkpoint = _checkpoint(1)
    with pytest.raises(CheckpointError, match="missing"):
        check_fits(checkpoint, {"w": torch.zeros(1000), "b": torch.arange(3), "c": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="'w' has shape"):
        check_fits(checkpoint, {"w": torch.zeros(999), "b": torch.arange(3)})
    with pytest.raises(CheckpointError, match="samples"):
        check_fits(checkpoint, {"w": torch.zeros(1000), "b": torch.arange(3)}, [40, 51])


def test_resume_refuses_other_settings_and_a_directory_without_a_checkpoint(tmp_path: Path, capsys):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path), "--epochs", "3"]) == 2
    assert "--epochs" in capsys.readouterr().err


def _toml(config: RunConfig) -> str:
    lines = []
    for key, value in json.loads(config.to_json()).items():
        if value is None or key == "device_overrides":
            continue
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_its_checkpoint_to_the_uninterrupted_result(small_config, tmp_path):
    # momentum 0 and no BatchNorm: resuming (which restarts momentum) is then the same arithmetic; 4 rounds
    settings = {"mode": "pipelearn", "epochs": 2, "aggregate_every": 1, "momentum": 0.0}
    uninterrupted = small_config(**settings, out=str(tmp_path / "uninterrupted"))
    reference = run_local(uninterrupted, progress=False)
    assert reference["resumed_from_round"] is None
    whole = load_checkpoint(uninterrupted.out)
    assert whole.rounds_done == whole.rounds == 4
    final = load_file(f"{uninterrupted.out}/model.safetensors")
    assert all(torch.equal(whole.weights[k], v) for k, v in final.items())

    # a slow uplink (which changes no arithmetic) keeps the run going for a while after its first checkpoint
    out = tmp_path / "interrupted"
    toml = tmp_path / "run.toml"
    toml.write_text(_toml(small_config(**settings, up_mbps=2.0, out=str(out))))
    command = [sys.executable, "-m", "pipelearn", "run", str(toml), "--quiet"]
    run = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT_FILE).exists():
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.005)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert not (out / "metrics.json").exists()
    done = load_checkpoint(out).rounds_done
    assert 1 <= done < 4

    resumed = subprocess.run(
        [sys.executable, "-m", "pipelearn", "run", "--resume", str(out), "--quiet"], timeout=300, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_round"] == done and metrics["failed_devices"] == []
    assert load_checkpoint(out).rounds_done == 4
    weights = load_file(f"{out}/model.safetensors")
    assert weights.keys() == final.keys()
    for name, value in final.items():
        torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=0, msg=name)
