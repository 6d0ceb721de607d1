"""Run configuration: typed dataclasses, network presets, TOML loading and validation in one place."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

Mode = Literal["fl", "sl", "sfl", "pipelearn"]
MODES: tuple[str, ...] = get_args(Mode)


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


@dataclass
class RunConfig:
    """Everything one training run needs; every process of the run sees the same values."""

    mode: Mode = "pipelearn"
    """fl, sl, sfl or pipelearn."""
    model: str = "vgg5"
    """A zoo model name (see pipelearn.models.MODEL_NAMES)."""
    dataset: str = "mnist"
    """A data set name (see pipelearn.data.DATASET_NAMES)."""
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
    device_slowdown: float = 4.0
    """Device computation takes this many times its measured time (devices are slower than servers)."""
    split: int | Literal["auto"] = 2
    """Split point p: blocks 1..p run on the device."""
    microbatches: int | Literal["auto"] = 4
    """Micro-batches per mini-batch in pipelearn mode (sfl and sl use 1, fl 1)."""
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
    seed: int = 0
    test_samples: int | None = None
    """Evaluate on this many test samples; None uses the whole test split."""
    threads: int = 1
    """torch threads per process; 1 keeps processes from starving each other on few cores."""
    timeout_s: float = 120.0
    """Longest wait for any one message from a peer before it is declared failed."""
    out: str = "runs/latest"
    """Output directory for metrics.json, trace.json and model.safetensors."""
    device_overrides: dict[int, DeviceOverride] = field(default_factory=dict)
    """Per-device settings, keyed by device id."""

    def link(self, device: int) -> Link:
        """The network of one device, overrides applied."""
        o = self.device_overrides.get(device, DeviceOverride())
        base = NETWORK_PRESETS[o.network or self.network]
        return Link(
            up_mbps=_first(o.up_mbps, self.up_mbps, base.up_mbps),
            down_mbps=_first(o.down_mbps, self.down_mbps, base.down_mbps),
            latency_ms=_first(o.latency_ms, self.latency_ms, base.latency_ms),
        )

    def slowdown(self, device: int) -> float:
        """The compute slowdown factor of one device."""
        return _first(self.device_overrides.get(device, DeviceOverride()).slowdown, self.device_slowdown)

    def split_point(self, device: int) -> int:
        """The split point of one device."""
        o = self.device_overrides.get(device, DeviceOverride()).split
        value = o if o is not None else self.split
        if value == "auto":
            raise ConfigError("split = 'auto' needs the planner, which is not built yet: give a number")
        return int(value)

    def microbatch_count(self, device: int) -> int:
        """Micro-batches per mini-batch for one device in this mode."""
        if self.mode != "pipelearn":
            return 1
        o = self.device_overrides.get(device, DeviceOverride()).microbatches
        value = o if o is not None else self.microbatches
        if value == "auto":
            raise ConfigError("microbatches = 'auto' needs the planner, which is not built yet: give a number")
        return int(value)

    def validate(self) -> RunConfig:
        """Check every value; raise ConfigError naming the first bad key."""
        for name in ("mode", "model", "dataset", "network", "partition", "out"):
            _check(isinstance(getattr(self, name), str), name, getattr(self, name), "a string")
        _check(self.data_dir is None or isinstance(self.data_dir, str), "data_dir", self.data_dir, "a string")
        _check(isinstance(self.batchnorm, bool), "batchnorm", self.batchnorm, "true or false")
        for name in ("devices", "epochs", "batch_size", "seed", "threads"):
            _check(_whole(getattr(self, name)), name, getattr(self, name), "a whole number")
        for name in ("samples_per_device", "aggregate_every", "test_samples"):
            value = getattr(self, name)
            _check(value is None or _whole(value), name, value, "a whole number")
        for name in ("device_slowdown", "dirichlet_alpha", "lr", "momentum", "timeout_s"):
            _check(_number(getattr(self, name)), name, getattr(self, name), "a number")
        for name in ("up_mbps", "down_mbps", "latency_ms"):
            value = getattr(self, name)
            _check(value is None or _number(value), name, value, "a number")
        _check(self.mode in MODES, "mode", self.mode, f"one of {', '.join(MODES)}")
        _check(self.network in NETWORK_PRESETS, "network", self.network, f"one of {', '.join(NETWORK_PRESETS)}")
        _check(self.devices >= 1, "devices", self.devices, "at least 1")
        _check(self.epochs >= 1, "epochs", self.epochs, "at least 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "at least 1")
        _check(self.device_slowdown >= 1, "device_slowdown", self.device_slowdown, "at least 1")
        _check(self.partition in ("iid", "dirichlet"), "partition", self.partition, "iid or dirichlet")
        _check(self.dirichlet_alpha > 0, "dirichlet_alpha", self.dirichlet_alpha, "above 0")
        _check(self.lr > 0, "lr", self.lr, "above 0")
        _check(self.threads >= 1, "threads", self.threads, "at least 1")
        _check(self.timeout_s > 0, "timeout_s", self.timeout_s, "above 0")
        _check(
            self.samples_per_device is None or self.samples_per_device >= 1,
            "samples_per_device",
            self.samples_per_device,
            "at least 1",
        )
        _check(
            self.aggregate_every is None or self.aggregate_every >= 1,
            "aggregate_every",
            self.aggregate_every,
            "at least 1",
        )
        _check(self.split == "auto" or _whole(self.split), "split", self.split, "a number or 'auto'")
        _check(
            self.microbatches == "auto" or (_whole(self.microbatches) and self.microbatches >= 1),
            "microbatches",
            self.microbatches,
            "a number of at least 1 or 'auto'",
        )
        for name in ("up_mbps", "down_mbps"):
            value = getattr(self, name)
            _check(value is None or value > 0, name, value, "above 0 (inf for unlimited)")
        _check(self.latency_ms is None or self.latency_ms >= 0, "latency_ms", self.latency_ms, "0 or more")
        for device, o in self.device_overrides.items():
            _check(0 <= device < self.devices, "device_overrides", device, f"a device id below {self.devices}")
            _check(
                o.network is None or (isinstance(o.network, str) and o.network in NETWORK_PRESETS),
                f"device_overrides.{device}.network",
                o.network,
                f"one of {', '.join(NETWORK_PRESETS)}",
            )
            for name in ("up_mbps", "down_mbps"):
                value = getattr(o, name)
                _check(
                    value is None or (_number(value) and value > 0),
                    f"device_overrides.{device}.{name}",
                    value,
                    "above 0 (inf for unlimited)",
                )
            _check(
                o.latency_ms is None or (_number(o.latency_ms) and o.latency_ms >= 0),
                f"device_overrides.{device}.latency_ms",
                o.latency_ms,
                "0 or more",
            )
            _check(
                o.slowdown is None or (_number(o.slowdown) and o.slowdown >= 1),
                f"device_overrides.{device}.slowdown",
                o.slowdown,
                "at least 1",
            )
            _check(
                o.split is None or o.split == "auto" or _whole(o.split),
                f"device_overrides.{device}.split",
                o.split,
                "a number or 'auto'",
            )
            _check(
                o.microbatches is None or o.microbatches == "auto" or (_whole(o.microbatches) and o.microbatches >= 1),
                f"device_overrides.{device}.microbatches",
                o.microbatches,
                "a number of at least 1 or 'auto'",
            )
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
