"""A device: joins the server, loads its own data, and executes its lane of the schedule."""

from __future__ import annotations

import json
import time

import torch

from pipelearn.config import RunConfig
from pipelearn.data import load_dataset
from pipelearn.metrics.events import Recorder, compute_track, link_track, now
from pipelearn.runtime.work import (
    DeviceBatches,
    device_indices,
    device_part,
    make_model,
    make_optimizer,
    scaled_loss,
    schedule_for,
)
from pipelearn.schedule import Action, Op, Resource, Schedule
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError, decode, encode, spec_of
from pipelearn.transport.inbox import Inbox, PeerError
from pipelearn.transport.link import Outbox
from pipelearn.transport.rates import link_spec
from pipelearn.transport.service import envelope, open_session


class DeviceWorker:
    """Executes one device's compute lane: forward, backward, local training, steps and weight exchange."""

    def __init__(
        self,
        config: RunConfig,
        device: int,
        batches: DeviceBatches,
        schedule: Schedule,
        model: torch.nn.Sequential,
        outbox: Outbox,
        inbox: Inbox,
        recorder: Recorder,
    ) -> None:
        self.config, self.device, self.batches, self.schedule = config, device, batches, schedule
        self.part = device_part(model, config, device)
        self.part.train()
        self.optimizer = make_optimizer(self.part, config)
        self.outbox, self.inbox, self.recorder = outbox, inbox, recorder
        self.slowdown = config.slowdown(device)
        self._chunks: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._activations: dict[int, torch.Tensor] = {}

    def run(self) -> None:
        """Execute every action of this device's compute lane, in order."""
        track = compute_track(self.device)
        for action in self.schedule.lane(Resource.DEVICE, self.device):
            received = [self.inbox.expect(dep) for dep in action.deps if dep.resource is Resource.DOWNLINK]
            start = now()
            args = self.execute(action, received)
            busy = now() - start
            if self.slowdown > 1:
                time.sleep(busy * (self.slowdown - 1))
            self.recorder.record(track, str(action.key), start, now(), epoch=action.epoch, **args)

    def execute(self, action: Action, received: list[pb.Envelope]) -> dict[str, float]:
        """Do one action; return what the timeline should note about it."""
        key = action.key
        if key.op is Op.LOAD_WEIGHTS:
            self.part.load_state_dict(decode(received[0].tensors, spec_of(self.part.state_dict())))
        elif key.op is Op.SEND_WEIGHTS:
            self.outbox.send(key, encode(self.part.state_dict()))
        elif key.op is Op.FORWARD:
            x, y = self._microbatch(key.iteration, key.microbatch)
            activation = self.part(x)
            self._activations[key.microbatch] = activation
            self.outbox.send(key, encode({"activation": activation, "labels": y}))
        elif key.op is Op.BACKWARD:
            activation = self._activations.pop(key.microbatch)
            gradient = decode(received[0].tensors, {"gradient": (tuple(activation.shape), activation.dtype)})
            if activation.requires_grad:
                activation.backward(gradient["gradient"])
        elif key.op is Op.TRAIN:
            x, y = self._microbatch(key.iteration, key.microbatch)
            batch = self.schedule.batch_sizes[self.device][key.iteration]
            loss = scaled_loss(self.part(x), y, batch)
            loss.backward()
            return {"loss_sum": loss.item() * batch, "samples": len(y)}
        elif key.op is Op.STEP:
            if self.optimizer is not None:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        else:
            raise RuntimeError(f"a device cannot execute {key}")
        return {}

    def _microbatch(self, iteration: int, microbatch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if microbatch == 0:
            x, y = self.batches.batch(iteration)
            n = self.schedule.microbatches[self.device]
            self._chunks = list(
                zip(torch.tensor_split(x, min(n, len(x))), torch.tensor_split(y, min(n, len(y))), strict=True)
            )
        return self._chunks[microbatch]


def run_device(address: str, device: int, timeout_s: float = 120.0) -> None:
    """Join the server at HOST:PORT as device `device` and train until the server says the run is over."""
    torch.set_num_threads(1)
    outbox = Outbox()
    channel, replies = open_session(address, iter(outbox), timeout_s)
    inbox = Inbox(replies, "the server", timeout_s)
    try:
        sent = now()
        outbox.control(envelope(pb.HELLO, device, clock=sent))
        plan = _take(inbox, pb.PLAN)
        recorder = Recorder(offset=plan.clock - (sent + now()) / 2)
        config = RunConfig.from_json(plan.text)
        if config.netns:
            recorder.offset = 0.0  # the hosts of a netns run are one machine with one clock: no estimate needed
        torch.set_num_threads(config.threads)
        inbox.timeout_s = config.timeout_s
        train = load_dataset(config.dataset, "train", config.data_dir, download=config.download)
        indices = device_indices(config, train, device)
        model = make_model(config, train.input_shape, train.num_classes)
        make_optimizer(model, config)  # torch's first optimizer takes seconds to import its compiler: not in epoch 0
        outbox.control(envelope(pb.READY, device, text=json.dumps({"samples": len(indices)})))
        start = _take(inbox, pb.START)
        samples = json.loads(start.text)["samples"]
        schedule = schedule_for(config, samples)
        outbox.follow(
            link_spec(config, device, "up", start.clock - recorder.offset),
            schedule.lane(Resource.UPLINK, device),
            link_track(device, "uplink"),
            recorder,
        )
        if config.netns:
            inbox.time_transfers(schedule.lane(Resource.DOWNLINK, device), link_track(device, "downlink"), recorder)
        DeviceWorker(
            config,
            device,
            DeviceBatches(train, indices, config, device),
            schedule,
            model,
            outbox,
            inbox,
            recorder,
        ).run()
        outbox.control(envelope(pb.EVENTS, device, text=json.dumps(recorder.to_json())))
        _take(inbox, pb.DONE)
    except (WireError, ValueError) as exc:
        outbox.control(envelope(pb.ERROR, device, text=str(exc)))
        raise
    finally:
        outbox.close()
        channel.close()


def _take(inbox: Inbox, kind: int) -> pb.Envelope:
    message = inbox.take()
    if message.kind != kind:
        raise PeerError(f"expected {pb.Kind.Name(kind)} from the server, got {pb.Kind.Name(message.kind)}")
    return message
