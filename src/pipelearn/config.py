"""Run configuration: typed dataclasses, network presets, TOML loading and validation in one place."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

Mode = Literal["fl", "sl", "sfl", "pipelearn"]
MODES: tuple[str, ...] = get_args(Mode)
CODECS: tuple[str, ...] = ("none", "fp16", "bf16", "int8", "topk")
"""Tensor compression on the wire; topk is written topk:R (see pipelearn.transport.compress)."""
Direction = Literal["up", "down"]
RateSteps = tuple[tuple[float, float], ...]
"""A link's rate over time: (seconds since training start, Mbit/s) steps, the first at 0 s."""
COMPUTE_SETTING = r"auto|cpu|mps|cuda(:\d+)?"
"""What a compute setting (server_device, a device's --compute) may say."""


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what to do."""


@dataclass(frozen=True)
class Link:
    """One device's network: bit rates in Mbit/s (inf for unlimited) and one-way latency in ms."""

    up_mbps: float
    """Uplink rate, device to server."""
    down_mbps: float
    """Downlink rate, server to device."""
    latency_ms: float
    """One-way latency, added to every message in each direction."""


NETWORK_PRESETS: dict[str, Link] = {
    "4g": Link(up_mbps=10, down_mbps=25, latency_ms=30),
    "4g+": Link(up_mbps=20, down_mbps=60, latency_ms=20),
    "wifi": Link(up_mbps=50, down_mbps=50, latency_ms=5),
    "unlimited": Link(up_mbps=math.inf, down_mbps=math.inf, latency_ms=0),
}
"""This project's assumptions; the paper does not state its rates."""


@dataclass
class DeviceOverride:
    """Per-device settings that differ from the run's defaults (heterogeneous fleets)."""

    network: str | None = None
    """A preset name from NETWORK_PRESETS."""
    up_mbps: float | None = None
    down_mbps: float | None = None
    latency_ms: float | None = None
    slowdown: float | None = None
    """Device computation takes this many times its measured time."""
    split: int | None = None
    microbatches: int | None = None
    up_schedule: list[list[float]] | None = None
    """This device's uplink rate over time, as RunConfig.up_schedule; give it or up_mbps, not both."""
    down_schedule: list[list[float]] | None = None
    """This device's downlink rate over time, as RunConfig.down_schedule; give it or down_mbps, not both."""


