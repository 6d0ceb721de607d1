"""The server's worker: walks the server's lanes of the schedule as DeviceWorker walks a device's, one thread a lane,
all sharing the one server compute."""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from pipelearn.config import RunConfig
from pipelearn.events import Recorder, compute_track, now
from pipelearn.logs import Progress as Bar
from pipelearn.plan import RunPlan
from pipelearn.runtime import hardware
from pipelearn.runtime.aggregation import Aggregator
from pipelearn.runtime.checks import check_events
from pipelearn.runtime.membership import Membership
from pipelearn.runtime.sessions import Sessions
from pipelearn.schedule import COORDINATOR, Action, Key, Op, Resource, Schedule
from pipelearn.training import scaled_loss
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.channel import Channel
from pipelearn.transport.codec import WireError
from pipelearn.transport.inbox import PeerError
from pipelearn.transport.liveness import Progress

Failure = Callable[[int, Exception, int], None]
"""Drops a device: (device, what went wrong, the round it went wrong in)."""


class ServerCompute:
    """The one server compute that every lane shares, handed to waiting lanes as the simulator hands it: to the one
    that asked first, or where `priority` ranks devices (0 first), to the best-ranked one waiting."""

    def __init__(self, priority: Sequence[int] | None = None) -> None:
        self.priority = list(priority) if priority is not None else None
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # (rank, ticket) of each lane waiting, best first
        self._tickets = itertools.count()
        self._busy = False

    @contextlib.contextmanager
    def turn(self, lane: int) -> Iterator[None]:
        """Hold the compute for the with-block, after the lanes ahead of this one."""
        rank = self.priority[lane] if self.priority is not None and lane != COORDINATOR else -1
        entry = (rank, next(self._tickets))
        with self._cond:
            bisect.insort(self._waiting, entry)
            self._cond.wait_for(lambda: not self._busy and self._waiting[0] == entry)
            self._waiting.pop(0)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class ServerWorker:
    """Executes the server's lanes: for each device its training, steps and weight exchange, and the coordinator's
    aggregation. A lane waits for what its actions need from other lanes (uploads, other server actions)."""

    def __init__(
        self,
        config: RunConfig,
        schedule: Schedule,
        sessions: Sessions,
        membership: Membership,
        aggregator: Aggregator,
        channels: dict[int, Channel],
        recorder: Recorder,
        progress: Progress,
        *,
        where: torch.device,
        classes: int,
        fail: Failure,
        aggregated: Callable[[int], None],
    ) -> None:
        self.config, self.schedule, self.sessions, self.membership = config, schedule, sessions, membership
        self.plan_text = json.dumps(sessions.plan.to_dict())
        """The plan in force, as each round's weights carry it to the device."""
        self.aggregator, self.channels, self.recorder, self.progress = aggregator, channels, recorder, progress
        self.where, self.classes = where, classes
        self.fail = fail
        self.aggregated = aggregated
        """Called after each round's aggregation, with the round."""
        self.stopping = threading.Event()
        self.crash: BaseException | None = None
        """A fault of the server itself, which stopped every lane."""
        self.bar: Bar | None = None
        """The progress bar each action done advances, while one shows."""
        self.began = now()
        """When training started (the clock reading): devices' timelines must fall after it, less timeout_s."""
        self.compute = ServerCompute(schedule.server_order)
        self._lanes: list[threading.Thread] = []
        self._lock = threading.Lock()

    def begin(self, start: float, bar: Bar | None) -> None:
        """Training starts at clock reading `start`; each action done advances `bar`."""
        self.began, self.bar = start, bar

    def start(self, lane: int, first_round: int) -> None:
        """Walk one lane (a device's id, or COORDINATOR) on a thread of its own, from `first_round` on."""
        thread = threading.Thread(target=self._run, args=(lane, first_round), daemon=True, name=f"lane-{lane}")
        with self._lock:
            self._lanes.append(thread)
        thread.start()

    def join(self) -> None:
        """Wait for every lane, including those started meanwhile (a rejoining device's)."""
        joined = 0
        while True:
            with self._lock:
                if joined == len(self._lanes):
                    return
                thread = self._lanes[joined]
            thread.join()
            joined += 1

    def replan(self, plan: RunPlan, schedule: Schedule) -> None:
        """Walk `schedule` (a re-planned run's) from the next round on, and send `plan` with its weights."""
        self.schedule, self.plan_text = schedule, json.dumps(plan.to_dict())
        self.compute.priority = list(schedule.server_order) if schedule.server_order is not None else None

    def reset(self, device: int) -> int | None:
        """A rejoining device's replica starts again from its last finished round, between two server actions; return
        that round."""
        with self.compute.turn(device):
            return self.aggregator.reset(device)

    def _run(self, lane: int, first_round: int) -> None:
        if lane != COORDINATOR and self.membership.is_out(lane):
            return  # refused before training
        round_ = first_round
        try:
            for action in self._lane(lane, first_round):
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
                with self.compute.turn(lane):
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
                self.progress.advance()
                if self.bar is not None:
                    self.bar.update()
        except (PeerError, WireError) as exc:
            self.fail(lane, exc, round_)
        except Exception as exc:  # a fault of the server itself: stop every lane rather than hang
            self.crash = exc
            self.membership.abort()

    def _lane(self, lane: int, first_round: int) -> Iterator[Action]:
        """A lane's actions from `first_round` on, each round's from the schedule in force when the round before it
        was aggregated (a re-plan there changes what the rounds after it hold)."""
        round_ = first_round
        while True:
            for action in self.schedule.lane(Resource.SERVER, lane, round_):
                if action.key.round != round_ and lane != COORDINATOR and self.schedule.mode != "sl":
                    round_ = action.key.round
                    self.membership.wait(Key(Resource.SERVER, COORDINATOR, Op.AGGREGATE, round_ - 1))
                    break  # take the next round from the schedule as it stands now
                yield action
            else:
                return

    def execute(self, action: Action, received: list[pb.Envelope]) -> dict[str, float]:
        """Do one server action; return what the timeline should note about it."""
        key, d = action.key, action.key.device
        if key.op is Op.SEND_WEIGHTS:
            weights = self.channels[d].encode(Op.WEIGHTS, self.aggregator.weights_for(d))
            self.sessions[d].outbox.send(key, weights, self.plan_text)
        elif key.op is Op.LOAD_WEIGHTS:
            spec = self.aggregator.parts.specs[d]
            self.aggregator.upload(d, self.channels[d].decode(Op.WEIGHTS, received[0].tensors, spec))
            self.recorder.extend_json(check_events(received[0], d, self.config, self._window()))
        elif key.op is Op.TRAIN:
            return self._train(key, received[0])
        elif key.op is Op.STEP:
            replica = self.aggregator.replicas[d]
            if replica.optimizer is not None:
                replica.bank.step(key.iteration, replica.optimizer)
        elif key.op is Op.AGGREGATE:
            for device, exc in self.aggregator.aggregate(key.round).items():
                self.fail(device, exc, key.round)
            self.aggregated(key.round)
            self.aggregator.save(key.round)  # after a re-plan there, so that the checkpoint holds the plan in force
        else:
            raise RuntimeError(f"the server cannot execute {key}")
        return {}

    def _window(self) -> tuple[float, float]:
        """When a device's events may lie: from training start to now, each widened by timeout_s for the clocks."""
        return (self.began - self.config.timeout_s, now() + self.config.timeout_s)

    def _train(self, key: Key, message: pb.Envelope) -> dict[str, float]:
        """The server part's forward and backward on one micro-batch's activation; its gradient goes back."""
        d = key.device
        size = self.schedule.microbatch_sizes(d, key.iteration)[key.microbatch]
        batch = self.schedule.batch_sizes[d][key.iteration]
        payload = self.channels[d].decode(
            Op.ACTIVATION,
            message.tensors,
            {
                "activation": ((size, *self.aggregator.parts.activation_shapes[d]), torch.float32),
                "labels": ((size,), torch.int64),
            },
        )
        labels = payload["labels"]
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.classes):
            raise WireError(f"labels from device {d} fall outside 0..{self.classes - 1}")
        activation, labels = (t.to(self.where) for t in (payload["activation"], labels))
        activation.requires_grad_()
        replica = self.aggregator.replicas[d]
        replica.bank.before_train(key.iteration)
        started = now()
        with hardware.autocast(self.where, self.config.server_amp):
            logits = replica.part(activation)
            loss = scaled_loss(logits, labels, batch)
        hardware.synchronize(self.where)
        forward_s = now() - started
        if not torch.isfinite(loss):
            raise WireError(f"the activation from device {d} makes the loss {loss.item()}")
        loss.backward()
        assert activation.grad is not None
        gradient = hardware.to_cpu({"gradient": activation.grad})
        self.sessions[d].outbox.send(key, self.channels[d].encode(Op.GRADIENT, gradient))
        return {
            "loss_sum": loss.item() * batch,
            "samples": size,
            "forward_s": forward_s,
            "backward_s": now() - started - forward_s,
        }
