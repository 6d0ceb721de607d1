"""`pipelearn plan`: JSON and table output, saved and reloaded profiles, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelearn.cli import main
from pipelearn.planner.command import compact

FLAGS = ["--dataset", "synthetic", "--no-batchnorm", "--devices", "2", "--batch-size", "20", "--network", "wifi"]
FLAGS += ["--samples-per-device", "60", "--epochs", "1"]


@pytest.mark.slow
def test_plan_prints_json_and_saves_a_profile_it_can_reuse(tmp_path: Path, capsys):
    profile = tmp_path / "profile.json"
    assert main(["plan", *FLAGS, "--json", "--profile-out", str(profile)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"split", "microbatches", "predicted_epoch_s", "bound_s", "host_cores", "candidates"} | {
        "staleness_epoch_s"
    }
    fresh, stale = out["staleness_epoch_s"]  # the choice simulated with staleness 0 and 1, never chosen by itself
    assert 0 < stale < fresh * 1.05  # fewer dependencies: not slower, but for a list schedule's rare anomaly
    assert len(out["split"]) == len(out["microbatches"]) == 2
    assert all(0 <= s <= 5 for s in out["split"]) and all(1 <= n <= 10 for n in out["microbatches"])
    best = out["candidates"][0]
    assert (best["split"], best["microbatches"]) == (out["split"], out["microbatches"])
    assert best["predicted_epoch_s"] == out["predicted_epoch_s"] and set(best["idle_s"]) >= {"server", "uplink"}
    assert json.loads(profile.read_text())["model"] == "vgg5"

    assert main(["plan", *FLAGS, "--profile-in", str(profile), "--split", "3", "--mode", "sfl"]) == 0
    table = capsys.readouterr().out
    assert f"profile: {profile}" in table and "choice (sfl, 2 devices): split 3, micro-batches 1" in table
    assert "with staleness 1 (changes what is computed, so the planner never chooses it): predicted epoch" in table

    for cores, recorded in (("off", None), ("1.5", 1.5)):
        assert main(["plan", *FLAGS, "--profile-in", str(profile), "--host-cores", cores, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["host_cores"] == recorded

    assert main(["plan", *FLAGS, "--profile-in", str(profile), "--model", "vgg8"]) == 2
    assert "was made for vgg5" in capsys.readouterr().err


def test_plan_names_a_run_without_metrics(tmp_path: Path, capsys):
    assert main(["plan", *FLAGS, "--compare", str(tmp_path)]) == 2
    assert "metrics.json does not exist" in capsys.readouterr().err


def test_compact_lists():
    assert compact([2, 2, 2]) == "2"
    assert compact([2, 1, 2]) == "2,1,2"
    assert compact([2] * 6 + [1] * 4) == "2 x6, 1 x4"


@pytest.mark.slow
def test_plan_under_compression_predicts_a_shorter_epoch_and_keeps_the_codec_timings(tmp_path: Path, capsys):
    flags = [*FLAGS, "--network", "4g", "--json"]  # the later --network wins
    plain, compressed = tmp_path / "plain.json", tmp_path / "int8.json"
    assert main(["plan", *flags, "--profile-out", str(plain)]) == 0
    none = json.loads(capsys.readouterr().out)
    compress = ["--compress", "int8", "--profile-in", str(plain), "--profile-out", str(compressed)]
    assert main(["plan", *flags, *compress]) == 0
    int8 = json.loads(capsys.readouterr().out)
    assert int8["predicted_epoch_s"] < none["predicted_epoch_s"]
    assert json.loads(plain.read_text())["device"]["compression"] == {}
    assert set(json.loads(compressed.read_text())["device"]["compression"]) == {"int8"}  # measured, then saved