@dataclass
class RunConfig:
    """Everything one training run needs; every process of the run sees the same values."""

    mode: Mode = "pipelearn"
    """fl, sl, sfl or pipelearn."""
    model: str = "vgg5"
    """A zoo model name (see pipelearn.models.MODEL_NAMES), or a plug-in MODULE:FUNCTION or FILE.py:FUNCTION
    (a pipelearn.models.ModelFactory); every device must be started with the same plug-in."""
    dataset: str = "mnist"
    """A data set name (see pipelearn.data.DATASET_NAMES), or a plug-in MODULE:FUNCTION or FILE.py:FUNCTION
    (a pipelearn.data.DatasetFactory); every device must be started with the same plug-in."""
    synthetic_shape: tuple[int, int, int] = (1, 28, 28)
    """Sample shape (channels, height, width) of the synthetic data set; (3, 32, 32) is CIFAR's."""
    data_dir: str | None = None
    """Directory holding the data set's official files, where it needs one."""
    download: bool = False
    """Fetch the data set's official files (checksummed) when they are missing; needs a network."""
    batchnorm: bool = True
    """Whether the zoo model has BatchNorm layers."""
    devices: int = 4
    """Number of devices."""
    network: str = "4g"
    """Network preset for every device: 4g, 4g+, wifi or unlimited."""
    up_mbps: float | None = None
    """Uplink rate in Mbit/s; overrides the preset's."""
    down_mbps: float | None = None
    """Downlink rate in Mbit/s; overrides the preset's."""
    latency_ms: float | None = None
    """One-way latency in ms; overrides the preset's."""
    up_schedule: list[list[float]] | None = None
    """Uplink rate over time for every device: [[seconds since training start, Mbit/s], ...], the first at 0 s;
    overrides the preset's rate. Give it or up_mbps, not both."""
    down_schedule: list[list[float]] | None = None
    """Downlink rate over time for every device, as up_schedule. Give it or down_mbps, not both."""
    netns: bool = False
    """Run the server and every device as separate hosts in Linux network namespaces, each link's rates enforced
    by the kernel (tc); `pipelearn run` only, as root. The user-space links then add only the latency."""
    device_slowdown: float = 4.0
    """Each device action takes this many times the CPU time its work needs here (devices are slower than servers);
    the device waits out the difference. Time lost to other processes on a shared machine is not multiplied."""
    split: int | Literal["auto"] = 2
    """Split point p: blocks 1..p run on the device; 'auto' lets the planner choose per device."""
    microbatches: int | Literal["auto"] = 4
    """Micro-batches per mini-batch in pipelearn mode (sfl and sl use 1, fl 1); 'auto' lets the planner choose."""
    epochs: int = 2
    """Passes over each device's data."""
    batch_size: int = 100
    """Mini-batch size on each device."""
    samples_per_device: int | None = 1000
    """Training samples per device, drawn from the training split; None uses the whole split."""
    partition: Literal["iid", "dirichlet"] = "iid"
    """How samples are dealt to devices."""
    dirichlet_alpha: float = 0.5
    """Concentration of the non-IID label split; smaller is more skewed."""
    aggregate_every: int | None = None
    """FedAvg every this many iterations; None means once per epoch."""
    lr: float = 0.01
    momentum: float = 0.9
    optimizer_state: Literal["keep", "reset"] = "keep"
    """What SGD momentum does when FedAvg replaces a part's weights: "keep" applies the old momentum to the new
    weights (the paper's reference code builds each optimizer once); "reset" starts from none, as a fresh optimizer
    per round would (Flower's examples)."""
    seed: int = 0
    test_samples: int | None = None
    """Evaluate on this many test samples; None uses the whole test split."""
    eval_every: int = 1
    """Evaluate the global model after every this many aggregation rounds (and the last), beside training; 0: only
    the final model."""
    eval_samples: int | None = None
    """Evaluate each round's global model on this many test samples (seeded); None: as test_samples."""
    target_accuracy: float | None = None
    """Record the time and round at which the global model first reaches this test accuracy (a fraction)."""
    stop_at_target: bool = False
    """End the run at the first aggregation after the global model has reached target_accuracy."""
    threads: int = 1
    """torch threads per process; 1 keeps processes from starving each other on few cores."""
    host_cores: float | Literal["auto", "off"] = "auto"
    """CPU cores that the server and every device share, for the planner's predictions: what compute at once
    shares them. 'auto': this machine's usable cores, as `pipelearn run` starts every process here ('off' for
    `pipelearn server`, whose devices are elsewhere); 'off': each on hardware of its own; or a number of cores."""
    profile_in: str | None = None
    """A saved profile (`pipelearn plan --profile-out FILE`, calibrated or not) that the planner chooses every
    `auto` from, instead of profiling the model as the run starts."""
    timeout_s: float = 120.0
    """Least time a device gets to show progress towards its next scheduled message, and the limit for joining and
    loading data. Its deadline is longer where the plan and its pace so far expect longer (see
    pipelearn.transport.liveness); past it the server warns, late by as much again it drops the device. Raise it for
    first steps longer than this: nothing is measured before them."""
    heartbeat_s: float = 1.0
    """Seconds between the heartbeats each side sends the other: alive, and how far along (not training traffic)."""
    liveness_s: float = 10.0
    """A peer from which nothing arrives, not even a heartbeat, for this long is dead: the server drops such a
    device, and a device gives up on such a server. Heartbeats pass what an emulated link is pacing, but not a
    message already crossing a real network: there, keep it above the time the largest message takes to cross."""
    compress: str = "none"
    """Compression of every tensor sent, both ways: none, fp16, bf16, int8 or topk:R (keep the largest fraction R)."""
    compress_up: str | None = None
    """Compression of what devices send (activations, weights); overrides compress."""
    compress_down: str | None = None
    """Compression of what the server sends (gradients, weights); overrides compress."""
    server_device: str = "auto"
    """Where the server trains its parts: auto (a GPU where torch sees one, else the CPU), cpu, cuda, cuda:N or mps."""
    server_amp: Literal["off", "bf16"] = "off"
    """Mixed precision of the server's forward passes: off, or bf16 (torch.autocast) where the hardware has it."""
    out: str = "runs/latest"
    """Output directory for metrics.json, trace.json and model.safetensors."""
    device_overrides: dict[int, DeviceOverride] = field(default_factory=dict)
    """Per-device settings, keyed by device id."""

    def link(self, device: int) -> Link:
        """The network of one device at training start, overrides applied (`rates` gives the rates over time)."""
        o = self.device_overrides.get(device, DeviceOverride())
        base = NETWORK_PRESETS[o.network or self.network]
        return Link(
            up_mbps=self.rates(device, "up")[0][1],
            down_mbps=self.rates(device, "down")[0][1],
            latency_ms=_first(o.latency_ms, self.latency_ms, base.latency_ms),
        )

    def rates(self, device: int, direction: Direction) -> RateSteps:
        """One device's uplink or downlink rate over time: the most specific schedule or rate given wins."""
        o = self.device_overrides.get(device, DeviceOverride())
        for level in (o, self):
            schedule, mbps = getattr(level, f"{direction}_schedule"), getattr(level, f"{direction}_mbps")
            if schedule is not None:
                return tuple((float(t), float(rate)) for t, rate in schedule)
            if mbps is not None:
                return ((0.0, float(mbps)),)
        base = NETWORK_PRESETS[o.network or self.network]
        return ((0.0, float(base.up_mbps if direction == "up" else base.down_mbps)),)

    def slowdown(self, device: int) -> float:
        """The compute slowdown factor of one device."""
        return _first(self.device_overrides.get(device, DeviceOverride()).slowdown, self.device_slowdown)

    def requested_split(self, device: int) -> int | Literal["auto"]:
        """The split point asked for one device, 'auto' included; the run plan resolves it (pipelearn.plan)."""
        o = self.device_overrides.get(device, DeviceOverride()).split
        return o if o is not None else self.split

    def requested_microbatches(self, device: int) -> int | Literal["auto"]:
        """The micro-batch count asked for one device, 'auto' included; the run plan resolves it."""
        o = self.device_overrides.get(device, DeviceOverride()).microbatches
        return o if o is not None else self.microbatches

    def codec(self, direction: Direction) -> str:
        """The compression of one direction: up (device to server) or down."""
        return _first(self.compress_up if direction == "up" else self.compress_down, self.compress)

    def validate(self) -> RunConfig:
        """Check every value; raise ConfigError naming the first bad key."""
        for name, (ok, expected) in _RULES.items():
            value = getattr(self, name)
            _check(ok(value), name, value, expected)
        for device, override in self.device_overrides.items():
            _check(
                _whole(device) and 0 <= device < self.devices,
                "device_overrides",
                device,
                f"a device id below {self.devices}",
            )
            for name, (ok, expected) in _OVERRIDE_RULES.items():
                value = getattr(override, name)
                _check(value is None or ok(value), f"device_overrides.{device}.{name}", value, expected)
        for level, where in [(self, ""), *((o, f"device_overrides.{d}.") for d, o in self.device_overrides.items())]:
            for direction in ("up", "down"):
                if None not in (getattr(level, f"{direction}_schedule"), getattr(level, f"{direction}_mbps")):
                    raise ConfigError(
                        f"config keys '{where}{direction}_schedule' and '{where}{direction}_mbps' are both given; "
                        f"give one (a fixed rate is a schedule of one step: [[0, MBPS]])"
                    )
        if self.stop_at_target:
            _check(self.target_accuracy is not None, "target_accuracy", None, "a fraction when stop_at_target is set")
            _check(self.eval_every >= 1, "eval_every", 0, "1 or more when stop_at_target is set")
            _check(self.mode != "sl", "stop_at_target", True, "false in sl, which has no aggregation rounds")
        _check(self.liveness_s >= 2 * self.heartbeat_s, "liveness_s", self.liveness_s, _RULES["liveness_s"][1])
        return self

    def to_json(self) -> str:
        """Serialise for the wire (JSON, never pickle)."""
        data = dataclasses.asdict(self)
        data["device_overrides"] = {str(k): v for k, v in data["device_overrides"].items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """Inverse of to_json."""
        return from_mapping(json.loads(text))


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string(value: object) -> bool:
    return isinstance(value, str)


def _at_least(low: float, whole: bool = True) -> Callable[[object], bool]:
    test = _whole if whole else _number
    return lambda v: test(v) and v >= low  # type: ignore[operator]


def _optional(rule: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or rule(v)


def _count_or_auto(v: object) -> bool:
    return v == "auto" or _at_least(1)(v)


def _split_or_auto(v: object) -> bool:
    return v == "auto" or _whole(v)


def _fraction(v: object) -> bool:
    return _number(v) and 0 <= v <= 1  # type: ignore[operator]


def parse_codec(text: str) -> tuple[str, float]:
    """A compression setting's codec and kept fraction: 'topk:0.1' is ('topk', 0.1), 'int8' is ('int8', 1.0)."""
    name, _, ratio = text.partition(":")
    if name not in CODECS or (name == "topk") != bool(ratio):
        raise ValueError(f"unknown compression {text!r}; expected {_CODEC_CHOICES}")
    if name != "topk":
        return name, 1.0
    try:
        fraction = float(ratio)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction < 1:
        raise ValueError(f"compression {text!r} keeps a fraction {ratio!r}; topk:R needs 0 < R < 1, as in topk:0.1")
    return name, fraction


_CODEC_CHOICES = "none, fp16, bf16, int8 or topk:R with 0 < R < 1 (topk:0.1 keeps the largest tenth)"


def _codec(v: object) -> bool:
    try:
        return isinstance(v, str) and bool(parse_codec(v))
    except ValueError:
        return False


def _shape(v: object) -> bool:
    return isinstance(v, tuple | list) and len(v) == 3 and all(_at_least(1)(x) for x in v)


def _rate(v: object) -> bool:
    return _number(v) and v > 0  # type: ignore[operator]


def _cores(v: object) -> bool:
    return v in ("auto", "off") or (_rate(v) and math.isfinite(v))  # type: ignore[arg-type]


def _schedule(v: object) -> bool:
    if not isinstance(v, list | tuple) or not v:
        return False
    if not all(isinstance(s, list | tuple) and len(s) == 2 and _number(s[0]) and _rate(s[1]) for s in v):
        return False
    times = [s[0] for s in v]
    return times[0] == 0 and all(math.isfinite(t) for t in times) and all(a < b for a, b in itertools.pairwise(times))


_SCHEDULE = "a list of [seconds since training start, Mbit/s] steps: the first at 0, times rising, rates above 0"


_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "mode": (lambda v: v in MODES, f"one of {', '.join(MODES)}"),
    "model": (_string, "a model name"),
    "dataset": (_string, "a data set name"),
    "synthetic_shape": (_shape, "three whole numbers of at least 1 (channels, height, width)"),
    "data_dir": (_optional(_string), "a directory"),
    "download": (lambda v: isinstance(v, bool), "true or false"),
    "batchnorm": (lambda v: isinstance(v, bool), "true or false"),
    "devices": (_at_least(1), "a whole number of at least 1"),
    "network": (lambda v: isinstance(v, str) and v in NETWORK_PRESETS, f"one of {', '.join(NETWORK_PRESETS)}"),
    "up_mbps": (_optional(_rate), "above 0 (inf for unlimited)"),
    "down_mbps": (_optional(_rate), "above 0 (inf for unlimited)"),
    "latency_ms": (_optional(_at_least(0, whole=False)), "0 or more"),
    "up_schedule": (_optional(_schedule), _SCHEDULE),
    "down_schedule": (_optional(_schedule), _SCHEDULE),
    "netns": (lambda v: isinstance(v, bool), "true or false"),
    "device_slowdown": (_at_least(1, whole=False), "a number of at least 1"),
    "split": (_split_or_auto, "a number or 'auto'"),
    "microbatches": (_count_or_auto, "a number of at least 1 or 'auto'"),
    "epochs": (_at_least(1), "a whole number of at least 1"),
    "batch_size": (_at_least(1), "a whole number of at least 1"),
    "samples_per_device": (_optional(_at_least(1)), "a whole number of at least 1"),
    "partition": (lambda v: v in ("iid", "dirichlet"), "iid or dirichlet"),
    "dirichlet_alpha": (_rate, "a number above 0"),
    "aggregate_every": (_optional(_at_least(1)), "a whole number of at least 1"),
    "lr": (_rate, "a number above 0"),
    "momentum": (_at_least(0, whole=False), "a number of 0 or more"),
    "optimizer_state": (lambda v: v in ("keep", "reset"), "keep or reset"),
    "seed": (_whole, "a whole number"),
    "test_samples": (_optional(_at_least(1)), "a whole number of at least 1"),
    "eval_every": (_at_least(0), "a whole number of rounds, 0 for only the final model"),
    "eval_samples": (_optional(_at_least(1)), "a whole number of at least 1"),
    "target_accuracy": (_optional(_fraction), "a fraction from 0 to 1, such as 0.97"),
    "stop_at_target": (lambda v: isinstance(v, bool), "true or false"),
    "threads": (_at_least(1), "a whole number of at least 1"),
    "host_cores": (_cores, "auto, off or a number of cores above 0"),
    "profile_in": (_optional(_string), "a profile's JSON file"),
    "timeout_s": (_rate, "a number above 0"),
    "compress": (_codec, _CODEC_CHOICES),
    "compress_up": (_optional(_codec), _CODEC_CHOICES),
    "compress_down": (_optional(_codec), _CODEC_CHOICES),
    "server_device": (
        lambda v: isinstance(v, str) and re.fullmatch(COMPUTE_SETTING, v) is not None,
        "auto, cpu, cuda, cuda:N or mps",
    ),
    "server_amp": (lambda v: v in ("off", "bf16"), "off or bf16"),
    "heartbeat_s": (_rate, "a number above 0"),
    "liveness_s": (_rate, "a number above 0, at least twice heartbeat_s"),
    "out": (_string, "a directory"),
}
"""What each RunConfig key must be, and how to say so."""

_OVERRIDE_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "network": _RULES["network"],
    "up_mbps": (_rate, "above 0 (inf for unlimited)"),
    "down_mbps": (_rate, "above 0 (inf for unlimited)"),
    "latency_ms": (_at_least(0, whole=False), "0 or more"),
    "slowdown": _RULES["device_slowdown"],
    "split": _RULES["split"],
    "microbatches": _RULES["microbatches"],
    "up_schedule": (_schedule, _SCHEDULE),
    "down_schedule": (_schedule, _SCHEDULE),
}
"""What each per-device override must be when given."""


