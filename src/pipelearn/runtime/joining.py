"""A device joining a run: it reaches the server, is admitted with the run's plan, loads its own data and hands
its lane of the schedule to a DeviceWorker (`run_device`, what `pipelearn device` runs)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from pipelearn.data.dealing import DeviceBatches, device_indices, load_data
from pipelearn.events import Recorder, link_track, now
from pipelearn.models.parts import device_part, make_model
from pipelearn.plan import schedule_for
from pipelearn.runtime.agreement import adopt, fingerprint
from pipelearn.runtime.checks import (
    check_begin,
    check_plan,
    check_start,
    device_threads,
    plan_words,
)
from pipelearn.runtime.device import DeviceWorker
from pipelearn.runtime.hardware import resolve_device
from pipelearn.schedule import Resource
from pipelearn.training import (
    warm_up,
)
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError
from pipelearn.transport.credentials import DeviceCredentials
from pipelearn.transport.inbox import Inbox, PeerError
from pipelearn.transport.link import Outbox
from pipelearn.transport.rates import link_spec
from pipelearn.transport.service import envelope, kind_name, open_session

log = logging.getLogger("pipelearn.device")


def run_device(
    address: str,
    device: int,
    timeout_s: float = 120.0,
    *,
    model: str | None = None,
    dataset: str | None = None,
    compute: str = "cpu",
    credentials: DeviceCredentials | None = None,
    insecure: bool = False,
    data_dir: str | None = None,
    download: bool = False,
    state_dir: str | None = None,
) -> None:
    """Join the server at HOST:PORT as device `device` and train until the server says the run is over.

    `model` and `dataset` are this device's own names for them, which it must be given where the run uses plug-ins;
    `compute` is where it trains (cpu, cuda, cuda:N, mps or auto). The device connects over mutual TLS with
    `credentials` (which must be device `device`'s), or in plain text only if `insecure`. It reads its training data
    from its own `data_dir` (fetching it only if `download`): what the server's plan says about paths is ignored.
    It keeps its optimizer state of its last rounds in its own `state_dir`, to take it back when it rejoins or the
    run is resumed (without one it starts afresh then).
    """
    began = now()
    if (credentials is None) != insecure:
        raise ValueError("join with credentials (mutual TLS), or with insecure=True for plain text; not both")
    if credentials is not None and credentials.device != device:
        raise ValueError(f"these credentials are device {credentials.device}'s, not device {device}'s")
    torch.set_num_threads(1)
    where = resolve_device(compute, "--compute")
    outbox = Outbox()
    log.info("connecting to %s as device %d (%s)", address, device, "plain text" if insecure else "mutual TLS")
    channel, replies = open_session(address, iter(outbox), timeout_s, credentials)
    inbox = Inbox(replies, "the server", timeout_s)
    try:
        sent = now()
        outbox.control(envelope(pb.HELLO, device, clock=sent))
        plan = _take(inbox, pb.PLAN)
        recorder = Recorder(offset=plan.clock - (sent + now()) / 2)
        config, run_plan = check_plan(plan.text, device)
        log.info(
            "admitted as device %d of %d: %s, %s",
            device,
            config.devices,
            config.mode,
            plan_words(config, run_plan, device),
        )
        config = adopt(config, model, dataset)
        if config.netns:
            recorder.offset = 0.0  # the hosts of a netns run are one machine with one clock: no estimate needed
        torch.set_num_threads(device_threads(config))
        inbox.timeout_s, inbox.liveness_s, inbox.patient = config.timeout_s, config.liveness_s, True
        outbox.beat(config.heartbeat_s, device)
        train = load_data(dataclasses.replace(config, data_dir=data_dir, download=download), "train")
        indices = device_indices(config, train, device)
        whole = make_model(config, train.input_shape, train.num_classes)
        part = device_part(whole, run_plan.devices[device].split).to(where).train()
        warm_up(part, config, train.input_shape, run_plan.devices[device].microbatches)
        declared = fingerprint(part, train.input_shape, train.num_classes)
        ready = {"samples": len(indices), "startup_s": now() - began, "fingerprint": declared}
        outbox.control(envelope(pb.READY, device, text=json.dumps(ready)))
        start = _take(inbox, pb.START)
        samples = check_start(start, config, device, len(indices))
        schedule = schedule_for(config, run_plan, samples)
        begin = check_begin(start, schedule.rounds)  # later than round 0 when rejoining or resuming a run
        first_round = begin.round
        log.info("training %d samples from round %d/%d", len(indices), first_round + 1, schedule.rounds)
        origin = start.clock - recorder.offset  # training start, on this side's clock: the rate schedules' 0 s
        outbox.follow(
            link_spec(config, device, "up", origin, run_plan.devices[device].link),
            schedule.lane(Resource.UPLINK, device, first_round),
            link_track(device, "uplink"),
            recorder,
        )
        if config.netns:  # the kernel paces the downlink: this side times its transfers as they arrive
            downlink = schedule.lane(Resource.DOWNLINK, device, first_round)
            inbox.time_transfers(downlink, link_track(device, "downlink"), recorder)
        DeviceWorker(
            config,
            run_plan,
            device,
            DeviceBatches(train, indices, config, device),
            schedule,
            samples,
            whole,
            outbox,
            inbox,
            recorder,
            where,
            first_round,
            origin,
            Path(state_dir) if state_dir is not None else None,
            begin,
        ).run()
        outbox.flush(config.timeout_s)  # the last upload is on the timeline only once it has left
        outbox.control(envelope(pb.EVENTS, device, text=json.dumps(recorder.unsent_json())))
        _take(inbox, pb.DONE)
        log.info("done: the server ended the run")
    except (WireError, ValueError) as exc:
        outbox.control(envelope(pb.ERROR, device, text=str(exc)))
        outbox.close()
        outbox.drained.wait(timeout=5.0)  # so that the server hears why this device stops, if it still listens
        _drain(inbox)
        raise
    finally:
        outbox.close()
        channel.close()


def _take(inbox: Inbox, kind: int) -> pb.Envelope:
    message = inbox.take()
    if message.kind != kind:
        raise PeerError(f"expected {pb.Kind.Name(kind)} from the server, got {kind_name(message.kind)}")
    return message


def _drain(inbox: Inbox, wait_s: float = 5.0) -> None:
    """Wait (briefly) for the server to end the stream, so that the channel is not closed under this device's last
    words."""
    inbox.timeout_s, inbox.patient = min(inbox.timeout_s, wait_s), False
    try:
        while True:
            inbox.take()
    except (PeerError, WireError):
        pass
