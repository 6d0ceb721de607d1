"""A device: joins the server, loads its own data, and executes its lane of the schedule."""

from __future__ import annotations

import bisect
import json
import logging
import resource
import time
from pathlib import Path

import torch

from pipelearn.config import RunConfig
from pipelearn.data.dealing import DeviceBatches
from pipelearn.events import Recorder, compute_track, link_track, now
from pipelearn.models.parts import device_part
from pipelearn.plan import RunPlan, schedule_for
from pipelearn.privacy import PrivateSteps, dp_enabled
from pipelearn.runtime.checkpoint import CheckpointError
from pipelearn.runtime.checks import (
    Begin,
    check_replan,
)
from pipelearn.runtime.device_state import load_device_state, save_device_state
from pipelearn.schedule import Action, Op, Resource, Schedule, splice
from pipelearn.training import (
    carry_momentum,
    load_optimizer_tensors,
    make_optimizer,
    on_new_weights,
    optimizer_tensors,
    scaled_loss,
)
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.channel import channel_for
from pipelearn.transport.codec import spec_of
from pipelearn.transport.inbox import Inbox, RunOver
from pipelearn.transport.link import Outbox
from pipelearn.versions import HeldMemory, WeightStash, overtaken

log = logging.getLogger("pipelearn.device")


