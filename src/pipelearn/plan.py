"""The run plan: what each device runs with (split, micro-batches, link, slowdown), resolved once from the config.

The configuration says what was asked for, `auto` included; the plan says exactly what runs. The server resolves
it before devices join and sends it to each of them; the schedule builder, the server, the devices and the report
read the plan, never the configuration's per-device values.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from pipelearn.config import ConfigError, Link, RunConfig, from_mapping
from pipelearn.schedule import DevicePlan, Schedule, build_schedule


@dataclass(frozen=True)
class DeviceSetup:
    """What one device runs with."""

    split: int
    """Blocks 1..split run on the device, the rest on the server (in fl every block runs on the device)."""
    microbatches: int
    """Micro-batches per mini-batch (1 outside pipelearn)."""
    link: Link
    """The device's network."""
    slowdown: float
    """Device computation takes this many times its measured time."""


@dataclass(frozen=True)
class RunPlan:
    """Per device, exactly what runs; with the planner's prediction where it chose anything."""

    devices: tuple[DeviceSetup, ...]
    predicted_epoch_s: float | None = None
    """The planner's predicted mean epoch time; None where nothing was planned."""
    bound_s: float | None = None
    """Predicted busy seconds per epoch of the busiest resource, which no schedule can beat; None if not planned."""
    host_cores: float | None = None
    """CPU cores the server and every device share in the prediction; None: each computes on hardware of its own."""
    server_order: tuple[int, ...] | None = None
    """Each device's rank at the shared server (0 first), the device predicted to finish its round last first;
    None: devices are served as their work arrives."""

    @property
    def splits(self) -> list[int]:
        """Each device's split point."""
        return [d.split for d in self.devices]

    @property
    def microbatches(self) -> list[int]:
        """Each device's micro-batch count."""
        return [d.microbatches for d in self.devices]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (the PLAN message, metrics.json)."""
        return {
            "devices": [asdict(d) for d in self.devices],
            "predicted_epoch_s": self.predicted_epoch_s,
            "bound_s": self.bound_s,
            "host_cores": self.host_cores,
            "server_order": None if self.server_order is None else list(self.server_order),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        """Inverse of to_dict; ValueError naming what is malformed."""
        try:
            devices = tuple(
                DeviceSetup(
                    split=int(d["split"]),
                    microbatches=int(d["microbatches"]),
                    link=Link(**{k: float(v) for k, v in d["link"].items()}),
                    slowdown=float(d["slowdown"]),
                )
                for d in data["devices"]
            )
            predicted, bound, cores = data.get("predicted_epoch_s"), data.get("bound_s"), data.get("host_cores")
            order = data.get("server_order")
            return cls(
                devices,
                None if predicted is None else float(predicted),
                None if bound is None else float(bound),
                None if cores is None else float(cores),
                None if order is None else tuple(int(r) for r in order),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed run plan ({exc!r}): {json.dumps(data)[:200]}") from exc


def plan_message(config: RunConfig, plan: RunPlan) -> str:
    """The text of the PLAN message: the configuration and the resolved plan, as JSON."""
    return json.dumps({"config": json.loads(config.to_json()), "plan": plan.to_dict()})


def read_plan_message(text: str) -> tuple[RunConfig, RunPlan]:
    """Inverse of plan_message; ValueError if the plan does not fit the configuration."""
    data = json.loads(text)
    config, plan = from_mapping(data["config"]), RunPlan.from_dict(data["plan"])
    if len(plan.devices) != config.devices:
        raise ValueError(f"the plan has {len(plan.devices)} devices but the run has {config.devices}")
    return config, plan


Requested = tuple[int | None, int | None]
"""A device's split and micro-batch count as asked for; None where the planner chooses."""


def requested(config: RunConfig, blocks: int) -> list[Requested]:
    """Each device's split and micro-batch count as asked for, checked against a model of `blocks` blocks.

    None marks what the planner chooses; what a mode fixes (fl: every block on the device; only pipelearn cuts
    mini-batches) is filled in whatever was asked.
    """
    out: list[Requested] = []
    for d in range(config.devices):
        split, micro = config.requested_split(d), config.requested_microbatches(d)
        if config.mode == "fl":
            split = blocks
        elif split != "auto" and not 0 <= split <= blocks:
            raise ConfigError(
                f"split {split} of device {d} is outside the model: {config.model} has {blocks} blocks, "
                f"so a split is 0..{blocks} (or 'auto')"
            )
        if config.mode != "pipelearn":
            micro = 1
        out.append((None if split == "auto" else int(split), None if micro == "auto" else int(micro)))
    if config.mode == "sl" and len({s for s, _ in out if s is not None}) > 1:
        raise ConfigError("sl passes one device half from device to device: give every device the same split")
    return out


def host_cores(config: RunConfig) -> float | None:
    """The CPU cores the run's server and devices share (config.host_cores resolved); None where they do not."""
    if config.host_cores == "off":
        return None
    if config.host_cores == "auto":
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        return float(len(usable))
    return float(config.host_cores)


def fixed_setups(config: RunConfig, splits: list[int], microbatches: list[int]) -> tuple[DeviceSetup, ...]:
    """Each device's setup with the given split and micro-batch count, and the link and slowdown of the config."""
    return tuple(_setup(config, d, s, n) for d, (s, n) in enumerate(zip(splits, microbatches, strict=True)))


def _setup(config: RunConfig, device: int, split: int, microbatches: int) -> DeviceSetup:
    return DeviceSetup(split, microbatches, config.link(device), config.slowdown(device))


def plans_for(plan: RunPlan, samples: list[int]) -> list[DevicePlan]:
    """What the schedule needs of each device, from the run plan and the devices' sample counts."""
    return [DevicePlan(n, s.split, s.microbatches) for n, s in zip(samples, plan.devices, strict=True)]


def schedule_for(config: RunConfig, plan: RunPlan, samples: list[int]) -> Schedule:
    """The run's schedule; the server, every device and the simulator build the same one."""
    return build_schedule(
        config.mode,
        plans_for(plan, samples),
        config.batch_size,
        config.epochs,
        config.aggregate_every,
        staleness=config.staleness,
        server_order=plan.server_order,
    )
