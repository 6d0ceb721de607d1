"""What each side accepts from the other: who a device is, what it declares, how big its messages may be, and
which plans a device will serve. Everything a peer says is checked here against the plan before it is used."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Container
from dataclasses import dataclass
from typing import Any, TypeGuard

from torch import nn

from pipelearn.config import RunConfig
from pipelearn.data import Dataset, canonical_name
from pipelearn.data.dealing import dealt_samples
from pipelearn.events import compute_track, link_track
from pipelearn.models import canonical_model_name
from pipelearn.models.parts import device_part, output_shape
from pipelearn.plan import RunPlan, plan_message, read_plan_message, schedule_for
from pipelearn.planner.search import MAX_MICROBATCHES
from pipelearn.schedule import Resource, microbatch_sizes
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError
from pipelearn.transport.service import kind_name

HELLO_BYTES = 4096
"""The largest message a device may send before it is admitted (its HELLO)."""
HEADROOM_BYTES = 1 << 20
"""Room above a plan's largest tensor payload for the envelope, the safetensors header and control text."""
EVENT_BYTES = 1024
"""Room for one timeline event in a device's EVENTS message (a recorded event takes about 200 bytes)."""
IN_FLIGHT_MARGIN = 4
"""Frames a device may have waiting beyond one mini-batch's micro-batches (weights, events, control)."""

PLAN_LIMITS: dict[str, int] = {
    "devices": 100_000,
    "batch_size": 1_000_000,
    "epochs": 1_000_000,
    "microbatches": 1_000_000,
    "device_slowdown": 10_000,
}
"""Upper bounds a device puts on a server's plan: no real run comes near them; a plan past them is refused
rather than followed into unbounded memory or time."""


@dataclass(frozen=True)
class PlanLimits:
    """What the server expects of each device, computed from the configuration and the training split."""

    samples: list[int]
    """Each device's training samples, as the seeded partition deals them."""
    max_bytes: list[int]
    """Each device's largest message: its weights, one micro-batch's activation or its timeline, plus headroom."""
    in_flight: int
    """Messages a device may have waiting at the server."""

    @property
    def receive_bytes(self) -> int:
        """The gRPC receive limit: the largest device limit plus headroom, so that a message a little over its
        device's limit still arrives and is refused with a reason; gRPC cuts off anything larger."""
        return max(self.max_bytes) + HEADROOM_BYTES


def device_samples(config: RunConfig, train: Dataset) -> list[int]:
    """Each device's training samples as the run deals them; ValueError where a device would get none."""
    samples = dealt_samples(config, train)
    empty = [d for d, n in enumerate(samples) if n == 0]
    if empty:
        raise ValueError(
            f"devices {empty} get no training samples from the {config.partition} partition; "
            "raise samples_per_device or dirichlet_alpha, or lower devices"
        )
    return samples


