"""The server: serves every device at once, executes its lanes of the schedule, aggregates and reports."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import torch
from tqdm import tqdm

from pipelearn.config import RunConfig
from pipelearn.metrics.events import Recorder, compute_track, link_track, now
from pipelearn.metrics.report import write_results
from pipelearn.plan import RunPlan, resolve_plan
from pipelearn.runtime import hardware
from pipelearn.runtime.aggregate import fedavg
from pipelearn.runtime.agreement import differences, fingerprint, refusal
from pipelearn.runtime.checkpoint import Checkpoint, CheckpointWriter, check_fits
from pipelearn.runtime.checks import HELLO_BYTES, admit, check_events, check_ready, device_plan, plan_limits
from pipelearn.runtime.evaluate import RoundEvaluator, evaluate
from pipelearn.runtime.membership import Membership, RejoinError
from pipelearn.runtime.work import (
    device_part,
    load_data,
    make_model,
    make_optimizer,
    on_new_weights,
    output_shape,
    scaled_loss,
    schedule_for,
    server_part,
    warm_up,
)
from pipelearn.schedule import COORDINATOR, Action, Key, Op, Resource
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.channel import channel_for
from pipelearn.transport.codec import TensorSpec, WireError, check_finite, spec_of
from pipelearn.transport.credentials import ServerCredentials, peer_device
from pipelearn.transport.inbox import Inbox, PeerError
from pipelearn.transport.link import Outbox
from pipelearn.transport.liveness import Progress, progress_marks
from pipelearn.transport.rates import link_spec
from pipelearn.transport.service import envelope, start_server

State = dict[str, torch.Tensor]


@dataclass
class Session:
    """One device's connection: what it sent us and what we send it."""

    inbox: Inbox
    outbox: Outbox


@dataclass
class Replica:
    """A server-side model part and its optimizer (one per device; one for all in sl)."""

    part: torch.nn.Sequential
    optimizer: torch.optim.Optimizer | None


