"""Tests of the model zoo: shapes, block structure, and exact recomposition after every split."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from pipelearn.models import MODEL_NAMES, build_model, canonical_model_name, num_blocks, split

SHAPES = [((1, 28, 28), 10), ((3, 32, 32), 100)]
LARGE = {"resnet50", "vgg11", "vgg16", "mobilenetv3-large"}
"""The zoo's largest models: seconds a test to build and run, so in the slow tier."""
BY_COST = [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in MODEL_NAMES]
SPLITS_BY_COST = [n if n in ("vgg5", "vgg8") else pytest.param(n, marks=pytest.mark.slow) for n in MODEL_NAMES]
"""Running every split of a model costs seconds for all but the smallest two."""
BLOCK_COUNTS = {
    "vgg5": 5,
    "vgg8": 8,
    "vgg11": 11,
    "vgg16": 16,
    "resnet18": 10,
    "resnet50": 18,
    "mobilenetv3-small": 15,
    "mobilenetv3-large": 19,
}


@functools.cache
def zoo_model(name: str, shape: tuple[int, int, int], classes: int) -> nn.Sequential:
    """Return a cached eval-mode zoo model (tests must not modify it)."""
    torch.manual_seed(0)
    return build_model(name, shape, classes).eval()


def test_block_counts_cover_all_names() -> None:
    assert tuple(BLOCK_COUNTS) == MODEL_NAMES


@pytest.mark.parametrize(("shape", "classes"), SHAPES)
@pytest.mark.parametrize("name", BY_COST)
def test_output_shape_and_blocks(name: str, shape: tuple[int, int, int], classes: int) -> None:
    model = zoo_model(name, shape, classes)
    assert isinstance(model, nn.Sequential)
    assert list(model._modules) == [str(i) for i in range(BLOCK_COUNTS[name])]
    assert num_blocks(model) == BLOCK_COUNTS[name]
    torch.manual_seed(1)
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("shape", "classes"), SHAPES)
@pytest.mark.parametrize("name", SPLITS_BY_COST)
def test_every_split_recomposes_exactly(name: str, shape: tuple[int, int, int], classes: int) -> None:
    model = zoo_model(name, shape, classes)
    torch.manual_seed(2)
    x = torch.randn(2, *shape)
    full_keys = list(model.state_dict())
    with torch.no_grad():
        expected = model(x)
        for p in range(num_blocks(model) + 1):
            device, server = split(model, p)
            assert len(device) == p and len(server) == len(model) - p
            assert all(device[i] is model[i] for i in range(p))
            assert all(server[i] is model[p + i] for i in range(len(model) - p))
            assert list(device.state_dict()) + list(server.state_dict()) == full_keys
            assert torch.equal(server(device(x)), expected), f"p={p}"


@pytest.mark.parametrize("name", BY_COST)
def test_no_batchnorm_option(name: str) -> None:
    model = build_model(name, (3, 32, 32), 10, batchnorm=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with_bn = zoo_model(name, (3, 32, 32), 100)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert len(model) == BLOCK_COUNTS[name]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_dropout_only_in_vgg11_and_vgg16_after_relu(name: str) -> None:
    model = zoo_model(name, (1, 28, 28), 10)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    if name not in ("vgg11", "vgg16"):
        assert not dropouts
        return
    assert len(dropouts) == 2
    for block in list(model)[-3:-1]:
        kinds = [type(m) for m in block]
        assert kinds[-3:] == [nn.Linear, nn.ReLU, nn.Dropout]
    assert not any(isinstance(m, nn.Dropout) for m in model[-1])


def test_first_dense_block_flattens() -> None:
    model = zoo_model("vgg5", (1, 28, 28), 10)
    assert isinstance(model[3][0], nn.Flatten)
    assert model[3][1].in_features == 64 * 7 * 7
    assert model[3][1].out_features == 128
    assert model[4][0].in_features == 128


def test_vgg_skips_pools_below_one_pixel() -> None:
    # 28 px: 28 → 14 → 7 → 3 → 1, and the fifth pool is skipped.
    model = zoo_model("vgg11", (1, 28, 28), 10)
    pools = sum(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert pools == 4
    assert model[8][1].in_features == 512
    tiny = build_model("vgg16", (3, 4, 4), 5)
    assert tiny(torch.randn(2, 3, 4, 4)).shape == (2, 5)


def test_dummy_forward_leaves_batchnorm_statistics_alone() -> None:
    model = build_model("vgg5", (1, 28, 28), 10)
    assert model.training
    bn = model[0][1]
    assert isinstance(bn, nn.BatchNorm2d)
    assert int(bn.num_batches_tracked) == 0
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("VGG16", "vgg16"),
        ("ResNet50", "resnet50"),
        ("mobilenetv3_small", "mobilenetv3-small"),
        ("MobileNetV3-Large", "mobilenetv3-large"),
        ("mobilenet_v3_large", "mobilenetv3-large"),
    ],
)
def test_name_aliases(alias: str, name: str) -> None:
    assert canonical_model_name(alias) == name


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'alexnet'.*vgg5.*mobilenetv3-large"):
        build_model("alexnet", (3, 32, 32), 10)


@pytest.mark.parametrize(("shape", "classes"), [((3, 32), 10), ((3, 0, 32), 10), ((3, 32, 32), 0)])
def test_bad_shape_or_classes(shape: tuple[int, int, int], classes: int) -> None:
    with pytest.raises(ValueError):
        build_model("vgg5", shape, classes)


@pytest.mark.parametrize("name", BY_COST)
def test_odd_input_shape(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (2, 20, 12), 7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 2, 20, 12)).shape == (2, 7)
