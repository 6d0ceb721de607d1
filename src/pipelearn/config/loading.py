"""Settings from TOML and JSON, and the checks that need more than the settings: files, the data's sizes."""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelearn.config.errors import ConfigError, _shown, unknown_keys
from pipelearn.config.rules import _whole
from pipelearn.config.run import DeviceOverride, RunConfig

log = logging.getLogger("pipelearn.config")


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
