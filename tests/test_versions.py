"""Weight versions and gradient banks: a forward a step overtakes keeps its weights, each mini-batch's gradients
reach its own step, and without staleness nothing is copied."""

from __future__ import annotations

import torch
from torch import nn

from pipelearn.schedule import DevicePlan, Resource, build_schedule
from pipelearn.versions import GradientBank, HeldMemory, WeightStash, overtaken


def _lane(staleness: int, iterations: int = 3):  # type: ignore[no-untyped-def]
    schedule = build_schedule("pipelearn", [DevicePlan(2 * iterations, 2, 2)], 2, 1, staleness=staleness)
    return schedule.lane(Resource.DEVICE, 0)


def test_only_a_stale_schedule_overtakes_a_forward():
    assert overtaken(_lane(0)) == set()
    assert overtaken(_lane(1)) == {1, 2}  # the first mini-batch of a round steps before the second's forwards end


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def test_an_overtaken_forward_keeps_its_weights_and_its_gradient_reaches_its_own_step():
    part, reference = _linear(), _linear()
    stash = WeightStash(part, overtaken={1})
    optimizer = torch.optim.SGD(part.parameters(), lr=0.1)
    x0, x1 = torch.randn(4, 3), torch.randn(4, 3)
    out0 = stash.forward(0, x0)  # on the live weights
    out1 = stash.forward(1, x1)  # on a copy of them, as they stand before step 0
    (out0**2).sum().backward()
    stash.settle(0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    assert not torch.equal(part.weight, reference.weight)  # step 0 moved the live weights
    (out1**2).sum().backward()  # step 0 changed nothing of what this backward uses
    stash.settle(1)
    assert stash.held_bytes() == 0
    # by hand: both gradients at the first weights, applied one after the other
    (reference(x0) ** 2).sum().backward()
    g0 = reference.weight.grad.clone()
    reference.zero_grad()
    (reference(x1) ** 2).sum().backward()
    g1 = reference.weight.grad.clone()
    torch.testing.assert_close(part.weight.grad, g1)
    optimizer.step()
    torch.testing.assert_close(part.weight, _linear().weight - 0.1 * (g0 + g1))


def test_a_forward_no_step_overtakes_runs_on_the_part_itself():
    part = _linear()
    stash = WeightStash(part, overtaken=set())
    stash.forward(0, torch.randn(2, 3)).sum().backward()
    assert part.weight.grad is not None and stash.held_bytes() == 0


def test_each_mini_batchs_gradients_reach_its_own_step_whatever_trains_between():
    part, reference = _linear(), _linear()
    bank = GradientBank(part)
    optimizer = torch.optim.SGD(part.parameters(), lr=0.1, momentum=0.9)
    expected = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    xs = [torch.randn(4, 3) for _ in range(3)]

    def gradient(x: torch.Tensor) -> list[torch.Tensor]:
        reference.zero_grad()
        (reference(x) ** 2).sum().backward()
        return [p.grad.clone() for p in reference.parameters()]

    def apply(grads: list[torch.Tensor]) -> None:
        for p, g in zip(reference.parameters(), grads, strict=True):
            p.grad = g
        expected.step()

    # by hand, delayed by one: g0 and g1 at the first weights, g2 after step 0
    g0, g1 = gradient(xs[0]), gradient(xs[1])
    apply(g0)
    g2 = gradient(xs[2])
    apply(g1)
    apply(g2)
    # the stale server's order: T0, T1, S0, T2, S1, S2
    for i in (0, 1):
        bank.before_train(i)
        (part(xs[i]) ** 2).sum().backward()
    bank.step(0, optimizer)
    bank.before_train(2)
    (part(xs[2]) ** 2).sum().backward()
    bank.step(1, optimizer)
    bank.step(2, optimizer)
    for p, q in zip(part.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_held_memory_counts_what_forwards_in_flight_saved():
    part = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    memory = HeldMemory(part)
    x = torch.randn(16, 8, requires_grad=True)
    with memory.holding((0, 0), 0):
        first = part(x)
    once = memory.peak_bytes
    with memory.holding((0, 1), 100):
        part(x)
    assert once > 0 and memory.peak_bytes == 2 * once + 100
    memory.release((0, 0))
    first.sum().backward()
    with memory.holding((1, 0), 0):
        part(x)
    assert memory.peak_bytes == 2 * once + 100  # a peak is not forgotten
