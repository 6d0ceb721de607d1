"""A device's own optimizer state: written each round, the last three kept, read back only as the run and round
that the server names, with the random state it had."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelearn.runtime.checkpoint import CheckpointError
from pipelearn.runtime.device_state import device_state_file, load_device_state, save_device_state
from pipelearn.training import load_optimizer_tensors, optimizer_tensors


def test_a_device_keeps_its_last_three_rounds_and_takes_back_the_one_named(tmp_path: Path):
    for r in range(5):
        save_device_state(tmp_path, "ab12", 1, r, {"0.weight/momentum_buffer": torch.full((3,), float(r))})
    save_device_state(tmp_path, "ff00", 1, 0, {})  # another run's, in the same directory, is left alone
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == [f"optimizer-ab12-round{r}.safetensors" for r in (2, 3, 4)] + ["optimizer-ff00-round0.safetensors"]
    torch.manual_seed(7)
    save_device_state(tmp_path, "ab12", 1, 5, {"0.weight/momentum_buffer": torch.full((3,), 5.0)})
    expected = torch.rand(4)  # what the random stream gives after the state of round 5 was written
    torch.manual_seed(99)
    state = load_device_state(tmp_path, "ab12", 1, 5)
    assert torch.equal(state["0.weight/momentum_buffer"], torch.full((3,), 5.0))
    assert torch.equal(torch.rand(4), expected)
    with pytest.raises(CheckpointError, match="missing"):
        load_device_state(tmp_path, "ab12", 1, 1)  # pruned
    device_state_file(tmp_path, "ab12", 4).rename(device_state_file(tmp_path, "ab12", 6))
    with pytest.raises(CheckpointError, match="not of"):
        load_device_state(tmp_path, "ab12", 1, 6)  # a file named for round 6 that holds round 4's state
    with pytest.raises(CheckpointError, match="not of"):
        load_device_state(tmp_path, "ab12", 0, 5)  # device 1's, not device 0's


def test_optimizer_state_goes_by_parameter_name_and_skips_what_the_part_lacks():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    state = optimizer_tensors(optimizer, model)
    assert sorted(state) == ["0.bias/momentum_buffer", "0.weight/momentum_buffer", "1.bias/momentum_buffer",
                             "1.weight/momentum_buffer"]  # fmt: skip
    part = torch.nn.Sequential(model[0])  # the first block only, as after a re-plan moved the split
    fresh = torch.optim.SGD(part.parameters(), lr=0.1, momentum=0.9)
    load_optimizer_tensors(fresh, part, state)
    assert torch.equal(fresh.state[part[0].weight]["momentum_buffer"], state["0.weight/momentum_buffer"])
    with pytest.raises(ValueError, match="shape"):
        load_optimizer_tensors(fresh, part, {"0.weight/momentum_buffer": torch.zeros(5)})
    assert torch.equal(fresh.state[part[0].weight]["momentum_buffer"], state["0.weight/momentum_buffer"])  # as it was
