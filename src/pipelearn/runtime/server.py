"""The server: serves every device at once, executes its lanes of the schedule, aggregates and reports."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import torch
from tqdm import tqdm

from pipelearn.config import ConfigError, RunConfig
from pipelearn.data import load_dataset
from pipelearn.metrics.events import Recorder, compute_track, link_track, now
from pipelearn.metrics.report import write_results
from pipelearn.runtime.aggregate import fedavg
from pipelearn.runtime.evaluate import evaluate
from pipelearn.runtime.work import (
    device_part,
    make_model,
    make_optimizer,
    output_shape,
    scaled_loss,
    schedule_for,
    server_part,
)
from pipelearn.schedule import COORDINATOR, Action, Key, Op, Resource
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import TensorSpec, WireError, decode, encode, spec_of
from pipelearn.transport.inbox import Inbox, PeerError
from pipelearn.transport.link import Outbox
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


class Completions:
    """Which server actions are done; a failed device's actions count as done so nobody waits on them."""

    def __init__(self) -> None:
        self._done: set[Key] = set()
        self.failed: set[int] = set()
        self._cond = threading.Condition()

    def done(self, key: Key) -> None:
        """Mark one action done."""
        with self._cond:
            self._done.add(key)
            self._cond.notify_all()

    def fail(self, device: int) -> None:
        """Mark every action of a device done."""
        with self._cond:
            self.failed.add(device)
            self._cond.notify_all()

    def wait(self, key: Key, timeout_s: float) -> None:
        """Block until an action is done or its device has failed."""
        with self._cond:
            if not self._cond.wait_for(lambda: key in self._done or key.device in self.failed, timeout_s):
                raise RuntimeError(f"server action {key} did not finish within {timeout_s:g} s")


