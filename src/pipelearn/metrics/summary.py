"""A few lines a person reads at the end of a run: what ran, how long it took, how well it learned, where it is."""

from __future__ import annotations

import math
from typing import Any

from pipelearn.config import NETWORK_PRESETS
from pipelearn.metrics.rounds import best_accuracy


def summary(metrics: dict[str, Any], out: str) -> str:
    """The human-readable summary of a run's (or a local training's) metrics, written to directory `out`."""
    lines = [f"{metrics['mode']} mode, {metrics['model']} on {metrics['dataset']}" + _fleet(metrics)]
    epochs = ", ".join(f"{t:.1f} s" for t in metrics["epoch_times_s"])
    lines.append(_row("epochs", f"{epochs}  (training {metrics['train_time_s']:.1f} s{_startup(metrics)})"))
    if metrics.get("resumed_from_round") is not None:
        rounds = metrics["resumed_from_round"]
        lines.append(
            _row(
                "resumed",
                f"from a checkpoint after {rounds} rounds; times, rounds and trace cover the whole run, less what was "
                "lost after that checkpoint",
            )
        )
    predicted = (metrics.get("plan") or {}).get("predicted_epoch_s")
    if predicted is not None and metrics["epoch_times_s"]:
        mean = sum(metrics["epoch_times_s"]) / len(metrics["epoch_times_s"])
        lines.append(_row("plan", f"predicted {predicted:.1f} s an epoch, measured {mean:.1f} s on average"))
    if metrics.get("replans"):
        lines.append(_row("re-planned", _replans(metrics["replans"])))
    lines.append(_row("test accuracy", f"{100 * metrics['test_accuracy']:.2f}%{_rounds(metrics)}"))
    if metrics.get("target_accuracy") is not None:
        lines.append(_row("target", _target(metrics)))
    if metrics.get("privacy"):
        lines.append(_row("privacy", _privacy(metrics["privacy"])))
    if "server" in metrics:
        wall = metrics["train_time_s"]
        neck = metrics["bottleneck"]
        if neck.get("resource"):
            share = f"busy {neck['busy_s']:.1f} s of {wall:.1f} s: no schedule beats that"
            lines.append(_row("busiest", f"{neck['resource']}, {share}"))
        device_idle = sum(d["idle_s"] for d in metrics["device"]) / len(metrics["device"])
        server_idle = metrics["server"]["idle_s"]
        lines.append(_row("idle", f"server {server_idle:.1f} s, devices {device_idle:.1f} s on average"))
        if metrics.get("failed_devices") or metrics.get("dropped"):
            lines.append(_row("dropped", _dropped(metrics)))
        lines.append(_row("results", f"{out}/metrics.json, {out}/model.safetensors"))
        lines.append(_row("timeline", f"{out}/timeline.png; every action in {out}/trace.json (ui.perfetto.dev)"))
    else:
        lines.append(_row("results", f"{out}/metrics.json, {out}/model.safetensors"))
    return "\n".join(lines)


def _replans(replans: list[dict[str, Any]]) -> str:
    """How often the run changed plan, and the last change."""
    last = replans[-1]
    splits = [d["split"] for d in last["new"]["devices"]]
    counts = [d["microbatches"] for d in last["new"]["devices"]]
    times = "once" if len(replans) == 1 else f"{len(replans)} times"
    return (
        f"{times}; last after round {last['round'] + 1}: split {splits}, micro-batches {counts}, predicted "
        f"{last['predicted_new_s']:.1f} s an epoch against {last['predicted_old_s']:.1f} s"
    )


def _row(label: str, text: str) -> str:
    return f"  {label:<14}{text}"


def _fleet(metrics: dict[str, Any]) -> str:
    if "devices" not in metrics:
        return f", {metrics.get('samples', '?')} samples in one process"
    return f", {metrics['devices']} devices, {_network(metrics)}"


def _network(metrics: dict[str, Any]) -> str:
    """The fleet's network: its preset where every device has the preset's uplink, else the devices' uplink rates;
    and their slowdowns where they differ ('mixed:' where devices differ)."""
    devices = metrics.get("device") or []
    uplinks = [tuple(tuple(step) for step in d["uplink_mbps"]) for d in devices if "uplink_mbps" in d]
    slowdowns = sorted({float(d["slowdown"]) for d in devices if "slowdown" in d})
    preset = NETWORK_PRESETS.get(metrics["network"])
    parts = []
    if preset is not None and all(u == ((0.0, float(preset.up_mbps)),) for u in uplinks):
        parts.append(f"network {metrics['network']}")
    else:
        rates = sorted({rate for u in uplinks for _, rate in u})
        up = f"{rates[0]:g}" if len(rates) == 1 else f"{rates[0]:g}-{rates[-1]:g}"
        parts.append(f"uplink {up} Mbit/s" + (" over time" if any(len(u) > 1 for u in uplinks) else ""))
    if len(slowdowns) > 1:
        parts.append(f"slowdown {slowdowns[0]:g}-{slowdowns[-1]:g}")
    mixed = len(set(uplinks)) > 1 or len(slowdowns) > 1
    return ("mixed: " if mixed else "") + ", ".join(parts)


def _dropped(metrics: dict[str, Any]) -> str:
    """Each device dropped, in which round, and whether and when it rejoined."""
    dropped, rejoined = metrics.get("dropped") or [], metrics.get("rejoined") or []
    if not dropped:
        return ", ".join(f"device {d}" for d in metrics["failed_devices"])
    told = []
    for i, drop in enumerate(dropped):
        device, lost = drop["device"], drop["round"]
        next_drop = min((d["round"] for d in dropped[i + 1 :] if d["device"] == device), default=math.inf)
        back = [r["round"] for r in rejoined if r["device"] == device and lost <= r["round"] <= next_drop]
        told.append(f"device {device} in round {lost}" + (f", rejoined at round {back[0]}" if back else ""))
    return "; ".join(told)


def _startup(metrics: dict[str, Any]) -> str:
    startup = metrics.get("startup_s")
    if not startup:
        return ""
    devices = startup["devices"]
    mean = sum(devices) / len(devices) if devices else 0.0
    return f"; start-up {startup['server']:.1f} s server, {mean:.1f} s per device, not counted"


def _rounds(metrics: dict[str, Any]) -> str:
    if not metrics.get("rounds"):
        return ""
    best = best_accuracy(metrics) or 0.0
    rounds = len(metrics["rounds"])
    return f"; best {100 * best:.2f}% over {rounds} rounds (evaluation {metrics['eval_s']:.1f} s, not counted)"


def _privacy(privacy: dict[str, Any]) -> str:
    noise = sorted(set(privacy["noise_multiplier"]))
    sigma = f"{noise[0]:.3g}" if len(noise) == 1 else f"{noise[0]:.3g}-{noise[-1]:.3g}"
    return (
        f"epsilon {privacy['max_epsilon']:.2f} at delta {privacy['delta']:g} (DP-SGD on the device parts, noise "
        f"{sigma}, clip {privacy['max_grad_norm']:g}); each round's in metrics.json"
    )


def _target(metrics: dict[str, Any]) -> str:
    target = f"{100 * metrics['target_accuracy']:.2f}%"
    if metrics.get("time_to_accuracy_s") is None:
        return f"{target} not reached"
    text = f"{target} reached after {metrics['time_to_accuracy_s']:.1f} s (round {metrics['target_round']})"
    if metrics.get("stopped_at_target"):
        text += f"; stopped after round {metrics['stopped_after_round']}"
    return text
