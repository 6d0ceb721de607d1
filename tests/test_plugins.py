"""Plug-ins resolve from MODULE:FUNCTION or FILE.py:FUNCTION, and each way one can be wrong gets its own error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from pipelearn.data import load_dataset
from pipelearn.data.registry import dataset_info
from pipelearn.models import ModelError, build_model, split
from pipelearn.plugins import PluginError, device_flags, load, parse, same, spec_for

TESTS = Path(__file__).parent


def test_a_model_plugin_builds_split_points_at_its_block_boundaries(plugin_nets: str) -> None:
    model = build_model(f"{plugin_nets}:tiny_net", (1, 12, 12), 4)
    assert len(model) == 7
    assert list(model.state_dict()) == ["0.weight", "0.bias", "4.weight", "4.bias", "6.weight", "6.bias"]
    device, server = split(model, 3)
    x = torch.randn(5, 1, 12, 12)
    assert torch.equal(server(device(x)), model(x))
    as_list = build_model(f"{plugin_nets}:tiny_blocks", (1, 12, 12), 4)
    assert [type(b) for b in as_list] == [type(b) for b in model]


def test_a_plugin_file_imports_without_the_path(tmp_path: Path) -> None:
    source = tmp_path / "my_nets.py"
    source.write_text(
        "from torch import nn\n"
        "def net(input_shape, num_classes):\n"
        "    return [nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes)]\n"
    )
    model = build_model(f"{source}:net", (1, 3, 3), 2)
    assert model(torch.zeros(4, 1, 3, 3)).shape == (4, 2)
    assert load(f"{source}:net", "model") is load(f"{source}:net", "model")  # imported once


def test_a_data_plugin_returns_both_splits(plugin_nets: str) -> None:
    train = load_dataset(f"{plugin_nets}:tiny_data", "train")
    test = load_dataset(f"{plugin_nets}:tiny_data", "test")
    assert (len(train), len(test), train.input_shape, train.num_classes) == (240, 120, (1, 12, 12), 4)
    assert dataset_info(f"{plugin_nets}:tiny_data") == ((1, 12, 12), 4)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("no_such_module_here:net", "no module named 'no_such_module_here'"),
        ("{nets}:missing", "has no 'missing'.*tiny_net"),
        ("{nets}:NOT_A_FUNCTION", "is a int, not a function"),
        ("{nets}:not_splittable", "returned a Residual, which cannot be split into blocks"),
        ("{nets}:returns_none", "returned None, which cannot be split"),
        ("{nets}:no_blocks", "returned no blocks"),
        ("{nets}:raises", "raised RuntimeError .*this network needs a GPU"),
        ("{nets}", "is not MODULE:FUNCTION"),
        ("{nets}:two words", "is not MODULE:FUNCTION"),
        ("/nowhere/nets.py:net", "the file /nowhere/nets.py does not exist"),
    ],
)
def test_each_bad_model_plugin_gets_its_error(plugin_nets: str, spec: str, words: str) -> None:
    spec = spec.format(nets=plugin_nets)
    with pytest.raises(PluginError, match=words):
        build_model(spec if ":" in spec else spec + ":", (1, 12, 12), 4)


def test_a_module_that_fails_to_import_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_nets.py").write_text("import torch\nraise RuntimeError('half-written module')\n")
    (tmp_path / "needs_more.py").write_text("import not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="module 'broken_nets' failed to import: RuntimeError: half-written"):
        build_model("broken_nets:net", (1, 12, 12), 4)
    with pytest.raises(PluginError, match="module 'needs_more' failed to import: No module named 'not_installed"):
        build_model("needs_more:net", (1, 12, 12), 4)
    with pytest.raises(PluginError, match=r"broken_nets\.py failed to import: RuntimeError"):
        build_model(f"{tmp_path / 'broken_nets.py'}:net", (1, 12, 12), 4)
    assert "broken_nets" not in sys.modules


@pytest.mark.parametrize(
    ("function", "words"),
    [
        ("mnist_sized_net", r"does not fit the data set's samples of shape \(1, 12, 12\): block 1 \(Linear\)"),
        ("too_many_logits", "outputs shape \\(5,\\).*4 classes, so the last block must output 4 logits"),
    ],
)
def test_a_data_set_that_does_not_fit_the_model_is_named(plugin_nets: str, function: str, words: str) -> None:
    train = load_dataset(f"{plugin_nets}:tiny_data", "train")
    with pytest.raises(ModelError, match=words):
        build_model(f"{plugin_nets}:{function}", train.input_shape, train.num_classes)


@pytest.mark.parametrize(
    ("function", "words"),
    [
        ("data_not_a_pair", r"returned a list; it must return \(train, test\)"),
        ("data_disagreeing", r"training split holds samples of shape \(1, 12, 12\).*test split \(1, 10, 10\)"),
        ("raises", "raised TypeError"),
    ],
)
def test_each_bad_data_plugin_gets_its_error(plugin_nets: str, function: str, words: str) -> None:
    with pytest.raises(PluginError, match=words):
        load_dataset(f"{plugin_nets}:{function}", "train")


def test_a_function_becomes_the_name_other_processes_import(plugin_nets: str) -> None:
    import plugin_nets as nets

    assert spec_for(nets.tiny_net, "model") == "plugin_nets:tiny_net"
    assert spec_for("vgg5", "model") == "vgg5"
    with pytest.raises(PluginError, match="lambda or defined inside another function"):
        spec_for(lambda shape, classes: None, "model")
    with pytest.raises(PluginError, match="pass the function that builds it"):
        spec_for(nets.tiny_net((1, 12, 12), 4), "model")


def test_names_of_the_same_plugin_and_the_flags_a_device_gets() -> None:
    assert parse("a.b:c.d") == ("a.b", "c.d")
    assert same("/srv/run/nets.py:net", "/home/me/nets.py:net")
    assert not same("/srv/nets.py:net", "/srv/nets.py:other")
    assert not same("nets:net", "other_nets:net")
    assert device_flags("nets:net", "mnist") == ["--model", "nets:net"]
    assert device_flags("vgg5", "data.py:load") == ["--dataset", "data.py:load"]