class Server:
    """The server of one run; `listen`, then `run` until the run is over."""

    def __init__(self, config: RunConfig, progress: bool = True) -> None:
        self.config = config.validate()
        if config.mode == "sl" and len({config.split_point(d) for d in range(config.devices)}) > 1:
            raise ConfigError("sl passes one device half from device to device: give every device the same split")
        self.progress = progress
        self.test = load_dataset(config.dataset, "test", config.data_dir, download=config.download)
        self.model = make_model(config, self.test.input_shape, self.test.num_classes)
        for d in range(config.devices):
            if config.mode != "fl" and not 0 <= config.split_point(d) <= len(self.model):
                raise ConfigError(
                    f"split {config.split_point(d)} of device {d} is outside 0..{len(self.model)}, "
                    f"the block boundaries of {config.model}"
                )
        self.global_state: State = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.recorder = Recorder()
        self.sessions: dict[int, Session] = {}
        self.errors: dict[int, str] = {}
        self.completions = Completions()
        self.compute = threading.Lock()
        self._joined = threading.Condition()
        self._grpc: grpc.Server | None = None
        self._crash: BaseException | None = None
        self.on_start: Callable[[float], None] | None = None
        """Called with the clock reading at which training starts (the origin of the links' rate schedules)."""

    def listen(self, address: str) -> int:
        """Start serving on HOST:PORT (port 0 picks one); return the port."""
        self._grpc, port = start_server(self.session, address, workers=2 * self.config.devices + 8)
        return port

    def session(self, requests: Any, context: grpc.ServicerContext) -> Any:
        """The gRPC handler of one device's stream: handshake, then everything the schedule sends it."""
        inbox = Inbox(requests, "a joining device", self.config.timeout_s)
        try:
            hello = inbox.take()
            device = self._admit(hello)
        except (PeerError, WireError) as exc:
            print(f"server: refused a device: {exc}", file=sys.stderr)
            yield envelope(pb.ERROR, 0, text=str(exc))
            return
        outbox = Outbox(link_spec(self.config, device, "down", now()))
        inbox.peer = f"device {device}"
        context.add_callback(outbox.close)
        outbox.control(envelope(pb.PLAN, device, text=self.config.to_json(), clock=now()))
        with self._joined:
            self.sessions[device] = Session(inbox, outbox)
            self._joined.notify_all()
        yield from outbox

    def _admit(self, hello: pb.Envelope) -> int:
        if hello.kind != pb.HELLO:
            raise WireError(f"a device must start with HELLO, not {pb.Kind.Name(hello.kind)}")
        device = hello.device
        with self._joined:
            if not 0 <= device < self.config.devices:
                raise WireError(
                    f"device id {device} is out of range: this run has devices 0..{self.config.devices - 1}"
                )
            if device in self.sessions:
                raise WireError(f"device id {device} has already joined; give each device its own --id")
        return device

    def run(self) -> dict[str, Any]:
        """Wait for every device, train, evaluate, write the results; return the metrics."""
        self.samples = self._wait_ready()
        self.schedule = schedule_for(self.config, self.samples)
        self._make_replicas()
        self.start = now()
        if self.on_start is not None:
            self.on_start(self.start)
        for d, s in self.sessions.items():
            s.outbox.follow(
                link_spec(self.config, d, "down", self.start),
                self.schedule.lane(Resource.DOWNLINK, d),
                link_track(d, "downlink"),
                self.recorder,
            )
            if self.config.netns:
                s.inbox.time_transfers(self.schedule.lane(Resource.UPLINK, d), link_track(d, "uplink"), self.recorder)
            s.outbox.control(envelope(pb.START, d, text=json.dumps({"samples": self.samples}), clock=self.start))
        total = sum(len(lane) for (r, _), lane in self.schedule.lanes.items() if r is Resource.SERVER)
        with tqdm(total=total, desc=f"{self.config.mode} server", unit="action", disable=not self.progress) as bar:
            lanes = [
                threading.Thread(target=self._run_lane, args=(d, bar), daemon=True)
                for d in [*range(self.config.devices), COORDINATOR]
            ]
            for t in lanes:
                t.start()
            for t in lanes:
                t.join()
        self.end = now()
        if self._crash is not None:
            self._shutdown()
            raise RuntimeError(f"the server failed: {self._crash!r}") from self._crash
        self._collect_events()
        self._shutdown()
        return self._report()

    def _wait_ready(self) -> list[int]:
        with self._joined:
            if not self._joined.wait_for(lambda: len(self.sessions) == self.config.devices, self.config.timeout_s):
                missing = sorted(set(range(self.config.devices)) - set(self.sessions))
                raise PeerError(f"devices {missing} did not join within {self.config.timeout_s:g} s (timeout_s)")
        samples = []
        for d in range(self.config.devices):
            ready = self.sessions[d].inbox.take()
            if ready.kind != pb.READY:
                raise WireError(f"device {d} sent {pb.Kind.Name(ready.kind)} before READY")
            samples.append(int(json.loads(ready.text)["samples"]))
        return samples

    def _make_replicas(self) -> None:
        self.device_specs: dict[int, dict[str, TensorSpec]] = {}
        self.activation_shapes: dict[int, tuple[int, ...]] = {}
        self.replicas: dict[int, Replica] = {}
        self.uploaded: dict[int, State] = {}
        self.relay: State | None = None
        shared: Replica | None = None
        for d in range(self.config.devices):
            part = device_part(self.model, self.config, d)
            self.device_specs[d] = spec_of(part.state_dict())
            self.activation_shapes[d] = output_shape(part, self.test.input_shape)
            if self.config.mode == "fl":
                continue
            if shared is None or self.config.mode != "sl":
                model = make_model(self.config, self.test.input_shape, self.test.num_classes)
                model.load_state_dict(self.global_state)
                replica_part = server_part(model, self.config, d).train()
                shared = Replica(replica_part, make_optimizer(replica_part, self.config))
            self.replicas[d] = shared

    def _run_lane(self, lane: int, bar: tqdm) -> None:
        try:
            for action in self.schedule.lane(Resource.SERVER, lane):
                received = []
                for dep in action.deps:
                    if dep.resource is Resource.UPLINK:
                        received.append(self.sessions[dep.device].inbox.expect(dep))
                    else:
                        self.completions.wait(dep, 4 * self.config.timeout_s)
                with self.compute:
                    start = now()
                    args = self.execute(action, received)
                    self.recorder.record(
                        compute_track(None),
                        str(action.key),
                        start,
                        now(),
                        epoch=action.epoch,
                        device=action.key.device,
                        **args,
                    )
                self.completions.done(action.key)
                bar.update()
        except (PeerError, WireError) as exc:
            self._fail(lane, exc)
        except Exception as exc:  # a fault of the server itself: stop every lane rather than hang
            self._crash = exc
            for d in range(self.config.devices):
                self.completions.fail(d)

    def execute(self, action: Action, received: list[pb.Envelope]) -> dict[str, float]:
        """Do one server action; return what the timeline should note about it."""
        key, d = action.key, action.key.device
        if key.op is Op.SEND_WEIGHTS:
            self.sessions[d].outbox.send(key, encode(self._weights_for(d)))
        elif key.op is Op.LOAD_WEIGHTS:
            self.uploaded[d] = decode(received[0].tensors, self.device_specs[d])
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
            self._aggregate()
        else:
            raise RuntimeError(f"the server cannot execute {key}")
        return {}

    def _train(self, key: Key, message: pb.Envelope) -> dict[str, float]:
        d = key.device
        size = self.schedule.microbatch_sizes(d, key.iteration)[key.microbatch]
        batch = self.schedule.batch_sizes[d][key.iteration]
        payload = decode(
            message.tensors,
            {
                "activation": ((size, *self.activation_shapes[d]), torch.float32),
                "labels": ((size,), torch.int64),
            },
        )
        labels = payload["labels"]
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.test.num_classes):
            raise WireError(f"labels from device {d} fall outside 0..{self.test.num_classes - 1}")
        activation = payload["activation"].requires_grad_()
        started = now()
        logits = self.replicas[d].part(activation)
        loss = scaled_loss(logits, labels, batch)
        forward_s = now() - started
        loss.backward()
        assert activation.grad is not None
        self.sessions[d].outbox.send(key, encode({"gradient": activation.grad}))
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

    def _aggregate(self) -> None:
        live = [d for d in range(self.config.devices) if d not in self.completions.failed and d in self.uploaded]
        if not live:
            raise RuntimeError("every device has failed; nothing to aggregate")
        states = [
            {**self.uploaded[d], **self.replicas[d].part.state_dict()} if d in self.replicas else self.uploaded[d]
            for d in live
        ]
        self.global_state = fedavg(states, [self.samples[d] for d in live])
        for d in live:
            if d in self.replicas:
                part = self.replicas[d].part
                part.load_state_dict({k: self.global_state[k] for k in part.state_dict()})

    def final_state(self) -> State:
        """The trained global model: the last aggregate, or in sl the last device half with the server half."""
        if self.config.mode == "sl":
            server_half = next(iter(self.replicas.values())).part.state_dict()
            return {**self._weights_for(0), **server_half}
        return self.global_state

    def _fail(self, device: int, exc: Exception) -> None:
        message = f"device {device} failed and was dropped from the run: {exc}"
        print(f"server: {message}", file=sys.stderr)
        self.errors[device] = str(exc)
        self.completions.fail(device)
        session = self.sessions[device]
        session.outbox.control(envelope(pb.ERROR, device, text=str(exc)))
        session.outbox.close()

    def _collect_events(self) -> None:
        for d, s in self.sessions.items():
            if d in self.errors:
                continue
            try:
                message = s.inbox.take()
                if message.kind != pb.EVENTS:
                    raise WireError(f"expected EVENTS, got {pb.Kind.Name(message.kind)}")
                self.recorder.extend_json(json.loads(message.text))
            except (PeerError, WireError, ValueError) as exc:
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
            samples=self.samples,
            bytes_up=[s.inbox.bytes_received for s in self._ordered()],
            bytes_down=[s.outbox.bytes_sent for s in self._ordered()],
            errors=self.errors,
        )

    def _ordered(self) -> list[Session]:
        return [self.sessions[d] for d in range(self.config.devices)]


def serve(config: RunConfig, listen: str, progress: bool = True) -> dict[str, Any]:
    """Run the server of a run on HOST:PORT until the run is over; return the metrics."""
    torch.set_num_threads(config.threads)
    server = Server(config, progress)
    port = server.listen(listen)
    print(f"server: listening on port {port}; waiting for {config.devices} devices", file=sys.stderr)
    return server.run()