def _check(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' is {value!r}; expected {expected}")


def from_mapping(data: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a mapping (TOML or JSON), refusing unknown keys by name."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    values = dict(data)
    if isinstance(values.get("synthetic_shape"), list):  # TOML and JSON have lists, not tuples
        values["synthetic_shape"] = tuple(values["synthetic_shape"])
    overrides = values.pop("device_overrides", {}) or {}
    fields = {f.name for f in dataclasses.fields(DeviceOverride)}
    parsed: dict[int, DeviceOverride] = {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"config key 'device_overrides' is {overrides!r}; expected tables keyed by device id")
    for key, spec in overrides.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"config key 'device_overrides.{key}' is {spec!r}; expected a table of settings")
        bad = sorted(set(spec) - fields)
        if bad:
            raise ConfigError(f"unknown key(s) {', '.join(bad)} in device_overrides.{key}; known: {sorted(fields)}")
        try:
            parsed[int(key)] = DeviceOverride(**spec)
        except ValueError as exc:
            raise ConfigError(f"device_overrides key {key!r} is not a device id") from exc
    return RunConfig(**values, device_overrides=parsed).validate()


def load_toml(path: str | Path) -> RunConfig:
    """Load a RunConfig from a TOML file; per-device tables go under [device_overrides.N]."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return from_mapping(data)
