"""The global model on the server: the server's replicas of the devices' server parts, the weights devices upload
each round, FedAvg over those that finished it, the optimizer state each device's replica had after the last round the
device finished, and a checkpoint after every aggregation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipelearn.config import RunConfig
from pipelearn.models.parts import device_part, make_model, output_shape, server_part
from pipelearn.plan import RunPlan
from pipelearn.runtime import hardware
from pipelearn.runtime.checkpoint import Checkpoint, CheckpointWriter
from pipelearn.training import (
    carry_momentum,
    fedavg,
    load_optimizer_tensors,
    make_optimizer,
    on_new_weights,
    optimizer_tensors,
    warm_up,
)
from pipelearn.transport.codec import TensorSpec, WireError, check_finite, spec_of
from pipelearn.versions import GradientBank

State = dict[str, torch.Tensor]


@dataclass
class Replica:
    """A server-side model part, its optimizer and its mini-batches' gradients (one per device; one for all in
    sl)."""

    part: nn.Sequential
    optimizer: torch.optim.Optimizer | None
    bank: GradientBank = field(init=False)

    def __post_init__(self) -> None:
        self.bank = GradientBank(self.part)


@dataclass(frozen=True)
class Parts:
    """What the server knows of each device's part: its state's tensors and the shape of one sample's activation."""

    specs: dict[int, dict[str, TensorSpec]]
    activation_shapes: dict[int, tuple[int, ...]]


def device_parts(model: nn.Sequential, plan: RunPlan, input_shape: tuple[int, ...]) -> Parts:
    """Each device's part under the plan, as the server checks what the device sends."""
    parts = {d: device_part(model, setup.split) for d, setup in enumerate(plan.devices)}
    return Parts(
        {d: spec_of(part.state_dict()) for d, part in parts.items()},
        {d: output_shape(part, input_shape) for d, part in parts.items()},
    )


def make_replicas(
    config: RunConfig,
    plan: RunPlan,
    state: State,
    parts: Parts,
    where: torch.device,
    data: tuple[tuple[int, int, int], int],
) -> dict[int, Replica]:
    """The server's part for each device (none in fl; one shared by every device in sl), loaded with `state` and
    warmed up at the sizes training will use; `data` is the data set's (input shape, class count)."""
    replicas: dict[int, Replica] = {}
    if config.mode == "fl":
        return replicas
    shared: Replica | None = None
    warmed: set[tuple[int, ...]] = set()
    for d, setup in enumerate(plan.devices):
        if shared is None or config.mode != "sl":
            model = make_model(config, *data)
            model.load_state_dict(state)
            part = server_part(model, setup.split).train().to(where)
            shared = Replica(part, make_optimizer(part, config))
        replicas[d] = shared
        if parts.activation_shapes[d] not in warmed:
            warm_up(shared.part, config, parts.activation_shapes[d], setup.microbatches)
            warmed.add(parts.activation_shapes[d])
    return replicas


