"""The results files of a run: metrics.json (times, busy and idle, bytes, accuracy), trace.json and the model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pipelearn.config import RunConfig
from pipelearn.events import Event, compute_track, link_track
from pipelearn.metrics.accounting import (
    bottleneck,
    compression_totals,
    epoch_times,
    peak_memory,
    track_usage,
    train_losses,
)
from pipelearn.metrics.trace import write_trace
from pipelearn.plan import RunPlan


def write_results(
    out: Path,
    config: RunConfig,
    events: Sequence[Event],
    start: float,
    end: float,
    accuracy: float,
    state: dict[str, torch.Tensor],
    *,
    plan: RunPlan,
    samples: list[int],
    bytes_up: list[int],
    bytes_down: list[int],
    errors: dict[int, str],
    startup_s: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    compression: list[dict[str, dict[str, Any]]] | None = None,
    server_device: str = "cpu",
    dropped: Sequence[dict[str, Any]] = (),
    rejoined: Sequence[dict[str, Any]] = (),
    resumed_from_round: int | None = None,
) -> dict[str, Any]:
    """Write metrics.json, trace.json and model.safetensors into `out`; return the metrics (`extra` added to them).

    `compression` holds, per device, the codec and raw and wire tensor bytes of each direction (up, down).
    """
    out.mkdir(parents=True, exist_ok=True)
    wall = end - start
    devices = []
    for d in range(config.devices):
        usage = track_usage(events, compute_track(d), start, end)
        devices.append(
            {
                **usage,
                "samples": samples[d],
                "bytes_up": bytes_up[d],
                "bytes_down": bytes_down[d],
                "uplink_busy_s": track_usage(events, link_track(d, "uplink"), start, end)["busy_s"],
                "downlink_busy_s": track_usage(events, link_track(d, "downlink"), start, end)["busy_s"],
                "uplink_mbps": [list(step) for step in config.rates(d, "up")],
                "downlink_mbps": [list(step) for step in config.rates(d, "down")],
                "split": plan.devices[d].split if config.mode != "fl" else None,
                "microbatches": plan.devices[d].microbatches,
                "slowdown": plan.devices[d].slowdown,
                "slowdowns": [[0.0, plan.devices[d].slowdown], *(list(s) for s in config.slowdowns(d)[1:])],
                "peak_memory_bytes": peak_memory(events, d),
                "error": errors.get(d),
                **({"compression": compression[d]} if compression else {}),
            }
        )
    metrics = {
        "mode": config.mode,
        "model": config.model,
        "dataset": config.dataset,
        "network": config.network,
        "shaper": "kernel" if config.netns else "user space",
        "devices": config.devices,
        "split": [d["split"] for d in devices],
        "microbatches": [d["microbatches"] for d in devices],
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "train_time_s": wall,
        "startup_s": startup_s,
        "optimizer_state": config.optimizer_state,
        "staleness": config.staleness,
        "epoch_times_s": epoch_times(events, start, end, config.epochs),
        "train_loss": train_losses(events, config.epochs),
        "test_accuracy": accuracy,
        "bytes_up": sum(bytes_up),
        "bytes_down": sum(bytes_down),
        **({"compression": compression_totals(compression)} if compression else {}),
        "server": track_usage(events, compute_track(None), start, end),
        "server_device": server_device,
        "device": devices,
        "bottleneck": bottleneck(events, start, end),
        "failed_devices": sorted(errors),
        **(extra or {}),
        "dropped": list(dropped),
        "rejoined": list(rejoined),
        "resumed_from_round": resumed_from_round,
        "plan": plan.to_dict(),
        "config": json.loads(config.to_json()),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    rates = {link_track(d, f"{x}link"): config.rates(d, x) for d in range(config.devices) for x in ("up", "down")}
    write_trace(events, out / "trace.json", origin=start, rates=rates, end=end)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    return metrics


def add_metrics(out: Path, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Add sections to a run's metrics and rewrite its metrics.json; return the metrics."""
    metrics = {**metrics, **extra}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
