"""The Python API: a run configured and started from Python, with a model function and data set objects."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest

import pipelearn
from pipelearn.data import synthetic_dataset


@pytest.mark.slow
def test_run_trains_a_function_on_data_objects_and_returns_the_metrics(
    plugin_nets: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import plugin_nets as nets

    config = pipelearn.RunConfig(
        mode="pipelearn",
        devices=2,
        network="unlimited",
        device_slowdown=1.0,
        split=3,
        microbatches=2,
        epochs=2,
        server_device="cpu",  # "auto" is a GPU where torch sees one
    )
    train = synthetic_dataset(120, (1, 12, 12), 4, seed=5, split="train")
    test = synthetic_dataset(80, (1, 12, 12), 4, seed=5, split="test")
    monkeypatch.setattr(logging.getLogger("pipelearn"), "handlers", [])  # as a program that configured no logging
    metrics = pipelearn.run(
        config, model=nets.tiny_net, train=train, test=test, samples_per_device=60, batch_size=20, out=str(tmp_path)
    )
    assert metrics["model"] == "plugin_nets:tiny_net" and metrics["dataset"] == "saved"
    assert metrics["server_device"] == "cpu"
    assert metrics["failed_devices"] == [] and metrics["microbatches"] == [2, 2]
    assert metrics["train_loss"][1] < metrics["train_loss"][0]
    assert 0 <= metrics["test_accuracy"] <= 1
    assert (tmp_path / "metrics.json").exists()
    assert capfd.readouterr() == ("", "")  # prints nothing unless asked


def test_bad_arguments_are_named() -> None:
    with pytest.raises(pipelearn.ConfigError, match=r"unknown setting.*epoch\b"):
        pipelearn.configure(epoch=3)
    with pytest.raises(pipelearn.ConfigError, match="config key 'epochs' is 0"):
        pipelearn.configure(epochs=0)
    train = synthetic_dataset(10, (1, 12, 12), 4)
    with pytest.raises(pipelearn.ConfigError, match="pass train and test together"):
        pipelearn.run(train=train)
    with pytest.raises(pipelearn.ConfigError, match="either dataset or train and test"):
        pipelearn.run(dataset="mnist", train=train, test=train)
    with pytest.raises(pipelearn.PluginError, match="pass the function that builds it"):
        pipelearn.run(model=pipelearn.build_model("vgg5", (1, 28, 28), 10))


def test_a_function_from_an_interactive_session_gets_a_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    session = types.ModuleType("__main__")  # a notebook's or the REPL's: no file

    def net(input_shape: tuple[int, int, int], num_classes: int) -> None: ...

    net.__module__, net.__qualname__ = "__main__", "net"
    monkeypatch.setitem(sys.modules, "__main__", session)
    with pytest.raises(pipelearn.PluginError, match=r"interactive session.*put it in a \.py file"):
        pipelearn.run(model=net)


def test_a_script_that_starts_a_run_when_imported_is_told_to_guard_it(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import pipelearn\nfrom torch import nn\n"
        "def net(input_shape, num_classes):\n    return [nn.Flatten(), nn.LazyLinear(num_classes)]\n"
        "pipelearn.run(model=net)\n"
    )
    with pytest.raises(pipelearn.PluginError, match=r'starts a run when it is imported.*if __name__ == "__main__"'):
        pipelearn.build_model(f"{script}:net", (1, 4, 4), 2)
