"""The single-process reference trainer learns and writes its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from pipelearn.config import RunConfig
from pipelearn.models.parts import make_model
from pipelearn.trainer import train_local


@pytest.mark.slow
def test_train_local_learns_and_writes_metrics_and_model(tmp_path: Path, capsys):
    config = RunConfig(
        dataset="synthetic",
        devices=1,
        samples_per_device=400,
        epochs=2,
        batch_size=50,
        test_samples=200,
        out=str(tmp_path),
    ).validate()
    metrics = train_local(config, progress=True)
    err = capsys.readouterr().err  # no terminal: each epoch's bar is plain lines, never a carriage-return frame
    assert "\r" not in err and "pipelearn: epoch 2/2: 8/8 batch (loss=" in err.splitlines()[-1]
    assert metrics["train_loss"][1] < metrics["train_loss"][0]
    assert metrics["test_accuracy"] > 0.5
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    expected = make_model(config, (1, 28, 28), 10).state_dict().keys()
    assert load_file(str(tmp_path / "model.safetensors")).keys() == expected