class Aggregator:
    """The global model and the round's uploads; `aggregate` averages them and brings every replica back to it."""

    def __init__(
        self,
        config: RunConfig,
        state: State,
        replicas: dict[int, Replica],
        parts: Parts,
        samples: list[int],
        checkpoint: Callable[[int, State], Checkpoint],
    ) -> None:
        self.config, self.replicas, self.parts, self.samples = config, replicas, parts, samples
        self.global_state = state
        self.checkpoint = checkpoint
        """Makes the checkpoint of the run after a round, from the round and its global model."""
        self.checkpoints = CheckpointWriter(Path(config.out))
        self.uploaded: dict[int, State] = {}
        """The weights each device has sent this round (its part, decoded and checked against its spec)."""
        self.relay: State | None = None
        """sl: the device half the last device sent, which the next device starts from."""
        self.device_rounds: dict[int, int] = {}
        """Per device, the last round whose weights it sent and which was aggregated with them."""
        self.optimizer_states: dict[int, State] = {}
        """Per device, its replica's optimizer state as the round after device_rounds[device] began it."""

    def restore(self, checkpoint: Checkpoint) -> None:
        """Take each replica's optimizer state, and each device's last round, from a checkpoint (which is on disk)."""
        self.checkpoints.written = checkpoint.rounds_done
        self.device_rounds = dict(checkpoint.device_rounds)
        self.optimizer_states = {d: dict(state) for d, state in checkpoint.optimizers.items()}
        for d, state in self.optimizer_states.items():
            if d in self.replicas:
                replica = self.replicas[d]
                load_optimizer_tensors(replica.optimizer, replica.part, state)

    def replan(self, plan: RunPlan, parts: Parts, data: tuple[tuple[int, int, int], int], where: torch.device) -> None:
        """Each device's replica as `plan` splits it, made from the global model where its split moved; what each
        parameter that stays on the server had of its optimizer's state goes with it (training.carry_momentum)."""
        moved = [d for d, setup in enumerate(plan.devices) if parts.specs[d] != self.parts.specs[d]]
        self.parts = parts
        if self.config.mode in ("fl", "sl") or not moved:
            return
        for d in moved:
            model = make_model(self.config, *data)
            model.load_state_dict(self.global_state)
            part = server_part(model, plan.devices[d].split).train().to(where)
            old = self.replicas[d]
            self.replicas[d] = Replica(part, make_optimizer(part, self.config))
            carry_momentum(old.optimizer, old.part, self.replicas[d].optimizer, part)

    def weights_for(self, device: int) -> State:
        """What the server sends a device at a round's start: its part of the global model (sl: the relay)."""
        if self.config.mode == "sl" and self.relay is not None:
            return self.relay
        return {k: self.global_state[k] for k in self.parts.specs[device]}

    def upload(self, device: int, weights: State) -> None:
        """A device's weights at the end of its round."""
        self.uploaded[device] = weights
        if self.config.mode == "sl":
            self.relay = weights

    def aggregate(self, round: int) -> dict[int, WireError]:
        """FedAvg of the devices whose weights of this round arrived, and a checkpoint; return the devices left out
        because their model is not finite."""
        states: dict[int, State] = {}
        refused: dict[int, WireError] = {}
        for d in sorted(self.uploaded):  # only the devices whose weights of this round arrived finished it
            state = (
                {**self.uploaded[d], **hardware.to_cpu(self.replicas[d].part.state_dict())}
                if d in self.replicas
                else self.uploaded[d]
            )
            try:
                check_finite(state, f"device {d}'s model:")  # nothing non-finite reaches the global model
                states[d] = state
            except WireError as exc:
                refused[d] = exc
        if not states:
            raise RuntimeError(f"every device has failed; nothing to aggregate in round {round}")
        self.global_state = fedavg(list(states.values()), [self.samples[d] for d in states])
        self.uploaded.clear()
        for replica in self.replicas.values():  # a dropped device's replica, too, goes back to the global model
            replica.part.load_state_dict({k: self.global_state[k] for k in replica.part.state_dict()})
            on_new_weights(replica.optimizer, self.config)
        for d in states:  # what a device that finished this round resumes or rejoins with
            self.device_rounds[d] = round
            if d in self.replicas and self.config.mode != "sl":
                self.optimizer_states[d] = optimizer_tensors(self.replicas[d].optimizer, self.replicas[d].part)
        return refused

    def save(self, round: int) -> None:
        """Checkpoint the run as it stands after round `round` (its aggregation and any re-plan that followed), once
        the checkpoint of the round before is on disk: so no more than one is ever unwritten
        (device_state.KEEP_DEVICE_ROUNDS)."""
        self.checkpoints.wait_written(round)
        self.checkpoints.submit(self.checkpoint(round, self.global_state))

    def reset(self, device: int) -> int | None:
        """A rejoining device's replica starts with no gradients, and with the optimizer state it had after the last
        round the device finished (none if it finished none); return that round, whose state the device restores."""
        replica = self.replicas.get(device)
        if replica is not None:
            replica.part.zero_grad(set_to_none=True)
            self.replicas[device] = Replica(replica.part, make_optimizer(replica.part, self.config))
            fresh = self.replicas[device]
            load_optimizer_tensors(fresh.optimizer, fresh.part, self.optimizer_states.get(device, {}))
        return self.device_rounds.get(device)

    def final_state(self) -> State:
        """The trained global model: the last aggregate, or in sl the last device half with the server half."""
        if self.config.mode == "sl":
            server_half = hardware.to_cpu(next(iter(self.replicas.values())).part.state_dict())
            return {**self.weights_for(0), **server_half}
        return self.global_state
