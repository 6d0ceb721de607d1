"""Nothing a user made is destroyed by a later command: each run gets a directory of its own by default, another run's
results are refused unless replaced on purpose, and resuming a finished run says so and touches nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelearn.cli import main
from pipelearn.config import ConfigError, RunConfig
from pipelearn.metrics.outdir import claim

pytestmark = pytest.mark.slow

SMALL = "--dataset synthetic --no-batchnorm --devices 2 --epochs 1 --samples-per-device 40 --batch-size 20"
SMALL += " --network unlimited --test-samples 100 --split 2 --microbatches 2 --quiet"


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root`, by path: its bytes and its modification time."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_repeated_runs_each_get_a_directory_and_a_finished_run_is_not_resumed(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *SMALL.split(), "--mode", "sfl"]) == 0
    first = Path("runs/latest").resolve()
    assert main(["run", *SMALL.split(), "--mode", "fl"]) == 0
    second = Path("runs/latest").resolve()
    assert Path("runs/latest").is_symlink() and first != second and first.parent == second.parent
    assert json.loads((first / "metrics.json").read_text())["mode"] == "sfl"  # the first run's results stand
    assert json.loads((second / "metrics.json").read_text())["config"]["out"] == str(Path("runs") / second.name)
    capsys.readouterr()

    before = _files(tmp_path / "runs")
    assert main(["run", "--resume", "runs/latest"]) == 2
    err = capsys.readouterr().err
    assert "finished" in err and "nothing was changed" in err
    assert _files(tmp_path / "runs") == before  # not a byte nor a modification time
    assert main(["report", "runs/latest"]) == 0


def test_a_directory_with_another_runs_results_is_refused_unless_replaced(tmp_path: Path, capsys):
    out = tmp_path / "mine"
    assert main(["run", *SMALL.split(), "--mode", "fl", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("the user's own")
    before = _files(out)
    capsys.readouterr()
    assert main(["run", *SMALL.split(), "--mode", "sfl", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds the results of another run" in err and "--out" in err and "--replace" in err
    assert _files(out) == before

    assert main(["run", *SMALL.split(), "--mode", "sfl", "--out", str(out), "--replace"]) == 0
    assert json.loads((out / "metrics.json").read_text())["mode"] == "sfl"
    assert json.loads((out / "checkpoint.json").read_text())["config"]["mode"] == "sfl"  # no mix of two runs
    assert (out / "notes.txt").read_text() == "the user's own"


def test_an_unfinished_run_is_named_as_one_to_resume_and_replace_clears_only_a_runs_files(tmp_path: Path):
    out = tmp_path / "stopped"
    out.mkdir()
    for name in ("checkpoint.json", "checkpoint-round2.safetensors", "checkpoint-events.jsonl", ".x.123.tmp"):
        (out / name).write_text("{}")
    (out / ".credentials").mkdir()
    (out / "mine.csv").write_text("1,2")
    with pytest.raises(ConfigError, match=f"--resume {out}"):
        claim(RunConfig(out=str(out)))
    assert claim(RunConfig(out=str(out), replace=True)).out == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["mine.csv"]


def test_resuming_clears_a_killed_launchers_credentials_but_refuses_a_finished_run(tmp_path: Path):
    out = tmp_path / "run"
    (out / ".credentials").mkdir(parents=True)
    (out / ".checkpoint.json.77.tmp").write_text("half")
    (out / "checkpoint.json").write_text("{}")
    claim(RunConfig(out=str(out)), resuming=True)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.json"]
    (out / "metrics.json").write_text("{}")
    stamp = os.stat(out / "metrics.json").st_mtime_ns
    with pytest.raises(ValueError, match="finished"):
        claim(RunConfig(out=str(out)), resuming=True)
    assert os.stat(out / "metrics.json").st_mtime_ns == stamp


def test_runs_latest_left_by_an_earlier_version_is_left_as_it_is(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    old = Path("runs/latest")
    old.mkdir(parents=True)
    (old / "metrics.json").write_text("{}")
    config = claim(RunConfig())
    assert Path(config.out).parent == old.parent and Path(config.out) != old and not old.is_symlink()
    assert (old / "metrics.json").read_text() == "{}" and "left as it is" in capsys.readouterr().err
