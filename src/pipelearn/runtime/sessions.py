"""The server's side of its devices' connections: admission, one session per device, the ready handshake, and what
the server says to each device outside the schedule (START, ERROR, DONE)."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from pipelearn.config import RunConfig
from pipelearn.events import Recorder, link_track, now
from pipelearn.plan import RunPlan
from pipelearn.runtime.agreement import differences, refusal
from pipelearn.runtime.checks import (
    HELLO_BYTES,
    PlanLimits,
    admit,
    check_events,
    check_ready,
    device_plan,
    plan_words,
)
from pipelearn.runtime.membership import Membership
from pipelearn.schedule import Resource, Schedule
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError
from pipelearn.transport.credentials import ServerCredentials, peer_device
from pipelearn.transport.inbox import Inbox, PeerError
from pipelearn.transport.link import Outbox
from pipelearn.transport.liveness import Progress, progress_marks
from pipelearn.transport.rates import link_spec
from pipelearn.transport.service import envelope, start_server

log = logging.getLogger("pipelearn.server")


@dataclass
class Session:
    """One device's connection: what it sent us and what we send it."""

    inbox: Inbox
    outbox: Outbox


@dataclass(frozen=True)
class Ready:
    """What the devices declared before training: each one's start-up seconds, and why any was refused."""

    startup_s: list[float]
    refused: dict[int, str]