def plan_limits(
    config: RunConfig,
    plan: RunPlan,
    model: nn.Sequential,
    input_shape: tuple[int, ...],
    samples: list[int],
    adapting: bool = False,
) -> PlanLimits:
    """Every device's message limits, for devices holding `samples` (`device_samples`); `adapting`: for any split
    and micro-batch count a re-plan may choose."""
    schedule = schedule_for(config, plan, samples)
    limits = []
    most = max(MAX_MICROBATCHES, *plan.microbatches) if adapting and config.mode == "pipelearn" else 0
    for d in range(config.devices):
        splits = range(len(model) + 1) if adapting and config.mode != "fl" else [plan.devices[d].split]
        counts = [1] if adapting else [_microbatches(config, plan, d)]  # one micro-batch: the largest activation
        largest = 0
        for split in splits:
            part = device_part(model, split)
            weights = sum(t.numel() * t.element_size() for t in part.state_dict().values())
            activation = 0
            if config.mode != "fl":
                size = microbatch_sizes(min(config.batch_size, samples[d]), min(counts))[0]
                activation = size * (math.prod(output_shape(part, input_shape)) * 4 + 8)
            largest = max(largest, weights, activation)
        actions = len(schedule.lane(Resource.DEVICE, d)) + len(schedule.lane(Resource.UPLINK, d))
        actions *= max(1, most // max(1, _microbatches(config, plan, d)))  # a re-plan may cut finer
        limits.append(largest + actions * EVENT_BYTES + HEADROOM_BYTES)  # weights carry events
    # under staleness a lane holds the next mini-batch's micro-batches beside this one's
    deepest = max(most, *(_microbatches(config, plan, d) for d in range(config.devices)))
    in_flight = (1 + config.staleness) * deepest + IN_FLIGHT_MARGIN
    return PlanLimits(samples=samples, max_bytes=limits, in_flight=in_flight)


def _microbatches(config: RunConfig, plan: RunPlan, device: int) -> int:
    return plan.devices[device].microbatches if config.mode == "pipelearn" else 1


def device_plan(config: RunConfig, plan: RunPlan) -> str:
    """The plan sent to devices: the run's config without the server's own paths (its data and output), and the
    resolved plan."""
    return plan_message(dataclasses.replace(config, data_dir=None, download=False, out=""), plan)


def plan_words(config: RunConfig, plan: RunPlan, device: int) -> str:
    """What the plan gives one device, for a log line: its split and micro-batches."""
    setup = plan.devices[device]
    if config.mode == "fl":
        return "the whole model"
    return f"split {setup.split}, {setup.microbatches} micro-batch{'es' if setup.microbatches != 1 else ''}"


def admit(hello: pb.Envelope, config: RunConfig, certified: int | None, joined: Container[int]) -> int:
    """The id a joining device may take, from its HELLO and its certificate's id (None without TLS)."""
    if hello.kind != pb.HELLO:
        raise WireError(f"a device must start with HELLO, not {kind_name(hello.kind)}")
    device = hello.device
    if certified is not None and device != certified:
        raise WireError(
            f"this device's certificate is for device {certified}, but its HELLO claims device {device}; "
            "a device may only join under the id its credentials name"
        )
    if not 0 <= device < config.devices:
        raise WireError(f"device id {device} is out of range: this run has devices 0..{config.devices - 1}")
    if device in joined:
        raise WireError(f"device id {device} has already joined; give each device its own --id")
    return device


def check_ready(message: pb.Envelope, device: int, samples: int) -> None:
    """A device's READY must declare exactly the sample count the plan gives it."""
    if message.kind != pb.READY:
        raise WireError(f"device {device} sent {kind_name(message.kind)} before READY")
    _check_tag(message, device)
    declared = _json_object(message.text, "READY").get("samples")
    if not _whole(declared) or declared != samples:
        raise WireError(
            f"device {device} declares {declared!r} training samples but the plan gives it {samples}: its data set "
            "differs from the server's (check the device's --data-dir and the data set's files)"
        )


_EVENT_KEYS = {"track", "name", "start", "end", "args"}
_COUNT_ARGS = {"epoch", "samples", "bytes"}
"""Event args the report adds up or indexes by: whole numbers of 0 or more."""


def check_events(message: pb.Envelope, device: int, config: RunConfig, window: tuple[float, float]) -> list[Any]:
    """A device's timeline, from its EVENTS at the end or the part that comes with each round's WEIGHTS: events on
    its own tracks only (its compute, and the link it times: the uplink, or with `netns` the downlink), with finite
    times inside the run's window."""
    if message.kind not in (pb.EVENTS, pb.WEIGHTS):
        raise WireError(f"expected EVENTS, got {kind_name(message.kind)}")
    _check_tag(message, device)
    if message.kind == pb.WEIGHTS and not message.text:
        return []
    try:
        events = json.loads(message.text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise WireError(f"device {device}'s timeline is not valid JSON: {exc}") from None
    if not isinstance(events, list):
        raise WireError(f"device {device}'s timeline is not a list of events")
    tracks = {compute_track(device), link_track(device, "uplink")}
    if config.netns:  # the kernel paces the links: a device times its downlink's transfers as they arrive
        tracks = {compute_track(device), link_track(device, "downlink")}
    low, high = window
    for i, event in enumerate(events):
        problem = _event_problem(event, tracks, config.epochs, low, high)
        if problem:
            raise WireError(f"event {i} of device {device}'s timeline {problem}")
    return events


def _event_problem(event: object, tracks: set[str], epochs: int, low: float, high: float) -> str:
    if not isinstance(event, dict) or set(event) != _EVENT_KEYS:
        return f"must be an object with exactly the keys {sorted(_EVENT_KEYS)}"
    if not isinstance(event["track"], str) or event["track"] not in tracks:
        return f"is on track {str(event['track'])[:100]!r}, not one of this device's own {sorted(tracks)}"
    if not isinstance(event["name"], str) or len(event["name"]) > 200:
        return "has no name of at most 200 characters"
    start, end = event["start"], event["end"]
    if not (_number(start) and _number(end) and low <= start <= end <= high):
        return f"runs from {start!r} to {end!r}, outside the run's time ({low:.3f} to {high:.3f})"
    args = event["args"]
    if not isinstance(args, dict) or len(args) > 32:
        return "has args that are not an object of at most 32 entries"
    for key, value in args.items():
        if not (value is None or isinstance(value, bool | str) or _number(value)):
            return f"has arg {str(key)[:100]!r} that is not a finite number, text, true/false or null"
        if key in _COUNT_ARGS and not (_whole(value) and value >= 0):
            return f"has arg {key!r} = {value!r}, not a whole number of 0 or more"
        if key == "loss_sum" and not _number(value):
            return f"has arg 'loss_sum' = {value!r}, not a finite number"
    if isinstance(args.get("epoch"), int) and args["epoch"] >= epochs:
        return f"names epoch {args['epoch']}, but the run has {epochs}"
    if "loss_sum" in args and "samples" not in args:
        return "has a loss_sum without its samples"
    return ""


def check_plan(text: str, device: int) -> tuple[RunConfig, RunPlan]:
    """The server's plan, which a device refuses if it breaks RunConfig's rules, names a model or data set it does
    not know, leaves out this device's id or sets sizes past PLAN_LIMITS."""
    _json_object(text, "PLAN")
    try:
        config, plan = read_plan_message(text)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise WireError(f"the server's plan is not a valid configuration: {exc}") from None
    try:
        canonical_model_name(config.model)
        canonical_name(config.dataset)
    except ValueError as exc:
        raise WireError(f"the server's plan names something this device does not have: {exc}") from None
    if not 0 <= device < config.devices:
        raise WireError(f"the server's plan has devices 0..{config.devices - 1}, which leaves out this device {device}")
    sizes = {
        "devices": config.devices,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "microbatches": _microbatches(config, plan, device),
        "device_slowdown": plan.devices[device].slowdown,
    }
    for key, value in sizes.items():
        if value > PLAN_LIMITS[key]:
            raise WireError(f"the server's plan sets {key} to {value}, past this device's limit of {PLAN_LIMITS[key]}")
    return config, plan


def check_replan(text: str, config: RunConfig, blocks: int) -> RunPlan:
    """The plan a round's weights come with, which a device refuses unless it fits the run: one setup per device,
    splits within the model, and micro-batch counts the mode allows within PLAN_LIMITS."""
    try:
        plan = RunPlan.from_dict(_json_object(text, "the plan with the weights"))
    except ValueError as exc:
        raise WireError(f"the plan the server sent with the weights is not valid: {exc}") from None
    if len(plan.devices) != config.devices:
        raise WireError(f"the server's new plan has {len(plan.devices)} devices; this run has {config.devices}")
    for d, setup in enumerate(plan.devices):
        whole = blocks if config.mode == "fl" else None
        if not 0 <= setup.split <= blocks or (whole is not None and setup.split != whole):
            raise WireError(f"the server's new plan splits device {d} at {setup.split}, outside this model's blocks")
        most = PLAN_LIMITS["microbatches"] if config.mode == "pipelearn" else 1
        if not 1 <= setup.microbatches <= most:
            raise WireError(f"the server's new plan gives device {d} {setup.microbatches} micro-batches")
    return plan


def device_threads(config: RunConfig) -> int:
    """The torch threads a device uses: the plan's, but never more than this machine has cores."""
    return max(1, min(config.threads, os.cpu_count() or 1))


def check_start(message: pb.Envelope, config: RunConfig, device: int, samples: int) -> list[int]:
    """The sample counts in the server's START: one per device, each at least 1, this device's its own count."""
    counts = _json_object(message.text, "START").get("samples")
    if not isinstance(counts, list) or len(counts) != config.devices or not all(_whole(n) and n >= 1 for n in counts):
        raise WireError(f"the server's START gives no sample count of at least 1 for each of {config.devices} devices")
    if counts[device] != samples:
        raise WireError(f"the server's START gives this device {counts[device]} samples, but it holds {samples}")
    return counts


_RUN_ID = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True)
class Begin:
    """Where the server's START has a device begin: its first round, the run's identity and the round whose
    optimizer state it takes back from its own disk (None: it starts afresh)."""

    round: int
    run_id: str
    restore: int | None


def check_begin(message: pb.Envelope, rounds: int) -> Begin:
    """The first round (0 unless resuming or rejoining), run identity and round to restore in the server's START,
    each within the run: a round past it, or a run identity that is not a short hexadecimal name (it names files on
    this device's disk), is refused."""
    begin = _json_object(message.text, "START")
    first, run_id, restore = begin.get("round", 0), begin.get("run", ""), begin.get("restore")
    if not (_whole(first) and 0 <= first <= rounds):
        raise WireError(f"the server starts this device at round {first!r} of a {rounds}-round run")
    if run_id and not (isinstance(run_id, str) and _RUN_ID.fullmatch(run_id)):
        raise WireError(f"the server's START names the run {str(run_id)[:80]!r}, not a hexadecimal identity")
    if restore is not None and not (_whole(restore) and 0 <= restore < first):
        raise WireError(f"the server's START restores round {restore!r}, which is not a round before {first}")
    return Begin(first, str(run_id), restore)


def _check_tag(message: pb.Envelope, device: int) -> None:
    if message.device != device:
        raise WireError(f"device {device} sent {kind_name(message.kind)} tagged as device {message.device}")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise WireError(f"the text of {what} is not a JSON object")
    return value


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
