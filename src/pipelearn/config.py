"""Run configuration: typed dataclasses, network presets, TOML loading and validation in one place."""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import logging
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
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


log = logging.getLogger("pipelearn.config")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what to do.

    `keys` are the settings it is about: the message has {0}, {1}, ... where it names them, so that the command line
    can name each as the flag the user typed (`message`); elsewhere each is named as a config key.
    """

    def __init__(self, message: str, *keys: str) -> None:
        self.template, self.keys = message, keys
        super().__init__(self.message())

    def message(self, names: Mapping[str, str] | None = None) -> str:
        """The message, each key named as `names` spells it (a flag the user typed), else as `config key 'KEY'`."""
        if not self.keys:
            return self.template
        names = names or {}
        return self.template.format(*(names.get(k) or f"config key '{k}'" for k in self.keys))


def _shown(value: object) -> str:
    """A value's repr, safe inside a ConfigError's message (whose braces name keys)."""
    return repr(value).replace("{", "{{").replace("}", "}}")


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for the known word closest to a misspelt one, or '' where none is close."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_keys(what: str, unknown: Sequence[str], known: Iterable[str], where: str = "") -> ConfigError:
    """The error for unknown keys (`what`: 'config key', 'setting') `where` (' in TABLE'), each with the known key
    closest to it."""
    known = sorted(known)
    hints = [f"'{k}'{did_you_mean(k, known)}" for k in unknown]
    text = f"unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(hints)}{where}"
    if not all(h.endswith("?)") for h in hints):
        text += f"; known: {', '.join(known)}"
    return ConfigError(text.replace("{", "{{").replace("}", "}}"))


def _meta(*, unit: str = "", metavar: str = "", choices: Iterable[str] = ()) -> dict[str, Any]:
    """A field's metadata: the unit of its value, the form of its flag's value, and the values it may take where its
    type does not say (pipelearn.settings reads them)."""
    return {"unit": unit, "metavar": metavar, "choices": tuple(choices)}


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
    up_mbps: float | None = field(default=None, metadata=_meta(unit="Mbit/s"))
    """This device's uplink rate, as RunConfig.up_mbps."""
    down_mbps: float | None = field(default=None, metadata=_meta(unit="Mbit/s"))
    """This device's downlink rate, as RunConfig.down_mbps."""
    latency_ms: float | None = field(default=None, metadata=_meta(unit="ms"))
    """This device's one-way latency, as RunConfig.latency_ms."""
    device_slowdown: float | None = field(default=None, metadata=_meta(unit="times"))
    """Device computation takes this many times its measured time, as RunConfig.device_slowdown."""
    split: int | Literal["auto"] | None = None
    """This device's split point, as RunConfig.split."""
    microbatches: int | Literal["auto"] | None = None
    """This device's micro-batch count, as RunConfig.microbatches."""
    up_schedule: list[list[float]] | None = None
    """This device's uplink rate over time, as RunConfig.up_schedule; give it or up_mbps, not both."""
    down_schedule: list[list[float]] | None = None
    """This device's downlink rate over time, as RunConfig.down_schedule; give it or down_mbps, not both."""