class DeviceWorker:
    """Executes one device's compute lane: forward, backward, local training, steps and weight exchange; follows
    the plan that each round's weights come with (a re-planned run moves the device's split at a round's start)."""

    def __init__(
        self,
        config: RunConfig,
        plan: RunPlan,
        device: int,
        batches: DeviceBatches,
        schedule: Schedule,
        samples: list[int],
        whole: torch.nn.Sequential,
        outbox: Outbox,
        inbox: Inbox,
        recorder: Recorder,
        compute: torch.device | None = None,
        first_round: int = 0,
        origin: float | None = None,
        state_dir: Path | None = None,
        begin: Begin | None = None,
    ) -> None:
        self.config, self.plan, self.device, self.batches, self.schedule = config, plan, device, batches, schedule
        self.samples = samples
        """Every device's training samples, which the schedule is built from."""
        self.whole = whole
        """The whole model, whose first blocks are this device's part (and others' after a re-plan)."""
        self.compute = compute or torch.device("cpu")
        self.part = device_part(whole, schedule.setup(device, first_round).split).to(self.compute).train()
        self.optimizer = make_optimizer(self.part, config)
        self.privacy = PrivateSteps(config, device, samples, schedule, first_round) if dp_enabled(config) else None
        """DP-SGD of this device's part, where the run asks for it."""
        if self.privacy is not None:
            self.optimizer = self.privacy.wrap(self.part, self.optimizer)
        self.outbox, self.inbox, self.recorder = outbox, inbox, recorder
        self.channel = channel_for(config, "device")
        steps = ((0.0, plan.devices[device].slowdown), *config.slowdowns(device)[1:])
        self.slowdowns = [(origin if origin is not None else now()) + t for t, _ in steps], [k for _, k in steps]
        """When (this side's clock) each slowdown factor of the device's schedule begins, and the factors."""
        self.stash = WeightStash(self.part, overtaken(schedule.lane(Resource.DEVICE, device, first_round)))
        self.memory = HeldMemory(self.part)
        self.state_dir = state_dir
        """Where this device keeps its optimizer state at the end of each round it trains (None: nowhere)."""
        self.run_id = begin.run_id if begin is not None else ""
        if begin is not None and begin.restore is not None:
            self._restore(begin.restore)
        self._lane = iter(schedule.lane(Resource.DEVICE, device, first_round))
        self._chunks: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._activations: dict[tuple[int, int], torch.Tensor] = {}

    def run(self) -> None:
        """Execute this device's compute lane from its first round on, in order, to its end or until the server ends
        the run early."""
        track = compute_track(self.device)
        round_ = None
        while (action := next(self._lane, None)) is not None:
            if action.key.round != round_:
                self._round_done(round_)
                round_ = action.key.round
            try:
                received = [self.inbox.expect(dep) for dep in action.deps if dep.resource is Resource.DOWNLINK]
            except RunOver:
                log.info(
                    "the server ended the run early, before round %d/%d", action.key.round + 1, self.schedule.rounds
                )
                return
            start, cpu = now(), time.thread_time()
            args = self.execute(action, received)
            work = (time.thread_time() - cpu) * user_share()
            time.sleep(slowdown_wait_s(work, now() - start, self.slowdown(start)))
            self.recorder.record(track, str(action.key), start, now(), epoch=action.epoch, cpu_s=work, **args)
            self.outbox.progress.advance()
        self._round_done(round_)
        at = now()
        self.recorder.record(track, f"d{self.device}.memory", at, at, peak_bytes=self.memory.peak_bytes)

    def slowdown(self, at: float) -> float:
        """The device's slowdown factor at a clock reading."""
        begins, factors = self.slowdowns
        return factors[max(0, bisect.bisect_right(begins, at) - 1)]

    def _round_done(self, round: int | None) -> None:
        if round is not None:
            log.info("round %d/%d done", round + 1, self.schedule.rounds)

    def execute(self, action: Action, received: list[pb.Envelope]) -> dict[str, float]:
        """Do one action; return what the timeline should note about it."""
        key = action.key
        if key.op is Op.LOAD_WEIGHTS:
            if received[0].text:
                self._follow(check_replan(received[0].text, self.config, len(self.whole)), key.round)
            self.part.load_state_dict(
                self.channel.decode(Op.WEIGHTS, received[0].tensors, spec_of(self.part.state_dict()))
            )
            on_new_weights(self.optimizer, self.config)
        elif key.op is Op.SEND_WEIGHTS:  # with the timeline so far, which the server measures the round by
            if self.state_dir is not None and self.run_id:  # on disk before the server can checkpoint this round
                state = optimizer_tensors(self.optimizer, self.part)
                save_device_state(self.state_dir, self.run_id, self.device, key.round, state)
            timeline = json.dumps(self.recorder.unsent_json())
            self.outbox.send(key, self.channel.encode(Op.WEIGHTS, self.part.state_dict()), timeline)
        elif key.op is Op.FORWARD:
            x, y = self._microbatch(key.iteration, key.microbatch)
            with self.memory.holding((key.iteration, key.microbatch), self.stash.held_bytes()):
                activation = self.stash.forward(key.iteration, x)
            self._activations[(key.iteration, key.microbatch)] = activation
            if self.privacy is not None:
                self.privacy.forwarded((key.iteration, key.microbatch))
            self.outbox.send(key, self.channel.encode(Op.ACTIVATION, {"activation": activation, "labels": y}))
        elif key.op is Op.BACKWARD:
            activation = self._activations.pop((key.iteration, key.microbatch))
            self.memory.release((key.iteration, key.microbatch))
            gradient = self.channel.decode(
                Op.GRADIENT, received[0].tensors, {"gradient": (tuple(activation.shape), activation.dtype)}
            )
            if self.privacy is not None and activation.requires_grad:
                batch = self.schedule.batch_sizes[self.device][key.iteration]
                self.privacy.backward(
                    (key.iteration, key.microbatch), activation, gradient["gradient"].to(self.compute), batch
                )
            elif activation.requires_grad:
                activation.backward(gradient["gradient"].to(self.compute))
        elif key.op is Op.TRAIN:
            x, y = self._microbatch(key.iteration, key.microbatch)
            batch = self.schedule.batch_sizes[self.device][key.iteration]
            loss = scaled_loss(self.part(x), y, batch)
            if self.privacy is not None:
                self.privacy.backward((key.iteration, key.microbatch), loss, torch.ones_like(loss), batch)
            else:
                loss.backward()
            return {"loss_sum": loss.item() * batch, "samples": len(y)}
        elif key.op is Op.STEP:
            self.stash.settle(key.iteration)
            if self.privacy is not None:
                self.privacy.step(self.schedule.batch_sizes[self.device][key.iteration])
            elif self.optimizer is not None:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        else:
            raise RuntimeError(f"a device cannot execute {key}")
        return {}

    def _restore(self, round: int) -> None:
        """Take back the optimizer state this device had at the end of `round`, as the server's START asks; without
        it (no state directory, or no file of that round) the device starts afresh and says so."""
        track, at = compute_track(self.device), now()
        try:
            if self.state_dir is None:
                raise CheckpointError("this device keeps no state (no --state-dir)")
            tensors = load_device_state(self.state_dir, self.run_id, self.device, round)
            load_optimizer_tensors(self.optimizer, self.part, tensors)
        except (CheckpointError, ValueError) as exc:
            log.warning("device %d: momentum starts afresh: %s", self.device, exc)
            self.recorder.record(track, f"d{self.device}.optimizer", at, at, missing_round=round)
            return
        norm = sum(float(t.double().square().sum()) for t in tensors.values()) ** 0.5
        self.recorder.record(track, f"d{self.device}.optimizer", at, at, restored_round=round, norm=norm)

    def _follow(self, plan: RunPlan, round: int) -> None:
        """Run `plan` from `round` (whose weights are loading now) on, where it changes this device's part."""
        if plan == self.plan:
            return
        before, self.plan = self.schedule.setup(self.device, round), plan
        self.schedule = splice(self.schedule, schedule_for(self.config, plan, self.samples), round)
        after = self.schedule.setup(self.device, round)
        if after.split != before.split:
            part = device_part(self.whole, after.split).to(self.compute).train()
            optimizer = make_optimizer(part, self.config)
            carry_momentum(self.optimizer, self.part, optimizer, part)
            if self.privacy is not None:
                optimizer = self.privacy.wrap(part, optimizer)
            self.part, self.optimizer = part, optimizer
            self.memory.part = part
        lane = self.schedule.lane(Resource.DEVICE, self.device, round)
        self.stash = WeightStash(self.part, overtaken(lane))
        self._lane = iter(lane[1:])  # after the weights' load, which is running now
        self.outbox.replace_lane(self.schedule.lane(Resource.UPLINK, self.device, round))
        if self.config.netns:
            downlink = self.schedule.lane(Resource.DOWNLINK, self.device, round)
            self.inbox.time_transfers(downlink, link_track(self.device, "downlink"), self.recorder)

    def _microbatch(self, iteration: int, microbatch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if microbatch == 0:
            x, y = (t.to(self.compute) for t in self.batches.batch(iteration))
            n = len(self.schedule.microbatch_sizes(self.device, iteration))
            self._chunks = list(
                zip(torch.tensor_split(x, min(n, len(x))), torch.tensor_split(y, min(n, len(y))), strict=True)
            )
        return self._chunks[microbatch]


def slowdown_wait_s(cpu_s: float, wall_s: float, slowdown: float) -> float:
    """How long a device waits after an action whose work took cpu_s of CPU in wall_s, to take slowdown x cpu_s."""
    return max(0.0, cpu_s * slowdown - wall_s)


def user_share() -> float:
    """The share of this thread's CPU time spent in user space so far (the rest the kernel charged to it)."""
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    total = usage.ru_utime + usage.ru_stime
    return usage.ru_utime / total if total > 0 else 1.0
