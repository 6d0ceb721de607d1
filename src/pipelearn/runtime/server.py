"""The server of a run: built from a resolved plan, it admits every device, walks its lanes of the schedule with a
ServerWorker, aggregates and writes the results. `prepare` (pipelearn.runtime.setup) resolves what it is built from;
`serve` does it all."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from typing import Any

import torch

from pipelearn.config import RunConfig
from pipelearn.events import Recorder, Timeline, now
from pipelearn.logs import progress_bar
from pipelearn.models.parts import device_part
from pipelearn.plan import schedule_for
from pipelearn.planner.adapt import Adapter, Replan, adapter_for
from pipelearn.runtime.aggregation import Aggregator, device_parts, make_replicas
from pipelearn.runtime.agreement import fingerprint
from pipelearn.runtime.checkpoint import Checkpoint, check_fits
from pipelearn.runtime.checks import check_ready
from pipelearn.runtime.evaluate import RoundEvaluator
from pipelearn.runtime.membership import Membership, RejoinError
from pipelearn.runtime.results import write_run_results
from pipelearn.runtime.server_worker import ServerWorker
from pipelearn.runtime.sessions import Sessions
from pipelearn.runtime.setup import ServerSetup, prepare_into
from pipelearn.runtime.setup import prepare as prepare  # where tests and plug-ins have always found it
from pipelearn.schedule import COORDINATOR, Resource, splice
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.channel import channel_for
from pipelearn.transport.codec import WireError
from pipelearn.transport.credentials import ServerCredentials
from pipelearn.transport.inbox import PeerError
from pipelearn.transport.liveness import Progress
from pipelearn.transport.service import envelope

State = dict[str, torch.Tensor]
log = logging.getLogger("pipelearn.server")


class Server:
    """The server of one run; `listen`, then `run` until the run is over (from a checkpoint's next round if given)."""

    def __init__(
        self,
        setup: ServerSetup,
        progress: bool = True,
        resume: Checkpoint | None = None,
        adapter: Adapter | None = None,
    ) -> None:
        began = now()
        config, self.plan, self.test, self.model = setup.config, setup.plan, setup.test, setup.model
        samples = setup.limits.samples
        self.adapter = adapter or adapter_for(config, setup.model, setup.test.input_shape, setup.profile, samples)
        """Decides after each aggregation whether the rounds after it run another plan; None: never."""
        self.replans: list[Replan] = []
        self.config, self.progress, self.resume = config, progress, resume
        self.limits, self.samples, self.torch_device = setup.limits, setup.limits.samples, setup.where
        state: State = {k: v.clone() for k, v in setup.model.state_dict().items()}
        if resume is not None:
            check_fits(resume, state, self.samples)
            state = dict(resume.weights)
        self.run_id = resume.run_id if resume is not None and resume.run_id else uuid.uuid4().hex
        """The run's identity, in its checkpoints and in what each device keeps of its optimizer state."""
        self.first_round = resume.rounds_done if resume is not None else 0
        self.schedule = schedule_for(config, self.plan, self.samples)
        self.recorder = Recorder()
        self.errors: dict[int, str] = dict(resume.errors) if resume else {}
        self.membership = Membership(
            config.devices, resume.dropped if resume else (), resume.rejoined if resume else ()
        )
        parts = device_parts(setup.model, self.plan, self.test.input_shape)
        data = (self.test.input_shape, self.test.num_classes)
        replicas = make_replicas(config, self.plan, state, parts, self.torch_device, data)
        self.aggregator = Aggregator(config, state, replicas, parts, self.samples, self._checkpoint)
        if resume is not None:
            self.aggregator.restore(resume)
        self.rounds = RoundEvaluator(config, setup.model, self.test, self.schedule, self.samples)
        actions_done = Progress()
        fingerprints = {
            d: fingerprint(device_part(setup.model, s.split), self.test.input_shape, self.test.num_classes)
            for d, s in enumerate(self.plan.devices)
        }
        self.sessions = Sessions(
            config, self.plan, setup.limits, self.membership, actions_done, fingerprints, self._rejoin, self.run_id
        )
        self.channels = {d: channel_for(config, "server") for d in range(config.devices)}
        self.worker = ServerWorker(
            config,
            self.schedule,
            self.sessions,
            self.membership,
            self.aggregator,
            self.channels,
            self.recorder,
            actions_done,
            where=self.torch_device,
            classes=self.test.num_classes,
            fail=self._fail,
            aggregated=self._aggregated,
        )
        self.device_startup_s: list[float] = []
        self.start: float | None = None
        """When training started (the clock reading), once it has."""
        self.on_start: Callable[[float], None] | None = None
        """Called with the clock reading at which training starts (the origin of the links' rate schedules)."""
        self.startup_s = setup.startup_s + now() - began
        """Seconds of one-off work before training: data, model, plan, replicas, optimizers and warm-up."""

    @property
    def global_state(self) -> State:
        """The global model after the last aggregation."""
        return self.aggregator.global_state

    def listen(self, address: str, credentials: ServerCredentials | None = None, *, insecure: bool = False) -> int:
        """Start serving on HOST:PORT (port 0 picks one) over mutual TLS, or plain text if `insecure`."""
        return self.sessions.listen(address, credentials, insecure=insecure)

    def run(self) -> dict[str, Any]:
        """Wait for every device, train, evaluate, write the results; return the metrics."""
        try:
            ready = self.sessions.wait_ready()
        except Exception as exc:
            self._stop_before_training(exc)
            raise
        self.device_startup_s = ready.startup_s
        # a resumed run's clock starts where its checkpoint left off: its times, trace and rounds go on from there
        start = self.start = now() - (self.resume.elapsed_s if self.resume else 0.0)
        if self.resume is not None:
            self._go_on_from(self.resume, start)
        if self.on_start is not None:
            self.on_start(start)
        self.membership.begin(self.schedule.rounds, self.first_round, start)
        for d, reason in ready.refused.items():
            self._fail(d, WireError(reason), self.first_round)
        for d in self.sessions:
            if not self.membership.is_out(d):
                restore = self.aggregator.device_rounds.get(d)
                self.sessions.start(d, self.schedule, self.first_round, start, self.recorder, restore)
        total = sum(len(lane) for (r, _), lane in self.schedule.lanes.items() if r is Resource.SERVER)
        bar = progress_bar(
            total=total, desc=f"{self.config.mode} server", unit="action", enabled=self.progress, log=log
        )
        with bar:
            self.rounds.begin(start, bar.set_postfix_str)
            self.worker.begin(start, bar)
            for lane in [*range(self.config.devices), COORDINATOR]:
                self.worker.start(lane, self.first_round)
            self.worker.join()
        end = now()
        self.rounds.finish()
        crash = self.worker.crash
        try:
            self.aggregator.checkpoints.close()
        except RuntimeError as exc:
            crash = crash or exc
        if crash is not None:
            self.sessions.shutdown()
            raise RuntimeError(f"the server failed: {crash!r}") from crash
        self._collect_events(start)
        self.sessions.shutdown()
        return write_run_results(self, start, end)

    def _aggregated(self, round: int) -> None:
        if self.rounds.aggregated(round, self.aggregator.global_state, self.recorder.events):
            self._stop_early()
            return
        if self.replans and self.replans[-1].round == round - 1:
            self.replans[-1].next_round_s = self.rounds.records[-1].time_s - self.rounds.records[-2].time_s
        if self.adapter is not None and round + 1 < self.schedule.rounds:
            decision = self.adapter.after_round(round, self.recorder.events, self.schedule, self.plan)
            if decision is not None:
                self._replan(decision)

    def _replan(self, decision: Replan) -> None:
        """Run `decision.new` from the round after `decision.round`: every part of the server follows it, and each
        device learns it with that round's weights."""
        after = decision.round + 1
        self.plan = decision.new
        self.schedule = splice(self.schedule, schedule_for(self.config, self.plan, self.samples), after)
        parts = device_parts(self.model, self.plan, self.test.input_shape)
        data = (self.test.input_shape, self.test.num_classes)
        self.aggregator.replan(self.plan, parts, data, self.torch_device)
        self.worker.replan(self.plan, self.schedule)
        self.sessions.replan(self.plan, self.schedule, after)
        self.rounds.follow(self.schedule)
        assert self.start is not None  # aggregations happen only once training runs
        decision.at_s = now() - self.start
        self.replans.append(decision)
        splits, counts = self.plan.splits, self.plan.microbatches
        log.info(
            "re-planned after round %d: split %s, micro-batches %s; predicted epoch %.2f s against %.2f s",
            decision.round + 1,
            splits,
            counts,
            decision.predicted_new_s,
            decision.predicted_old_s,
        )

    def _go_on_from(self, resume: Checkpoint, start: float) -> None:
        """Take back what the checkpoint kept of the run before it: its timeline (on this part's clock, which starts
        at `start`), its rounds' records and the server's random state."""
        self.recorder.extend_json([{**e, "start": e["start"] + start, "end": e["end"] + start} for e in resume.events])
        self.rounds.resume(resume.records, len(self.recorder.events), resume.weights)
        if resume.rng is not None:
            torch.set_rng_state(resume.rng)

    def bytes_so_far(self) -> tuple[list[int], list[int]]:
        """Per device, the bytes received from it and sent to it, over every part of the run."""
        up = self.sessions.bytes_per_device(lambda s: s.inbox.bytes_received)
        down = self.sessions.bytes_per_device(lambda s: s.outbox.bytes_sent)
        if self.resume is not None and self.resume.bytes_up:
            up = [a + b for a, b in zip(up, self.resume.bytes_up, strict=True)]
            down = [a + b for a, b in zip(down, self.resume.bytes_down, strict=True)]
        return up, down

    def _checkpoint(self, round: int, state: State) -> Checkpoint:
        assert self.start is not None  # checkpoints are made after aggregations, once training runs
        up, down = self.bytes_so_far()
        return Checkpoint(
            config=self.config,
            rounds_done=round + 1,
            rounds=self.schedule.rounds,
            samples=self.samples,
            weights=state,
            elapsed_s=self.membership.elapsed(),
            dropped=list(self.membership.dropped),
            rejoined=list(self.membership.rejoined),
            errors=dict(self.errors),
            run_id=self.run_id,
            plan=self.plan.to_dict(),
            optimizers=dict(self.aggregator.optimizer_states),
            device_rounds=dict(self.aggregator.device_rounds),
            rng=torch.get_rng_state(),
            records=self.rounds.snapshot(),
            events=Timeline(self.recorder.events, len(self.recorder.events), self.start),
            bytes_up=up,
            bytes_down=down,
        )

    def _rejoin(self, device: int) -> None:
        """Take a dropped device back on its new connection: from the next round, with the current global model."""
        session = self.sessions[device]
        try:
            if self.config.mode == "sl":
                raise RejoinError("an sl run hands one device half from device to device; a device cannot rejoin it")
            check_ready(session.inbox.take(), device, self.samples[device])
            restore = self.worker.reset(device)
            first = self.membership.rejoin(device)
        except (PeerError, WireError, RejoinError) as exc:
            self.membership.release(device)
            log.warning("device %d could not rejoin: %s", device, exc)
            self.sessions.end(device, pb.ERROR, str(exc))
            return
        log.info("device %d rejoined; it takes part again from round %d", device, first)
        assert self.start is not None  # a device can only rejoin once training runs
        self.sessions.start(device, self.schedule, first, self.start, self.recorder, restore)
        self.worker.start(device, first)

    def _stop_before_training(self, exc: Exception) -> None:
        for d in self.sessions:
            if d not in self.errors:
                self.sessions.end(d, pb.ERROR, f"the run was stopped before training: {exc}")
        self.sessions.shutdown()

    def _stop_early(self) -> None:
        """End the run at this aggregation: every lane stops, and every device is told the run is over."""
        self.worker.stopping.set()
        taking_part = [d for d in self.sessions if not self.membership.is_out(d)]
        self.sessions.tell(pb.DONE, "the target accuracy was reached: stop", taking_part)

    def _fail(self, device: int, exc: Exception, round: int) -> None:
        if self.membership.is_out(device):
            return
        log.warning("device %d failed in round %d and was dropped from the run: %s", device, round, exc)
        self.errors[device] = str(exc)
        # the session is taken before the drop: once dropped, a new connection may take the device's place
        session = self.sessions[device]
        self.membership.drop(device, round, str(exc))
        session.outbox.control(envelope(pb.ERROR, device, text=str(exc)))
        session.outbox.close()

    def _collect_events(self, start: float) -> None:
        window = (start - self.config.timeout_s, now() + self.config.timeout_s)
        for d in self.sessions:
            if self.membership.is_out(d):
                continue
            try:
                self.sessions.collect_events(d, self.recorder, window)
            except (PeerError, WireError) as exc:
                log.warning("no timeline from device %d: %s", d, exc)
                self.errors[d] = f"no timeline: {exc}"


def serve(
    config: RunConfig,
    listen: str,
    credentials: ServerCredentials | None,
    progress: bool = True,
    resume: Checkpoint | None = None,
) -> dict[str, Any]:
    """Run the server of a run on HOST:PORT (plain text if `credentials` is None) until the run is over (from a
    checkpoint if given, into the directory it was read from); return the metrics. The output directory is claimed
    as `pipelearn run` claims it (pipelearn.metrics.outdir.claim)."""
    torch.set_num_threads(config.threads)
    if config.host_cores == "auto":  # the devices compute elsewhere, not on this machine's cores
        config = dataclasses.replace(config, host_cores="off")
    server = Server(prepare_into(config, resume), progress, resume)
    port = server.listen(listen, credentials, insecure=credentials is None)
    security = "plain text" if credentials is None else "mutual TLS"
    log.info("listening on port %d (%s); waiting for %d devices", port, security, config.devices)
    return server.run()