@dataclass
class RunConfig:
    """Everything one training run needs; every process of the run sees the same values.

    Each field's docstring is its one description: `pipelearn.settings` makes the command line's flags (the name
    with dashes), their help and the README's flag table from the fields, their types, defaults and metadata.
    """

    mode: Mode = "pipelearn"
    """fl, sl, sfl or pipelearn."""
    model: str = field(default="vgg5", metadata=_meta(metavar="NAME|MODULE:FUNCTION"))
    """A zoo model (vgg5, vgg8, vgg11, vgg16, resnet18, resnet50, mobilenetv3-small, mobilenetv3-large), or a
    plug-in MODULE:FUNCTION or FILE.py:FUNCTION (a pipelearn.models.ModelFactory); every device must be started with
    the same plug-in."""
    dataset: str = field(default="mnist", metadata=_meta(metavar="NAME|MODULE:FUNCTION"))
    """A data set (mnist, fashion-mnist, cifar10, cifar100, svhn; idx: a directory of idx files; synthetic; saved: a
    directory written by pipelearn.save_dataset), or a plug-in MODULE:FUNCTION or FILE.py:FUNCTION (a
    pipelearn.data.DatasetFactory); every device must be started with the same plug-in."""
    synthetic_shape: tuple[int, int, int] = field(default=(1, 28, 28), metadata=_meta(metavar="CxHxW"))
    """Sample shape (channels, height, width) of the synthetic data set; (3, 32, 32) is CIFAR's."""
    data_dir: str | None = field(default=None, metadata=_meta(metavar="DIR"))
    """Directory holding the data set's official files, where it needs one."""
    download: bool = False
    """Fetch the data set's official files (checksummed) when they are missing; needs a network."""
    batchnorm: bool = True
    """Whether the zoo model has BatchNorm layers."""
    devices: int = field(default=4, metadata=_meta(metavar="N"))
    """Number of devices."""
    network: str = field(default="4g", metadata=_meta(choices=NETWORK_PRESETS))
    """Network preset for every device: 4g (10/25 Mbit/s up/down, 30 ms), 4g+ (20/60, 20 ms), wifi (50/50, 5 ms) or
    unlimited."""
    up_mbps: float | None = field(default=None, metadata=_meta(unit="Mbit/s", metavar="MBPS"))
    """Uplink rate in Mbit/s (inf for unlimited); overrides the preset's."""
    down_mbps: float | None = field(default=None, metadata=_meta(unit="Mbit/s", metavar="MBPS"))
    """Downlink rate in Mbit/s (inf for unlimited); overrides the preset's."""
    latency_ms: float | None = field(default=None, metadata=_meta(unit="ms", metavar="MS"))
    """One-way latency in ms; overrides the preset's."""
    up_schedule: list[list[float]] | None = field(default=None, metadata=_meta(metavar="S:MBPS,..."))
    """Uplink rate over time for every device: [[seconds since training start, Mbit/s], ...], the first at 0 s
    (on the command line 0:10,30:2,60:10); overrides the preset's rate. Give it or up_mbps, not both."""
    down_schedule: list[list[float]] | None = field(default=None, metadata=_meta(metavar="S:MBPS,..."))
    """Downlink rate over time for every device, as up_schedule. Give it or down_mbps, not both."""
    netns: bool = False
    """Run the server and every device as separate hosts in Linux network namespaces, each link's rates enforced
    by the kernel (tc); `pipelearn run` only, as root. The user-space links then add only the latency."""
    device_slowdown: float = field(default=4.0, metadata=_meta(unit="times", metavar="K"))
    """Each device action takes this many times the CPU time its work needs here (devices are slower than servers);
    the device waits out the difference. Time lost to other processes on a shared machine is not multiplied."""
    split: int | Literal["auto"] = field(default=2, metadata=_meta(unit="blocks", metavar="P|auto"))
    """Split point p: blocks 1..p run on the device; 'auto' lets the planner choose per device."""
    microbatches: int | Literal["auto"] = field(default=4, metadata=_meta(metavar="N|auto"))
    """Micro-batches per mini-batch in pipelearn mode (sfl and sl use 1, fl 1), at most batch_size; 'auto' lets the
    planner choose."""
    epochs: int = field(default=2, metadata=_meta(metavar="N"))
    """Passes over each device's data."""
    batch_size: int = field(default=100, metadata=_meta(unit="samples", metavar="SAMPLES"))
    """Mini-batch size on each device, at most samples_per_device."""
    samples_per_device: int | None = field(default=1000, metadata=_meta(unit="samples", metavar="SAMPLES"))
    """Training samples per device, drawn from the training split; none uses the whole split."""
    partition: Literal["iid", "dirichlet"] = "iid"
    """How samples are dealt to devices: iid, or a non-IID dirichlet label split."""
    dirichlet_alpha: float = field(default=0.5, metadata=_meta(metavar="ALPHA"))
    """Concentration of the non-IID label split; smaller is more skewed."""
    aggregate_every: int | None = field(default=None, metadata=_meta(unit="iterations", metavar="ITERATIONS"))
    """FedAvg every this many iterations; none means once per epoch."""
    lr: float = field(default=0.01, metadata=_meta(metavar="LR"))
    """SGD learning rate."""
    momentum: float = field(default=0.9, metadata=_meta(metavar="M"))
    """SGD momentum."""
    optimizer_state: Literal["keep", "reset"] = "keep"
    """What SGD momentum does when FedAvg replaces a part's weights: "keep" applies the old momentum to the new
    weights (the paper's reference code builds each optimizer once); "reset" starts from none, as a fresh optimizer
    per round would (Flower's examples)."""
    seed: int = field(default=0, metadata=_meta(metavar="N"))
    """Seed of the initial weights, of each device's samples and of their shuffling."""
    test_samples: int | None = field(default=None, metadata=_meta(unit="samples", metavar="SAMPLES"))
    """Evaluate on this many test samples, at most the test split's; none uses the whole test split."""
    eval_every: int = field(default=1, metadata=_meta(unit="rounds", metavar="ROUNDS"))
    """Evaluate the global model after every this many aggregation rounds (and the last), beside training; 0: only
    the final model."""
    eval_samples: int | None = field(default=None, metadata=_meta(unit="samples", metavar="SAMPLES"))
    """Evaluate each round's global model on this many test samples (seeded), at most test_samples; none: as
    test_samples."""
    target_accuracy: float | None = field(default=None, metadata=_meta(unit="fraction", metavar="A"))
    """Record the time and round at which the global model first reaches this test accuracy (a fraction)."""
    stop_at_target: bool = False
    """End the run at the first aggregation after the global model has reached target_accuracy."""
    threads: int = field(default=1, metadata=_meta(metavar="N"))
    """torch threads per process; 1 keeps processes from starving each other on few cores."""
    host_cores: float | Literal["auto", "off"] = field(
        default="auto", metadata=_meta(unit="cores", metavar="N|auto|off")
    )
    """CPU cores that the server and every device share, for the planner's predictions: what compute at once
    shares them. 'auto': this machine's usable cores, as `pipelearn run` starts every process here ('off' for
    `pipelearn server`, whose devices are elsewhere); 'off': each on hardware of its own; or a number of cores."""
    profile_in: str | None = field(default=None, metadata=_meta(metavar="FILE"))
    """A saved profile (`pipelearn plan --profile-out FILE`, calibrated or not) that the planner chooses every
    `auto` from, instead of profiling the model as the run starts."""
    timeout_s: float = field(default=120.0, metadata=_meta(unit="seconds", metavar="SECONDS"))
    """Least time a device gets to show progress towards its next scheduled message, and the limit for joining and
    loading data. Its deadline is longer where the plan and its pace so far expect longer (see
    pipelearn.transport.liveness); past it the server warns, late by as much again it drops the device. Raise it for
    first steps longer than this: nothing is measured before them."""
    heartbeat_s: float = field(default=1.0, metadata=_meta(unit="seconds", metavar="SECONDS"))
    """Seconds between the heartbeats each side sends the other: alive, and how far along (not training traffic)."""
    liveness_s: float = field(default=10.0, metadata=_meta(unit="seconds", metavar="SECONDS"))
    """A peer from which nothing arrives, not even a heartbeat, for this long is dead: the server drops such a
    device, and a device gives up on such a server. Heartbeats pass what an emulated link is pacing, but not a
    message already crossing a real network: there, keep it above the time the largest message takes to cross."""
    compress: str = field(default="none", metadata=_meta(metavar="none|fp16|bf16|int8|topk:R"))
    """Compression of every tensor sent, both ways: none, fp16, bf16, int8 or topk:R (keep the largest fraction R)."""
    compress_up: str | None = field(default=None, metadata=_meta(metavar="CODEC"))
    """Compression of what devices send (activations, weights), as compress; overrides compress."""
    compress_down: str | None = field(default=None, metadata=_meta(metavar="CODEC"))
    """Compression of what the server sends (gradients, weights), as compress; overrides compress."""
    server_device: str = field(default="auto", metadata=_meta(metavar="auto|cpu|cuda|cuda:N|mps"))
    """Where the server trains its parts: auto (a GPU where torch sees one, else the CPU), cpu, cuda, cuda:N or mps."""
    server_amp: Literal["off", "bf16"] = "off"
    """Mixed precision of the server's forward passes: off, or bf16 (torch.autocast) where the hardware has it."""
    out: str = field(default="runs/latest", metadata=_meta(metavar="DIR"))
    """Output directory for metrics.json, trace.json and model.safetensors."""
    device_overrides: dict[int, DeviceOverride] = field(default_factory=dict)
    """Per-device settings, keyed by device id: TOML tables [device_overrides.N] of network, up_mbps, down_mbps,
    latency_ms, device_slowdown, split, microbatches, up_schedule and down_schedule."""

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
        return _first(self.device_overrides.get(device, DeviceOverride()).device_slowdown, self.device_slowdown)

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
        levels: list[tuple[RunConfig | DeviceOverride, str]] = [
            (self, ""),
            *((o, f"device_overrides.{d}.") for d, o in self.device_overrides.items()),
        ]
        for level, where in levels:
            for direction in ("up", "down"):
                if None not in (getattr(level, f"{direction}_schedule"), getattr(level, f"{direction}_mbps")):
                    raise ConfigError(
                        "{0} and {1} are both given; give one (a fixed rate is a schedule of one step: [[0, MBPS]])",
                        f"{where}{direction}_schedule",
                        f"{where}{direction}_mbps",
                    )
        if self.stop_at_target:
            _check(
                self.target_accuracy is not None,
                "target_accuracy",
                None,
                "a fraction when {1} is set",
                "stop_at_target",
            )
            _check(self.eval_every >= 1, "eval_every", 0, "1 or more when {1} is set", "stop_at_target")
            _check(self.mode != "sl", "stop_at_target", True, "false in sl, which has no aggregation rounds")
        _check(
            self.liveness_s >= 2 * self.heartbeat_s,
            "liveness_s",
            self.liveness_s,
            f"at least twice {{1}} ({self.heartbeat_s:g})",
            "heartbeat_s",
        )
        self._check_counts(levels)
        return self

    def _check_counts(self, levels: list[tuple[RunConfig | DeviceOverride, str]]) -> None:
        """Refuse counts that the run would cap silently: more micro-batches than samples in a mini-batch, a
        mini-batch larger than a device's samples, more samples a round evaluated than are tested."""
        batch = self.batch_size
        if self.mode == "pipelearn":
            for level, where in levels:
                micro = level.microbatches
                if _whole(micro) and micro > batch:  # type: ignore[operator]
                    raise ConfigError(
                        f"{{0}} is {micro}, more than {{1}} {batch}: a mini-batch of {batch} samples is cut into at "
                        f"most {batch} micro-batches; give at most {batch}, or raise {{1}}",
                        f"{where}microbatches",
                        "batch_size",
                    )
        if self.samples_per_device is not None and self.samples_per_device < batch:
            raise ConfigError(
                f"{{0}} is {batch}, more than {{1}} {self.samples_per_device}: every mini-batch would be a device's "
                f"{self.samples_per_device} samples; give at most {self.samples_per_device}, or raise {{1}}",
                "batch_size",
                "samples_per_device",
            )
        if None not in (self.eval_samples, self.test_samples) and self.eval_samples > self.test_samples:  # type: ignore[operator]
            raise ConfigError(
                f"{{0}} is {self.eval_samples}, more than {{1}} {self.test_samples}: a round is evaluated on at most "
                "the samples the final model is tested on; lower {0}, or raise {1}",
                "eval_samples",
                "test_samples",
            )

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
    "liveness_s": (_rate, "a number above 0"),
    "out": (_string, "a directory"),
}
"""What each RunConfig key must be, and how to say so."""

