"""Tests of split, as_blocks and num_blocks on user models, lists, and bad split points."""

from __future__ import annotations

import doctest
from collections import OrderedDict

import pytest
import torch
from torch import nn

import pipelearn.models.splitting as splitting
from pipelearn.models import as_blocks, build_model, num_blocks, split


def user_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, 3, padding=1),
            act=nn.ReLU(),
            flat=nn.Flatten(),
            fc=nn.Linear(4 * 8 * 8, 5),
        )
    )


def test_split_user_sequential_with_named_children() -> None:
    net = user_model()
    x = torch.randn(2, 3, 8, 8)
    blocks = as_blocks(net)
    assert list(blocks._modules) == ["0", "1", "2", "3"]
    assert [blocks[i] is net[i] for i in range(4)] == [True] * 4
    assert num_blocks(net) == 4
    for p in range(5):
        device, server = split(net, p)
        assert list(device._modules) == [str(i) for i in range(p)]
        assert list(server._modules) == [str(i) for i in range(p, 4)]
        assert torch.equal(server(device(x)), net(x))
        assert {**device.state_dict(), **server.state_dict()}.keys() == blocks.state_dict().keys()
    device, server = split(net, 2)
    assert list(device.state_dict()) == ["0.weight", "0.bias"]
    assert list(server.state_dict()) == ["3.weight", "3.bias"]


def test_split_shares_parameters_with_model() -> None:
    net = user_model()
    device, _ = split(net, 1)
    with torch.no_grad():
        device[0].weight.fill_(1.5)
    assert torch.all(net.conv.weight == 1.5)


def test_split_list_and_module_list() -> None:
    layers = list(user_model())
    x = torch.randn(2, 3, 8, 8)
    expected = nn.Sequential(*layers)(x)
    for model in (layers, nn.ModuleList(layers)):
        assert num_blocks(model) == 4
        device, server = split(model, 3)
        assert device[2] is layers[2] and server[0] is layers[3]
        assert list(server._modules) == ["3"]
        assert torch.equal(server(device(x)), expected)


def test_zoo_model_is_its_own_blocks() -> None:
    model = build_model("vgg5", (1, 28, 28), 10)
    assert as_blocks(model) is model


def test_empty_parts_are_identity() -> None:
    net = user_model()
    x = torch.randn(2, 3, 8, 8)
    device, server = split(net, 0)
    assert len(device) == 0 and torch.equal(device(x), x)
    device, server = split(net, 4)
    assert len(server) == 0
    out = device(x)
    assert server(out) is out


def test_split_keeps_training_flag_without_changing_children() -> None:
    net = user_model().eval()
    net.fc.train()
    device, server = split(net, 2)
    assert not device.training and not server.training
    assert net.fc.training and not net.conv.training


@pytest.mark.parametrize("p", [-1, 5, 100])
def test_out_of_range_split_point(p: int) -> None:
    with pytest.raises(ValueError, match=r"valid range is 0\.\.4"):
        split(user_model(), p)


def test_bad_inputs() -> None:
    with pytest.raises(TypeError):
        split(user_model(), 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        split(nn.Linear(2, 2), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        as_blocks([nn.ReLU(), "relu"])  # type: ignore[list-item]


def test_docstring_example() -> None:
    assert doctest.testmod(splitting, raise_on_error=True).attempted > 0