class Server:
    """The server of one run; `listen`, then `run` until the run is over (from a checkpoint's next round if given)."""

    def __init__(
        self,
        config: RunConfig,
        progress: bool = True,
        resume: Checkpoint | None = None,
        plan: RunPlan | None = None,
    ) -> None:
        began = now()
        self.config = config.validate()
        self.progress = progress
        self.torch_device = hardware.resolve_device(config.server_device)
        hardware.check_amp(self.torch_device, config.server_amp)
        self.test = load_data(config, "test")
        self.model = make_model(config, self.test.input_shape, self.test.num_classes)
        self.plan = plan or resolve_plan(config, self.model, self.test.input_shape)
        if self.plan.predicted_epoch_s is not None:
            print(
                f"server: planned split {self.plan.splits}, micro-batches {self.plan.microbatches}; predicted epoch "
                f"{self.plan.predicted_epoch_s:.2f} s, bound {self.plan.bound_s:.2f} s",
                file=sys.stderr,
            )
        self.limits = plan_limits(config, self.plan, self.model, load_data(config, "train"))
        self.global_state: State = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.resume = resume
        if resume is not None:
            check_fits(resume, self.global_state)
            self.global_state = dict(resume.weights)
        self.rounds = RoundEvaluator(config, self.model, self.test)
        self.stopping = threading.Event()
        self.recorder = Recorder()
        self.sessions: dict[int, Session] = {}
        self.retired: list[tuple[int, Session]] = []
        """Sessions of dropped devices that have since rejoined on a new connection."""
        self.channels = {d: channel_for(config, "server") for d in range(config.devices)}
        self.errors: dict[int, str] = dict(resume.errors) if resume else {}
        self.membership = Membership(
            config.devices, resume.dropped if resume else (), resume.rejoined if resume else ()
        )
        self.checkpoints = CheckpointWriter(Path(config.out))
        self._lanes: list[threading.Thread] = []
        self.actions_done = Progress()
        self.compute = threading.Lock()
        self._joined = threading.Condition()
        self._grpc: grpc.Server | None = None
        self._tls = False
        self._crash: BaseException | None = None
        self.on_start: Callable[[float], None] | None = None
        """Called with the clock reading at which training starts (the origin of the links' rate schedules)."""
        self.startup_s = now() - began
        """Seconds of one-off work before training: data, model, replicas, optimizers and warm-up."""

    def listen(self, address: str, credentials: ServerCredentials | None = None, *, insecure: bool = False) -> int:
        """Start serving on HOST:PORT (port 0 picks one) over mutual TLS, or plain text if `insecure`."""
        if (credentials is None) != insecure:
            raise ValueError("serve with credentials (mutual TLS), or with insecure=True for plain text; not both")
        self._tls = credentials is not None
        workers = 2 * self.config.devices + 8
        self._grpc, port = start_server(self.session, address, workers, credentials, self.limits.receive_bytes)
        return port

    def session(self, requests: Any, context: grpc.ServicerContext) -> Any:
        """The gRPC handler of one device's stream: admission, then everything the schedule sends it."""
        certified = peer_device(context.auth_context()) if self._tls else None
        inbox = Inbox(
            requests,
            "a joining device",
            self.config.timeout_s,
            self.limits.in_flight,
            HELLO_BYTES,
            liveness_s=self.config.liveness_s,
        )
        try:
            if self._tls and certified is None:
                raise WireError("its certificate names no device")
            device = self._admit(inbox.take(), certified)
        except (PeerError, WireError) as exc:
            who = context.peer() + (f" with the certificate of device {certified}" if certified is not None else "")
            print(f"server: refused a device at {who}: {exc}", file=sys.stderr)
            yield envelope(pb.ERROR, 0, text=str(exc))
            return
        link = self.plan.devices[device].link
        outbox = Outbox(link_spec(self.config, device, "down", now(), link), progress=self.actions_done)
        outbox.beat(self.config.heartbeat_s, device)
        inbox.peer = f"device {device}"
        inbox.max_bytes = self.limits.max_bytes[device]
        context.add_callback(outbox.close)
        outbox.control(envelope(pb.PLAN, device, text=device_plan(self.config, self.plan), clock=now()))
        with self._joined:
            rejoining = device in self.sessions  # _admit lets an id in twice only to take a dropped device back
            if rejoining:
                self.retired.append((device, self.sessions[device]))
            self.sessions[device] = Session(inbox, outbox)
            self._joined.notify_all()
        if rejoining:
            threading.Thread(target=self._rejoin, args=(device,), daemon=True, name=f"rejoin-{device}").start()
        yield from outbox

    def _admit(self, hello: pb.Envelope, certified: int | None) -> int:
        with self._joined:
            device = admit(hello, self.config, certified, ())
            if device in self.sessions and not self.membership.reserve(device):
                raise WireError(
                    f"device id {device} has already joined; give each device its own --id (a device that lost its "
                    "connection can rejoin once the server has dropped it)"
                )
        return device

    def run(self) -> dict[str, Any]:
        """Wait for every device, train, evaluate, write the results; return the metrics."""
        began = now()
        self._make_replicas()
        self.startup_s += now() - began
        try:
            self.samples, self.device_startup_s, refused = self._wait_ready()
        except Exception as exc:
            self._stop_before_training(exc)
            raise
        if self.resume is not None:
            check_fits(self.resume, self.global_state, self.samples)
        first = self.resume.rounds_done if self.resume is not None else 0
        self.schedule = schedule_for(self.config, self.plan, self.samples)
        self.start = now()
        if self.on_start is not None:
            self.on_start(self.start)
        self.membership.begin(self.schedule.rounds, first, self.start - (self.resume.elapsed_s if self.resume else 0))
        for d, reason in refused.items():
            self._fail(d, WireError(reason), first)
        for d, s in self.sessions.items():
            if not self.membership.is_out(d):
                self._start_device(d, s, first)
        total = sum(len(lane) for (r, _), lane in self.schedule.lanes.items() if r is Resource.SERVER)
        with tqdm(total=total, desc=f"{self.config.mode} server", unit="action", disable=not self.progress) as bar:
            self.rounds.begin(self.start, self.schedule, bar.set_postfix_str)
            self._bar = bar
            for lane in [*range(self.config.devices), COORDINATOR]:
                self._start_lane(lane, first)
            self._join_lanes()
        self.end = now()
        self.rounds.finish()
        try:
            self.checkpoints.close()
        except RuntimeError as exc:
            self._crash = self._crash or exc
        if self._crash is not None:
            self._shutdown()
            raise RuntimeError(f"the server failed: {self._crash!r}") from self._crash
        self._collect_events()
        self._shutdown()
        return self._report()

    def _start_device(self, device: int, session: Session, first_round: int) -> None:
        """Send a device START, and have its downlink carry its schedule from `first_round` on."""
        session.outbox.follow(
            link_spec(self.config, device, "down", self.start, self.plan.devices[device].link),
            self.schedule.lane(Resource.DOWNLINK, device, first_round),
            link_track(device, "downlink"),
            self.recorder,
        )
        session.inbox.follow(progress_marks(self.schedule, device, first_round))
        if self.config.netns:  # the kernel paces the uplink: this side times its transfers as they arrive
            uplink = self.schedule.lane(Resource.UPLINK, device, first_round)
            session.inbox.time_transfers(uplink, link_track(device, "uplink"), self.recorder)
        start = {"samples": self.samples, "round": first_round}
        # the clock of training start: the origin of the device's uplink rate schedule
        session.outbox.control(envelope(pb.START, device, text=json.dumps(start), clock=self.start))

    def _start_lane(self, lane: int, first_round: int) -> None:
        thread = threading.Thread(target=self._run_lane, args=(lane, first_round), daemon=True)
        with self._joined:
            self._lanes.append(thread)
        thread.start()

    def _join_lanes(self) -> None:
        """Wait for every lane, including those a rejoining device starts meanwhile."""
        joined = 0
        while True:
            with self._joined:
                if joined == len(self._lanes):
                    return
                thread = self._lanes[joined]
            thread.join()
            joined += 1

    def _rejoin(self, device: int) -> None:
        """Take a dropped device back on its new connection: from the next round, with the current global model."""
        session = self.sessions[device]
        try:
            if self.config.mode == "sl":
                raise RejoinError("an sl run hands one device half from device to device; a device cannot rejoin it")
            check_ready(session.inbox.take(), device, self.samples[device])
            with self.compute:
                self._reset_replica(device)
            first = self.membership.rejoin(device)
        except (PeerError, WireError, RejoinError) as exc:
            self.membership.release(device)
            print(f"server: device {device} could not rejoin: {exc}", file=sys.stderr)
            session.outbox.control(envelope(pb.ERROR, device, text=str(exc)))
            session.outbox.close()
            return
        print(f"server: device {device} rejoined; it takes part again from round {first}", file=sys.stderr)
        self._start_device(device, session, first)
        self._start_lane(device, first)

    def _wait_ready(self) -> tuple[list[int], list[float], dict[int, str]]:
        """Each device's declared samples and start-up time, and why any device's model part does not match."""
        with self._joined:
            if not self._joined.wait_for(lambda: len(self.sessions) == self.config.devices, self.config.timeout_s):
                missing = sorted(set(range(self.config.devices)) - set(self.sessions))
                raise PeerError(f"devices {missing} did not join within {self.config.timeout_s:g} s (timeout_s)")
        samples, startup, refused = list(self.limits.samples), [], {}
        for d in range(self.config.devices):
            try:
                ready = self.sessions[d].inbox.take()
                check_ready(ready, d, self.limits.samples[d])
            except (PeerError, WireError) as exc:
                refused[d] = str(exc)
                startup.append(0.0)
                continue
            declared = json.loads(ready.text)
            startup.append(_seconds(declared.get("startup_s")))
            part = device_part(self.model, self.plan, d)
            expected = fingerprint(part, self.test.input_shape, self.test.num_classes)
            if found := differences(expected, declared.get("fingerprint")):
                refused[d] = refusal(d, found)
        if len(refused) == self.config.devices:
            raise PeerError(f"every device was refused: {'; '.join(refused.values())}")
        return samples, startup, refused

    def _stop_before_training(self, exc: Exception) -> None:
        for d, session in self.sessions.items():
            if d not in self.errors:
                session.outbox.control(envelope(pb.ERROR, d, text=f"the run was stopped before training: {exc}"))
                session.outbox.close()
        self._shutdown()

    def _make_replicas(self) -> None:
        self.device_specs: dict[int, dict[str, TensorSpec]] = {}
        self.activation_shapes: dict[int, tuple[int, ...]] = {}
        self.replicas: dict[int, Replica] = {}
        self.uploaded: dict[int, State] = {}
        self.relay: State | None = None
        shared: Replica | None = None
        warmed: set[tuple[int, ...]] = set()
        for d in range(self.config.devices):
            part = device_part(self.model, self.plan, d)
            self.device_specs[d] = spec_of(part.state_dict())
            self.activation_shapes[d] = output_shape(part, self.test.input_shape)
            if self.config.mode == "fl":
                continue
            if shared is None or self.config.mode != "sl":
                model = make_model(self.config, self.test.input_shape, self.test.num_classes)
                model.load_state_dict(self.global_state)
                replica_part = server_part(model, self.plan, d).train().to(self.torch_device)
                shared = Replica(replica_part, make_optimizer(replica_part, self.config))
            self.replicas[d] = shared
            if self.activation_shapes[d] not in warmed:
                warm_up(shared.part, self.config, self.activation_shapes[d], self.plan.devices[d].microbatches)
                warmed.add(self.activation_shapes[d])

    def _reset_replica(self, device: int) -> None:
        """A rejoining device's server replica starts with no gradients and a fresh optimizer (as the device does)."""
        replica = self.replicas.get(device)
        if replica is not None:
            replica.part.zero_grad(set_to_none=True)
            self.replicas[device] = Replica(replica.part, make_optimizer(replica.part, self.config))

    def _run_lane(self, lane: int, first_round: int = 0) -> None:
        if lane != COORDINATOR and self.membership.is_out(lane):
            return  # refused before training
        round_ = first_round
        try:
            for action in self.schedule.lane(Resource.SERVER, lane, first_round):
                if self.stopping.is_set():
                    break
                round_ = action.key.round
                received = []
                for dep in action.deps:
                    if dep.resource is Resource.UPLINK:
                        received.append(self.sessions[dep.device].inbox.expect(dep))
                    else:
                        self.membership.wait(dep)
                if self.stopping.is_set() or not self.membership.takes_part(lane, action.key.round):
                    break
                with self.compute:
                    start, cpu = now(), time.thread_time()
                    args = self.execute(action, received)
                    self.recorder.record(
                        compute_track(None),
                        str(action.key),
                        start,
                        now(),
                        epoch=action.epoch,
                        device=action.key.device,
                        cpu_s=time.thread_time() - cpu,
                        **args,
                    )
                self.membership.done(action.key)
                self.actions_done.advance()
                self._bar.update()
        except (PeerError, WireError) as exc:
            self._fail(lane, exc, round_)
        except Exception as exc:  # a fault of the server itself: stop every lane rather than hang
            self._crash = exc
            self.membership.abort()

    def execute(self, action: Action, received: list[pb.Envelope]) -> dict[str, float]:
        """Do one server action; return what the timeline should note about it."""
        key, d = action.key, action.key.device
        if key.op is Op.SEND_WEIGHTS:
            self.sessions[d].outbox.send(key, self.channels[d].encode(Op.WEIGHTS, self._weights_for(d)))
        elif key.op is Op.LOAD_WEIGHTS:
            self.uploaded[d] = self.channels[d].decode(Op.WEIGHTS, received[0].tensors, self.device_specs[d])
            if self.config.mode == "sl":
                self.relay = self.uploaded[d]
        elif key.op is Op.TRAIN:
            return self._train(key, received[0])
        elif key.op is Op.STEP:
            optimizer = self.replicas[d].optimizer
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        elif key.op is Op.AGGREGATE:
            self._aggregate(key.round)
            if self.rounds.aggregated(key.round, self.global_state, self.recorder.events):
                self._stop_early()
        else:
            raise RuntimeError(f"the server cannot execute {key}")
        return {}

    def _train(self, key: Key, message: pb.Envelope) -> dict[str, float]:
        d = key.device
        size = self.schedule.microbatch_sizes(d, key.iteration)[key.microbatch]
        batch = self.schedule.batch_sizes[d][key.iteration]
        payload = self.channels[d].decode(
            Op.ACTIVATION,
            message.tensors,
            {
                "activation": ((size, *self.activation_shapes[d]), torch.float32),
                "labels": ((size,), torch.int64),
            },
        )
        labels = payload["labels"]
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.test.num_classes):
            raise WireError(f"labels from device {d} fall outside 0..{self.test.num_classes - 1}")
        activation, labels = (t.to(self.torch_device) for t in (payload["activation"], labels))
        activation.requires_grad_()
        started = now()
        with hardware.autocast(self.torch_device, self.config.server_amp):
            logits = self.replicas[d].part(activation)
            loss = scaled_loss(logits, labels, batch)
        hardware.synchronize(self.torch_device)
        forward_s = now() - started
        if not torch.isfinite(loss):
            raise WireError(f"the activation from device {d} makes the loss {loss.item()}")
        loss.backward()
        assert activation.grad is not None
        self.sessions[d].outbox.send(
            key, self.channels[d].encode(Op.GRADIENT, hardware.to_cpu({"gradient": activation.grad}))
        )
        return {
            "loss_sum": loss.item() * batch,
            "samples": size,
            "forward_s": forward_s,
            "backward_s": now() - started - forward_s,
        }

    def _weights_for(self, device: int) -> State:
        if self.config.mode == "sl" and self.relay is not None:
            return self.relay
        return {k: self.global_state[k] for k in self.device_specs[device]}

    def _aggregate(self, round: int) -> None:
        states: dict[int, State] = {}
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
                self._fail(d, exc, round)
        if not states:
            raise RuntimeError(f"every device has failed; nothing to aggregate in round {round}")
        self.global_state = fedavg(list(states.values()), [self.samples[d] for d in states])
        self.uploaded.clear()
        for replica in self.replicas.values():  # a dropped device's replica, too, goes back to the global model
            replica.part.load_state_dict({k: self.global_state[k] for k in replica.part.state_dict()})
            on_new_weights(replica.optimizer, self.config)
        self.checkpoints.submit(
            Checkpoint(
                config=self.config,
                rounds_done=round + 1,
                rounds=self.schedule.rounds,
                samples=self.samples,
                weights=self.global_state,
                elapsed_s=self.membership.elapsed(),
                dropped=list(self.membership.dropped),
                rejoined=list(self.membership.rejoined),
                errors=dict(self.errors),
            )
        )

    def _stop_early(self) -> None:
        """End the run at this aggregation: every lane stops, and every device is told the run is over."""
        self.stopping.set()
        for d, s in self.sessions.items():
            if not self.membership.is_out(d):
                s.outbox.control(envelope(pb.DONE, d, text="the target accuracy was reached: stop"))

    def final_state(self) -> State:
        """The trained global model: the last aggregate, or in sl the last device half with the server half."""
        if self.config.mode == "sl":
            server_half = hardware.to_cpu(next(iter(self.replicas.values())).part.state_dict())
            return {**self._weights_for(0), **server_half}
        return self.global_state

    def _fail(self, device: int, exc: Exception, round: int) -> None:
        if self.membership.is_out(device):
            return
        session = self.sessions[device]  # before the drop: once dropped, a new connection may take the device's place
        message = f"device {device} failed in round {round} and was dropped from the run: {exc}"
        print(f"server: {message}", file=sys.stderr)
        self.errors[device] = str(exc)
        self.membership.drop(device, round, str(exc))
        session.outbox.control(envelope(pb.ERROR, device, text=str(exc)))
        session.outbox.close()

    def _collect_events(self) -> None:
        for d, s in self.sessions.items():
            if self.membership.is_out(d):
                continue
            try:
                window = (self.start - self.config.timeout_s, now() + self.config.timeout_s)
                self.recorder.extend_json(check_events(s.inbox.take(), d, self.config, window))
            except (PeerError, WireError) as exc:
                print(f"server: no timeline from device {d}: {exc}", file=sys.stderr)
                self.errors[d] = f"no timeline: {exc}"
            s.outbox.control(envelope(pb.DONE, d))
            s.outbox.close()

    def _shutdown(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=5).wait()

    def _report(self) -> dict[str, Any]:
        final = self.final_state()
        model = make_model(self.config, self.test.input_shape, self.test.num_classes)
        model.load_state_dict(final)
        accuracy = evaluate(model, self.test, self.config.test_samples, self.config.seed)
        return write_results(
            Path(self.config.out),
            self.config,
            self.recorder.events,
            self.start,
            self.end,
            accuracy,
            final,
            plan=self.plan,
            samples=self.samples,
            bytes_up=self._bytes(lambda s: s.inbox.bytes_received),
            bytes_down=self._bytes(lambda s: s.outbox.bytes_sent),
            compression=[self.channels[d].usage() for d in range(self.config.devices)],
            errors=self.errors,
            startup_s={"server": self.startup_s, "devices": self.device_startup_s},
            extra=self.rounds.metrics(self.recorder.events, accuracy),
            server_device=str(self.torch_device),
            dropped=self.membership.dropped,
            rejoined=self.membership.rejoined,
            resumed_from_round=self.resume.rounds_done if self.resume is not None else None,
        )

    def _bytes(self, count: Callable[[Session], int]) -> list[int]:
        """Per device, bytes over all its connections (a rejoined device has had more than one)."""
        totals = [count(self.sessions[d]) for d in range(self.config.devices)]
        for d, session in self.retired:
            totals[d] += count(session)
        return totals


def serve(
    config: RunConfig,
    listen: str,
    credentials: ServerCredentials | None,
    progress: bool = True,
    resume: Checkpoint | None = None,
) -> dict[str, Any]:
    """Run the server of a run on HOST:PORT (plain text if `credentials` is None) until the run is over (from a
    checkpoint if given); return the metrics."""
    torch.set_num_threads(config.threads)
    if config.host_cores == "auto":  # the devices compute elsewhere, not on this machine's cores
        config = dataclasses.replace(config, host_cores="off")
    server = Server(config, progress, resume)
    port = server.listen(listen, credentials, insecure=credentials is None)
    security = "plain text" if credentials is None else "mutual TLS"
    print(f"server: listening on port {port} ({security}); waiting for {config.devices} devices", file=sys.stderr)
    return server.run()


def _seconds(value: object) -> float:
    """A duration a device reports about itself: a finite number of 0 or more, else 0 (it is only reported)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    return float(value) if ok else 0.0  # type: ignore[arg-type]
