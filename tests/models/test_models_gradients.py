"""Split training over micro-batches gives the same gradients as unsplit full-batch training."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pipelearn.models import build_model, num_blocks, split

CASES = {"vgg5": (1, 28, 28), "resnet18": (3, 16, 16)}
BATCH = 8


def make_case(name: str) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    shape = CASES[name]
    model = build_model(name, shape, 10, batchnorm=False)
    x = torch.randn(BATCH, *shape)
    y = torch.randint(0, 10, (BATCH,))
    return model, x, y


def full_batch_grads(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def split_micro_batch_grads(
    model: nn.Sequential, p: int, n_micro: int, x: torch.Tensor, y: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Accumulate gradients as the runtime does: device forward, send, server step, send grad back."""
    device, server = split(model, p)
    model.zero_grad(set_to_none=True)
    for xb, yb in zip(x.chunk(n_micro), y.chunk(n_micro), strict=True):
        activation = device(xb)
        received = activation.detach().requires_grad_()
        loss = F.cross_entropy(server(received), yb) / n_micro
        loss.backward()
        assert received.grad is not None
        if activation.requires_grad:
            activation.backward(received.grad)

    def grads(part: nn.Sequential) -> dict[str, torch.Tensor]:
        return {k: q.grad.clone() for k, q in part.named_parameters() if q.grad is not None}

    return grads(device), grads(server)


@pytest.mark.parametrize("name", ["vgg5", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_split_micro_batch_gradients_match_full_batch(name: str) -> None:
    model, x, y = make_case(name)
    expected = full_batch_grads(model, x, y)
    assert expected.keys() == dict(model.named_parameters()).keys()
    blocks = num_blocks(model)
    for p in sorted({0, 1, 2, blocks - 1, blocks}):
        for n_micro in (1, 2, 4):
            device_grads, server_grads = split_micro_batch_grads(model, p, n_micro, x, y)
            assert device_grads.keys().isdisjoint(server_grads.keys())
            assert {**device_grads, **server_grads}.keys() == expected.keys()
            where = f"p={p} N={n_micro}"
            for key, grad in {**device_grads, **server_grads}.items():
                torch.testing.assert_close(
                    grad, expected[key], atol=1e-5, rtol=1e-4, msg=lambda m, w=f"{where} {key}": f"{w}: {m}"
                )
