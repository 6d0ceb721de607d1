"""The single-process trainer checks the configuration against its data set's sizes before it trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelearn.cli import main
from pipelearn.config import ConfigError


def test_more_test_samples_than_the_test_split_are_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train-local", "--dataset", "synthetic", "--test-samples", "20000", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        "pipelearn: error: --test-samples is 20000, more than the 500 samples of synthetic's test split; give at "
        "most 500, or leave it out for the whole split\n"
    )
    assert not (tmp_path / "metrics.json").exists()


def test_the_error_outside_the_command_line_names_the_config_key(tmp_path: Path) -> None:
    from pipelearn.api import train_local

    with pytest.raises(ConfigError, match="config key 'test_samples' is 20000"):
        train_local(dataset="synthetic", devices=1, test_samples=20000, out=str(tmp_path))
