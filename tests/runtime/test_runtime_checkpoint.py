"""Checkpoints survive a crash at any point of a write, and a run killed with SIGKILL resumes to the same model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

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
from pipelearn.runtime.launch import CREDENTIALS_DIR, run_local

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        run_id="abc123",
        plan={"devices": [], "note": rounds_done},
        optimizers={0: {"w/momentum_buffer": torch.full((size,), -float(rounds_done))}},
        device_rounds={0: rounds_done - 1, 1: 0},
        rng=torch.get_rng_state(),
        records=[{"round": r, "time_s": r + 0.5, "train_loss": 2.0, "test_accuracy": None} for r in range(rounds_done)],
        events=[
            {"track": "server/compute", "name": f"a{r}", "start": r, "end": r + 0.25, "args": {}}
            for r in range(rounds_done)
        ],
        bytes_up=[10 * rounds_done, 20],
        bytes_down=[30, 40],
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
    # what the next round needs besides the model: optimizer state, each device's round, the plan, the random state
    assert torch.equal(loaded.optimizers[0]["w/momentum_buffer"], torch.full((1000,), -2.0))
    assert loaded.device_rounds == {0: 1, 1: 0} and loaded.plan == {"devices": [], "note": 2}
    assert loaded.rng is not None and torch.equal(loaded.rng, torch.get_rng_state()) and loaded.run_id == "abc123"
    # and what the report needs of the rounds before it: their records, timeline and bytes
    assert [r["round"] for r in loaded.records] == [0, 1] and [e["name"] for e in loaded.events] == ["a0", "a1"]
    assert loaded.bytes_up == [20, 20] and loaded.bytes_down == [30, 40]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-events.jsonl",
        "checkpoint-round2.safetensors",
        CHECKPOINT_FILE,
    ]


def test_the_timeline_is_appended_to_and_cut_back_to_what_the_checkpoint_committed(tmp_path: Path):
    save_checkpoint(tmp_path, _checkpoint(2))
    events = tmp_path / "checkpoint-events.jsonl"
    committed = events.read_bytes()
    with open(events, "ab") as f:  # an append whose checkpoint.json never came (the server was killed between)
        f.write(b'{"track": "server/compute", "name": "lost", "start"')
    assert [e["name"] for e in load_checkpoint(tmp_path).events] == ["a0", "a1"]
    save_checkpoint(tmp_path, _checkpoint(3))
    assert events.read_bytes().startswith(committed) and b"lost" not in events.read_bytes()
    assert [e["name"] for e in load_checkpoint(tmp_path).events] == ["a0", "a1", "a2"]
    events.write_bytes(committed[:-10])
    with pytest.raises(CheckpointError, match="timeline"):
        load_checkpoint(tmp_path)


def test_a_format_1_checkpoint_is_still_read_without_optimizer_state(tmp_path: Path):
    save_checkpoint(tmp_path, _checkpoint(2))
    state = json.loads((tmp_path / CHECKPOINT_FILE).read_text())
    weights = {"w": torch.full((4,), 7.0)}
    (tmp_path / "old.safetensors").write_bytes(st_save(weights))
    import hashlib

    digest = hashlib.sha256((tmp_path / "old.safetensors").read_bytes()).hexdigest()
    old = {k: state[k] for k in ("rounds_done", "rounds", "samples", "elapsed_s", "dropped", "rejoined", "errors")}
    old |= {"format": 1, "weights": "old.safetensors", "sha256": digest, "config": state["config"]}
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps(old))
    loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded.weights["w"], weights["w"]) and loaded.optimizers == {} and loaded.plan is None


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
    data = weights.read_bytes()
    weights.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))
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


# momentum 0.9 (the default) and no BatchNorm: the resumed run must carry every momentum buffer to end where an
# uninterrupted run ends. 2 iterations an epoch, FedAvg after each: 4 rounds.
EXACT = {"mode": "pipelearn", "epochs": 2, "aggregate_every": 1, "momentum": 0.9}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, small_settings: Any) -> Path:
    """The output directory of the run the interrupted ones are held against."""
    config = RunConfig(**small_settings(tmp_path_factory.mktemp("uninterrupted"), **EXACT)).validate()
    metrics = run_local(config, progress=False)
    assert metrics["resumed_from_round"] is None
    whole = load_checkpoint(config.out)
    assert whole.rounds_done == whole.rounds == 4
    final = load_file(f"{config.out}/model.safetensors")
    assert all(torch.equal(whole.weights[k], v) for k, v in final.items())
    return Path(config.out)


@pytest.fixture(scope="module")
def uninterrupted(reference: Path) -> dict[str, torch.Tensor]:
    """The final model of the run the interrupted ones are held against."""
    return load_file(reference / "model.safetensors")


def _same_model(out: Path, final: dict[str, torch.Tensor]) -> None:
    weights = load_file(f"{out}/model.safetensors")
    assert weights.keys() == final.keys()
    for name, value in final.items():
        torch.testing.assert_close(weights[name], value, atol=1e-6, rtol=0, msg=name)


def _until_checkpoint(out: Path, *processes: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT_FILE).exists():
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.005)


def _killpg(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a launcher with every process it started (its server in it, its devices), at one instant."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _resume(out: Path) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "pipelearn", "run", "--resume", str(out), "--quiet"]
    resumed = subprocess.run(command, timeout=300, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()
    return resumed


def _check_merged(out: Path, done: int) -> dict[str, Any]:
    """The resumed run's results cover the whole run: every round, the first part's timeline and accuracy."""
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_round"] == done and metrics["failed_devices"] == []
    assert [r["round"] for r in metrics["rounds"]] == [0, 1, 2, 3]
    assert all(r["test_accuracy"] is not None for r in metrics["rounds"])  # eval_every 1: the first part's too
    assert len(metrics["epoch_times_s"]) == 2 and all(t > 0 for t in metrics["epoch_times_s"])
    names = [e["name"] for e in json.loads((out / "trace.json").read_text())["traceEvents"]]
    assert "d0.server.T.i0m0" in names and "d1.device.F.i3m2" in names  # the first round's and the last's
    assert load_checkpoint(out).rounds_done == 4
    return metrics


def test_a_launcher_killed_with_sigkill_resumes_to_the_uninterrupted_model_with_momentum(
    small_config, tmp_path, uninterrupted
):
    # a slow uplink (which changes no arithmetic) keeps the run going for a while after its first checkpoint
    out = tmp_path / "interrupted"
    toml = tmp_path / "run.toml"
    toml.write_text(_toml(small_config(**EXACT, up_mbps=2.0, out=str(out))))
    temporary = tmp_path / "tmp"  # the system's temporary directory, as the launcher sees it
    temporary.mkdir()
    environment = {**os.environ, "TMPDIR": str(temporary)}
    command = [sys.executable, "-m", "pipelearn", "run", str(toml), "--quiet"]
    run = subprocess.Popen(command, start_new_session=True, env=environment)
    try:
        _until_checkpoint(out, run)
    finally:
        _killpg(run)
    assert not (out / "metrics.json").exists()
    done = load_checkpoint(out).rounds_done
    assert 1 <= done < 4
    # the throw-away credentials a killed launcher leaves are in the run's directory, for its owner alone
    keys = out / CREDENTIALS_DIR
    assert keys.stat().st_mode & 0o777 == 0o700 and (keys / "device-0.pem").stat().st_mode & 0o777 == 0o600
    assert not list(temporary.iterdir())

    _resume(out)
    _check_merged(out, done)
    _same_model(out, uninterrupted)
    assert not keys.exists()  # the next start removed the old ones, and its own went with its end


def _server(toml_or_resume: list[str], port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pipelearn", "server", *toml_or_resume, "--insecure", "--quiet"]
    return subprocess.Popen([*command, "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)


def _devices(port: int, state: Path) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "pipelearn", "device", "--insecure", "--server", f"127.0.0.1:{port}"]
    return [
        subprocess.Popen([*command, "--id", str(d), "--state-dir", str(state / str(d))], stderr=subprocess.DEVNULL)
        for d in range(2)
    ]


def test_a_server_killed_alone_resumes_with_the_devices_state_to_the_uninterrupted_model(
    small_config, tmp_path, uninterrupted
):
    out, state = tmp_path / "interrupted", tmp_path / "device-disks"
    toml = tmp_path / "run.toml"
    toml.write_text(_toml(small_config(**EXACT, up_mbps=2.0, out=str(out))))
    port = _free_port()
    server = _server([str(toml)], port)
    devices = _devices(port, state)
    try:
        _until_checkpoint(out, server, *devices)
        server.send_signal(signal.SIGKILL)
        server.wait()
        for p in devices:  # they lose the server and give up; their disks keep their state
            assert p.wait(120) != 0
    finally:
        for p in [server, *devices]:
            if p.poll() is None:
                p.kill()
                p.wait()
    done = load_checkpoint(out).rounds_done
    assert 1 <= done < 4
    assert list((state / "0").glob(f"optimizer-*-round{done - 1}.safetensors"))

    port = _free_port()
    server = _server(["--resume", str(out)], port)
    devices = _devices(port, state)
    try:
        assert server.wait(300) == 0
        assert all(p.wait(60) == 0 for p in devices)
    finally:
        for p in [server, *devices]:
            if p.poll() is None:
                p.kill()
                p.wait()
    _check_merged(out, done)
    _same_model(out, uninterrupted)
    names = [e["name"] for e in json.loads((out / "trace.json").read_text())["traceEvents"]]
    assert "d0.optimizer" in names and "d1.optimizer" in names


_SLOW_COMMIT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from pipelearn.runtime import checkpoint
    real, marker = checkpoint.atomic_write, Path(sys.argv[1])

    def atomic_write(path, data):  # the second checkpoint.json stops half-way through its temporary file
        if path.name == "checkpoint.json":
            commits.append(path)
            if len(commits) == 2:
                path.with_name(f".{path.name}.{os.getpid()}.tmp").write_bytes(data[: len(data) // 2])
                marker.touch()
                time.sleep(600)
        real(path, data)

    commits = []
    checkpoint.atomic_write = atomic_write
    from pipelearn.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def test_a_launcher_killed_while_writing_a_checkpoint_resumes_from_the_one_before(
    small_config, tmp_path, uninterrupted
):
    out, marker = tmp_path / "interrupted", tmp_path / "writing"
    toml = tmp_path / "run.toml"
    toml.write_text(_toml(small_config(**EXACT, up_mbps=2.0, out=str(out))))
    command = [sys.executable, "-c", _SLOW_COMMIT, str(marker), "run", str(toml), "--quiet"]
    run = subprocess.Popen(command, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.005)
    finally:
        _killpg(run)
    assert list(out.glob(".checkpoint.json.*.tmp"))  # the write the kill cut short
    assert load_checkpoint(out).rounds_done == 1  # the one before it, whole
    _resume(out)
    _check_merged(out, 1)
    _same_model(out, uninterrupted)
    assert not list(out.glob(".*.tmp"))


def test_a_run_killed_after_its_last_checkpoint_resumes_to_write_its_results(tmp_path, reference, uninterrupted):
    out = tmp_path / "trained"
    shutil.copytree(reference, out)
    for name in ("metrics.json", "trace.json", "model.safetensors", "timeline.png", "accuracy.png"):
        (out / name).unlink(missing_ok=True)  # as if killed once training was over, before the results were written
    _resume(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_round"] == 4 and [r["round"] for r in metrics["rounds"]] == [0, 1, 2, 3]
    assert "d0.server.T.i0m0" in [e["name"] for e in json.loads((out / "trace.json").read_text())["traceEvents"]]
    _same_model(out, uninterrupted)
