"""What each setting must be, and the checks across settings; `RunConfig.validate` runs them."""

from __future__ import annotations

import importlib.util
import itertools
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipelearn.config.errors import ConfigError, _shown
from pipelearn.config.values import _CODEC_CHOICES, COMPUTE_SETTING, MODES, NETWORK_PRESETS, parse_codec

if TYPE_CHECKING:
    from pipelearn.config.run import DeviceOverride, RunConfig


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


def _probability(v: object) -> bool:
    return _number(v) and 0 < v < 1  # type: ignore[operator]


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


def _ray_address(v: object) -> bool:
    return v == "auto" or (isinstance(v, str) and re.fullmatch(r"[^\s:]+:\d{1,5}", v) is not None)


_SCHEDULE = "a list of [seconds since training start, Mbit/s] steps: the first at 0, times rising, rates above 0"


def _slowdowns(v: object) -> bool:
    return _schedule(v) and all(_at_least(1, whole=False)(k) for _, k in v)  # type: ignore[attr-defined]


_SLOWDOWNS = "a list of [seconds since training start, factor] steps: the first at 0, times rising, factors 1 or more"


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
    "launcher": (lambda v: v in ("local", "ray"), "local or ray"),
    "ray_address": (_optional(_ray_address), "auto or the Ray head's HOST:PORT, such as 10.0.0.1:6379"),
    "ray_server_cpus": (_at_least(0, whole=False), "a number of CPUs, 0 or more"),
    "ray_server_gpus": (_at_least(0, whole=False), "a number of GPUs, 0 or more"),
    "ray_device_cpus": (_at_least(0, whole=False), "a number of CPUs, 0 or more"),
    "device_slowdown": (_at_least(1, whole=False), "a number of at least 1"),
    "slowdown_schedule": (_optional(_slowdowns), _SLOWDOWNS),
    "split": (_split_or_auto, "a number or 'auto'"),
    "microbatches": (_count_or_auto, "a number of at least 1 or 'auto'"),
    "epochs": (_at_least(1), "a whole number of at least 1"),
    "batch_size": (_at_least(1), "a whole number of at least 1"),
    "samples_per_device": (_optional(_at_least(1)), "a whole number of at least 1"),
    "partition": (lambda v: v in ("iid", "dirichlet"), "iid or dirichlet"),
    "dirichlet_alpha": (_rate, "a number above 0"),
    "aggregate_every": (_optional(_at_least(1)), "a whole number of at least 1"),
    "staleness": (lambda v: v in (0, 1) and _whole(v), "0 or 1"),
    "adapt": (lambda v: v in ("on", "off"), "on or off"),
    "server_order": (lambda v: v in ("arrival", "critical-path"), "arrival or critical-path"),
    "lr": (_rate, "a number above 0"),
    "momentum": (_at_least(0, whole=False), "a number of 0 or more"),
    "optimizer_state": (lambda v: v in ("keep", "reset"), "keep or reset"),
    "dp_noise_multiplier": (_optional(_rate), "a number above 0"),
    "dp_epsilon": (_optional(_rate), "a number above 0"),
    "dp_max_grad_norm": (_rate, "a number above 0"),
    "dp_delta": (_probability, "a number above 0 and below 1, such as 1e-5"),
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
    "replace": (lambda v: isinstance(v, bool), "true or false"),
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
    "slowdown_schedule": (_slowdowns, _SLOWDOWNS),
    "ray_cpus": _RULES["ray_device_cpus"],
}
"""What each per-device override must be when given."""


def _check(ok: bool, key: str, value: object, expected: str, *others: str) -> None:
    """Unless `ok`, refuse `key`'s value; `expected` may name the `others` keys as {1}, {2}, ..."""
    if not ok:
        raise ConfigError(f"{{0}} is {_shown(value)}; expected {expected}", key, *others)