class Sessions(Mapping[int, Session]):
    """The current session of each device that has joined, by device id; serves gRPC until `shutdown`.

    A device joins with HELLO (checked against its certificate and the plan), is sent the plan, and declares READY
    with its sample count and model fingerprint. A device the server dropped may connect again: its new session
    replaces the old one (kept in `retired`), and `on_rejoin(device)` is called on a thread of its own.
    """

    def __init__(
        self,
        config: RunConfig,
        plan: RunPlan,
        limits: PlanLimits,
        membership: Membership,
        progress: Progress,
        fingerprints: Mapping[int, Any],
        on_rejoin: Callable[[int], None],
        run_id: str = "",
    ) -> None:
        self.config, self.plan, self.limits, self.membership = config, plan, limits, membership
        self.run_id = run_id
        """The run's identity, which START tells each device (it names the optimizer state the device keeps)."""
        self.progress = progress
        self.fingerprints = fingerprints
        """Per device, the fingerprint of the model part the plan gives it, which its READY must declare."""
        self.on_rejoin = on_rejoin
        self.retired: list[tuple[int, Session]] = []
        """Sessions of dropped devices that have since rejoined on a new connection."""
        self._sessions: dict[int, Session] = {}
        self._first: dict[int, int] = {}
        self._recorder: Recorder | None = None
        """Per device, the round its current session started training at."""
        self._joined = threading.Condition()
        self._grpc: grpc.Server | None = None
        self._tls = False

    def __getitem__(self, device: int) -> Session:
        return self._sessions[device]

    def __iter__(self) -> Iterator[int]:
        return iter(dict(self._sessions))

    def __len__(self) -> int:
        return len(self._sessions)

    def listen(self, address: str, credentials: ServerCredentials | None = None, *, insecure: bool = False) -> int:
        """Start serving on HOST:PORT (port 0 picks one) over mutual TLS, or plain text if `insecure`."""
        if (credentials is None) != insecure:
            raise ValueError("serve with credentials (mutual TLS), or with insecure=True for plain text; not both")
        self._tls = credentials is not None
        workers = 2 * self.config.devices + 8
        self._grpc, port = start_server(self.handle, address, workers, credentials, self.limits.receive_bytes)
        return port

    def handle(self, requests: Any, context: grpc.ServicerContext) -> Any:
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
            log.warning("refused a device at %s: %s", who, exc)
            yield envelope(pb.ERROR, 0, text=str(exc))
            return
        link = self.plan.devices[device].link
        outbox = Outbox(link_spec(self.config, device, "down", now(), link), progress=self.progress)
        outbox.beat(self.config.heartbeat_s, device)
        inbox.peer = f"device {device}"
        inbox.max_bytes = self.limits.max_bytes[device]
        context.add_callback(outbox.close)
        outbox.control(envelope(pb.PLAN, device, text=device_plan(self.config, self.plan), clock=now()))
        with self._joined:
            rejoining = device in self._sessions  # _admit lets an id in twice only to take a dropped device back
            if rejoining:
                self.retired.append((device, self._sessions[device]))
            self._sessions[device] = Session(inbox, outbox)
            self._joined.notify_all()
        again = "connected again" if rejoining else "joined"
        log.info("device %d %s from %s: %s", device, again, context.peer(), plan_words(self.config, self.plan, device))
        if rejoining:
            threading.Thread(target=self.on_rejoin, args=(device,), daemon=True, name=f"rejoin-{device}").start()
        yield from outbox

    def _admit(self, hello: pb.Envelope, certified: int | None) -> int:
        with self._joined:
            device = admit(hello, self.config, certified, ())
            if device in self._sessions and not self.membership.reserve(device):
                raise WireError(
                    f"device id {device} has already joined; give each device its own --id (a device that lost its "
                    "connection can rejoin once the server has dropped it)"
                )
        return device

    def wait_ready(self) -> Ready:
        """Wait for every device to join and declare READY: its sample count and model part as the plan has them."""
        with self._joined:
            if not self._joined.wait_for(lambda: len(self._sessions) == self.config.devices, self.config.timeout_s):
                missing = sorted(set(range(self.config.devices)) - set(self._sessions))
                raise PeerError(f"devices {missing} did not join within {self.config.timeout_s:g} s (timeout_s)")
        startup, refused = [], {}
        for d in range(self.config.devices):
            try:
                ready = self._sessions[d].inbox.take()
                check_ready(ready, d, self.limits.samples[d])
            except (PeerError, WireError) as exc:
                refused[d] = str(exc)
                startup.append(0.0)
                continue
            declared = json.loads(ready.text)
            startup.append(_seconds(declared.get("startup_s")))
            if found := differences(self.fingerprints[d], declared.get("fingerprint")):
                refused[d] = refusal(d, found)
        if len(refused) == self.config.devices:
            raise PeerError(f"every device was refused: {'; '.join(refused.values())}")
        return Ready(startup, refused)

    def start(
        self,
        device: int,
        schedule: Schedule,
        first_round: int,
        clock: float,
        recorder: Recorder,
        restore: int | None = None,
    ) -> None:
        """Send a device START, and have its downlink carry its schedule from `first_round` on; `clock` is when
        training started (the origin of the links' rate schedules); `restore` is the round whose optimizer state the
        device is to take back from its own disk (None: it starts afresh)."""
        session = self._sessions[device]
        self._first[device], self._recorder = first_round, recorder
        session.outbox.follow(
            link_spec(self.config, device, "down", clock, self.plan.devices[device].link),
            schedule.lane(Resource.DOWNLINK, device, first_round),
            link_track(device, "downlink"),
            recorder,
        )
        session.inbox.follow(progress_marks(schedule, device, first_round))
        if self.config.netns:  # the kernel paces the uplink: this side times its transfers as they arrive
            uplink = schedule.lane(Resource.UPLINK, device, first_round)
            session.inbox.time_transfers(uplink, link_track(device, "uplink"), recorder)
        start = {"samples": self.limits.samples, "round": first_round, "run": self.run_id, "restore": restore}
        session.outbox.control(envelope(pb.START, device, text=json.dumps(start), clock=clock))

    def replan(self, plan: RunPlan, schedule: Schedule, from_round: int) -> None:
        """From `from_round` on the devices follow `plan`: each downlink carries the new schedule's transfers, and
        each device's progress is read against it."""
        self.plan = plan
        for d, session in self._sessions.items():
            if d in self._first and not self.membership.is_out(d):
                session.outbox.replace_lane(schedule.lane(Resource.DOWNLINK, d, from_round))
                session.inbox.remark(progress_marks(schedule, d, self._first[d]))
                if self.config.netns and self._recorder is not None:
                    uplink = schedule.lane(Resource.UPLINK, d, self._first[d])
                    session.inbox.time_transfers(uplink, link_track(d, "uplink"), self._recorder)

    def end(self, device: int, kind: pb.Kind, text: str = "") -> None:
        """Tell a device ERROR or DONE (with why) and close its session."""
        session = self._sessions[device]
        session.outbox.control(envelope(kind, device, text=text))
        session.outbox.close()

    def tell(self, kind: pb.Kind, text: str, devices: list[int]) -> None:
        """Send each of `devices` one control message, leaving its session open."""
        for d in devices:
            self._sessions[d].outbox.control(envelope(kind, d, text=text))

    def collect_events(self, device: int, recorder: Recorder, window: tuple[float, float]) -> None:
        """Take a device's timeline into `recorder`, then tell it the run is over."""
        try:
            recorder.extend_json(check_events(self._sessions[device].inbox.take(), device, self.config, window))
        finally:
            self.end(device, pb.DONE)

    def bytes_per_device(self, count: Callable[[Session], int]) -> list[int]:
        """Per device, bytes over all its connections (a rejoined device has had more than one)."""
        totals = [count(self._sessions[d]) for d in range(self.config.devices)]
        for d, session in self.retired:
            totals[d] += count(session)
        return totals

    def shutdown(self) -> None:
        """Stop serving (a short grace for messages in flight)."""
        if self._grpc is not None:
            self._grpc.stop(grace=5).wait()


def _seconds(value: object) -> float:
    """A duration a device reports about itself: a finite number of 0 or more, else 0 (it is only reported)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    return float(value) if ok else 0.0  # type: ignore[arg-type]