_OVERRIDE_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "network": _RULES["network"],
    "up_mbps": (_rate, "above 0 (inf for unlimited)"),
    "down_mbps": (_rate, "above 0 (inf for unlimited)"),
    "latency_ms": (_at_least(0, whole=False), "0 or more"),
    "device_slowdown": _RULES["device_slowdown"],
    "split": _RULES["split"],
    "microbatches": _RULES["microbatches"],
    "up_schedule": (_schedule, _SCHEDULE),
    "down_schedule": (_schedule, _SCHEDULE),
}
"""What each per-device override must be when given."""


def _check(ok: bool, key: str, value: object, expected: str, *others: str) -> None:
    """Unless `ok`, refuse `key`'s value; `expected` may name the `others` keys as {1}, {2}, ..."""
    if not ok:
        raise ConfigError(f"{{0}} is {_shown(value)}; expected {expected}", key, *others)


_RENAMED_OVERRIDE_KEYS = {"slowdown": "device_slowdown"}
"""Old per-device keys, still read (with a warning), and their names now."""


def from_mapping(data: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a mapping (TOML or JSON), refusing unknown keys by name."""
    known = [f.name for f in dataclasses.fields(RunConfig)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise unknown_keys("config key", unknown, known)
    values = dict(data)
    if isinstance(values.get("synthetic_shape"), list):  # TOML and JSON have lists, not tuples
        values["synthetic_shape"] = tuple(values["synthetic_shape"])
    overrides = values.pop("device_overrides", {}) or {}
    fields = [f.name for f in dataclasses.fields(DeviceOverride)]
    parsed: dict[int, DeviceOverride] = {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{{0}} is {_shown(overrides)}; expected tables keyed by device id", "device_overrides")
    renamed: dict[str, list[str]] = {}
    for key, spec in overrides.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{{0}} is {_shown(spec)}; expected a table of settings", f"device_overrides.{key}")
        spec = dict(spec)
        for old, new in _RENAMED_OVERRIDE_KEYS.items():
            if old in spec:
                if new in spec:
                    raise ConfigError(
                        f"device_overrides.{key} gives both '{old}' and '{new}'; keep only '{new}' (its name now)"
                    )
                spec[new] = spec.pop(old)
                renamed.setdefault(old, []).append(str(key))
        bad = sorted(set(spec) - set(fields))
        if bad:
            raise unknown_keys("config key", bad, fields, where=f" in device_overrides.{key}")
        try:
            parsed[int(key)] = DeviceOverride(**spec)
        except ValueError as exc:
            raise ConfigError(f"device_overrides key {key!r} is not a device id") from exc
    for old, devices in renamed.items():
        log.warning(
            "device_overrides.%s: the key '%s' is now '%s', as the run-wide key; rename it (the old name will go)",
            ", ".join(devices),
            old,
            _RENAMED_OVERRIDE_KEYS[old],
        )
    return RunConfig(**values, device_overrides=parsed).validate()


def read_toml(path: str | Path) -> dict[str, Any]:
    """The settings a TOML file gives, as written (`from_mapping` checks them)."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_toml(path: str | Path) -> RunConfig:
    """Load a RunConfig from a TOML file; per-device tables go under [device_overrides.N]."""
    return from_mapping(read_toml(path))


def chooses_plan(config: RunConfig) -> bool:
    """Whether the planner chooses anything for this run: a split (but in fl) or a micro-batch count (pipelearn)."""
    return any(
        (config.mode != "fl" and config.requested_split(d) == "auto")
        or (config.mode == "pipelearn" and config.requested_microbatches(d) == "auto")
        for d in range(config.devices)
    )


def check_profile_in(config: RunConfig) -> list[str]:
    """Refuse a profile_in that is no file; call it where the profile is read (the server, `pipelearn plan`), not in
    `validate`: devices are sent the setting but not the file. Returns a warning where no planning reads it."""
    if config.profile_in is None:
        return []
    if not Path(config.profile_in).is_file():
        raise ConfigError(
            f"{{0}} is {_shown(config.profile_in)}, which is no file; save one with "
            "`pipelearn plan --profile-out FILE`, or leave it out to profile the model as the run starts",
            "profile_in",
        )
    if not chooses_plan(config):
        return [
            f"profile_in {config.profile_in} is not read: every split and micro-batch count is fixed; "
            "give split or microbatches 'auto' to plan from it"
        ]
    return []


def check_sizes(config: RunConfig, test_size: int, device_samples: Sequence[int]) -> list[str]:
    """What the data set's sizes make of the configuration: a ConfigError where it asks for more test samples than
    the test split has (`test_size`), else one-line warnings where a device's samples (`device_samples`) cap its
    mini-batches or micro-batches."""
    for key in ("test_samples", "eval_samples"):
        wanted = getattr(config, key)
        if wanted is not None and wanted > test_size:
            raise ConfigError(
                f"{{0}} is {wanted}, more than the {test_size} samples of {config.dataset}'s test split; give at most "
                f"{test_size}, or leave it out for the whole split",
                key,
            )
    warnings = []
    short = {d: n for d, n in enumerate(device_samples) if n < config.batch_size}
    if short:
        held = ", ".join(f"device {d} {n}" for d, n in short.items())
        warnings.append(
            f"fewer training samples than batch_size {config.batch_size} ({held}): those devices' mini-batches are "
            "all their samples"
        )
    if config.mode == "pipelearn":
        capped = {}
        for d, n in enumerate(device_samples):
            micro = config.requested_microbatches(d)
            if _whole(micro) and micro > min(n, config.batch_size):  # type: ignore[operator]
                capped[d] = (micro, min(n, config.batch_size))
        if capped:
            shown = ", ".join(f"device {d} {m} into {b}" for d, (m, b) in capped.items())
            warnings.append(
                f"more micro-batches than samples in a mini-batch ({shown}): each micro-batch has at least one sample"
            )
    return warnings