def check_run(config: RunConfig) -> None:
    """Check every value of a run's configuration; raise ConfigError naming the first bad key."""
    for name, (ok, expected) in _RULES.items():
        value = getattr(config, name)
        _check(ok(value), name, value, expected)
    for device, override in config.device_overrides.items():
        _check(
            _whole(device) and 0 <= device < config.devices,
            "device_overrides",
            device,
            f"a device id below {config.devices}",
        )
        for name, (ok, expected) in _OVERRIDE_RULES.items():
            value = getattr(override, name)
            _check(value is None or ok(value), f"device_overrides.{device}.{name}", value, expected)
    levels: list[tuple[RunConfig | DeviceOverride, str]] = [
        (config, ""),
        *((o, f"device_overrides.{d}.") for d, o in config.device_overrides.items()),
    ]
    for level, where in levels:
        for direction in ("up", "down"):
            if None not in (getattr(level, f"{direction}_schedule"), getattr(level, f"{direction}_mbps")):
                raise ConfigError(
                    "{0} and {1} are both given; give one (a fixed rate is a schedule of one step: [[0, MBPS]])",
                    f"{where}{direction}_schedule",
                    f"{where}{direction}_mbps",
                )
    for d, o in config.device_overrides.items():
        if None not in (o.slowdown_schedule, o.device_slowdown):
            raise ConfigError(
                "{0} and {1} are both given; give one (a fixed factor is a schedule of one step: [[0, K]])",
                f"device_overrides.{d}.slowdown_schedule",
                f"device_overrides.{d}.device_slowdown",
            )
    _check(
        config.staleness == 0 or config.mode != "fl",
        "staleness",
        config.staleness,
        "0 in fl, whose devices train the whole model alone with nothing to overlap",
    )
    if config.stop_at_target:
        _check(
            config.target_accuracy is not None,
            "target_accuracy",
            None,
            "a fraction when {1} is set",
            "stop_at_target",
        )
        _check(config.eval_every >= 1, "eval_every", 0, "1 or more when {1} is set", "stop_at_target")
        _check(config.mode != "sl", "stop_at_target", True, "false in sl, which has no aggregation rounds")
    _check_privacy(config)
    _check(
        config.liveness_s >= 2 * config.heartbeat_s,
        "liveness_s",
        config.liveness_s,
        f"at least twice {{1}} ({config.heartbeat_s:g})",
        "heartbeat_s",
    )
    _check_launcher(config)
    _check_counts(config, levels)


def _check_launcher(config: RunConfig) -> None:
    """Refuse Ray settings that a local run would ignore, and namespaces under Ray, which places hosts itself."""
    if config.launcher == "local":
        _check(config.ray_address is None, "ray_address", config.ray_address, "none unless {1} is ray", "launcher")
    elif config.netns:
        raise ConfigError("{0} and {1} ray are both given: Ray places the hosts; drop one", "netns", "launcher")


def _check_counts(config: RunConfig, levels: list[tuple[RunConfig | DeviceOverride, str]]) -> None:
    """Refuse counts that the run would cap silently: more micro-batches than samples in a mini-batch, a
    mini-batch larger than a device's samples, more samples a round evaluated than are tested."""
    batch = config.batch_size
    if config.mode == "pipelearn":
        for level, where in levels:
            micro = level.microbatches
            if _whole(micro) and micro > batch:  # type: ignore[operator]
                raise ConfigError(
                    f"{{0}} is {micro}, more than {{1}} {batch}: a mini-batch of {batch} samples is cut into at "
                    f"most {batch} micro-batches; give at most {batch}, or raise {{1}}",
                    f"{where}microbatches",
                    "batch_size",
                )
    if config.samples_per_device is not None and config.samples_per_device < batch:
        raise ConfigError(
            f"{{0}} is {batch}, more than {{1}} {config.samples_per_device}: every mini-batch would be a device's "
            f"{config.samples_per_device} samples; give at most {config.samples_per_device}, or raise {{1}}",
            "batch_size",
            "samples_per_device",
        )
    if None not in (config.eval_samples, config.test_samples) and config.eval_samples > config.test_samples:  # type: ignore[operator]
        raise ConfigError(
            f"{{0}} is {config.eval_samples}, more than {{1}} {config.test_samples}: a round is evaluated on at most "
            "the samples the final model is tested on; lower {0}, or raise {1}",
            "eval_samples",
            "test_samples",
        )


def _check_privacy(config: RunConfig) -> None:
    """Refuse DP-SGD where it cannot run: two ways of setting its noise, sl, a zoo model's BatchNorm, no Opacus."""
    if config.dp_noise_multiplier is None and config.dp_epsilon is None:
        return
    if None not in (config.dp_noise_multiplier, config.dp_epsilon):
        raise ConfigError(
            "{0} and {1} are both given; give one: the noise, or the epsilon it is chosen for",
            "dp_noise_multiplier",
            "dp_epsilon",
        )
    key = "dp_noise_multiplier" if config.dp_noise_multiplier is not None else "dp_epsilon"
    _check(
        config.mode != "sl",
        "mode",
        "sl",
        "fl, sfl or pipelearn with {1}: sl has no aggregation whose weights DP-SGD would protect",
        key,
    )
    _check(
        config.staleness == 0,
        "staleness",
        config.staleness,
        "0 with {1}: DP-SGD's per-sample gradients are of the weights in force, not of a stashed version",
        key,
    )
    if ":" not in config.model and config.batchnorm:
        raise ConfigError(
            "{0} is given and {1} is true: DP-SGD clips each sample's gradient, and BatchNorm mixes a "
            "batch's samples; give --no-batchnorm (TOML batchnorm = false)",
            key,
            "batchnorm",
        )
    if importlib.util.find_spec("opacus") is None:
        raise ConfigError(
            "{0} needs Opacus, which is not installed: pip install 'pipelearn[dp]' (or pip install 'opacus==1.6.0')",
            key,
        )
