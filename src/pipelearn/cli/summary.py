"""The JSON summary `--json` ends a training command with."""

from __future__ import annotations

import json
from typing import Any


def _summary(metrics: dict[str, Any]) -> str:
    shown: dict[str, Any] = {
        k: metrics[k]
        for k in ("mode", "model", "dataset", "train_time_s", "epoch_times_s", "test_accuracy")
        if k in metrics
    }
    if metrics.get("plan", {}).get("predicted_epoch_s") is not None:
        shown["predicted_epoch_s"] = metrics["plan"]["predicted_epoch_s"]
    if "server" in metrics:
        shown["server_idle_s"] = metrics["server"]["idle_s"]
        shown["device_idle_s"] = [d["idle_s"] for d in metrics["device"]]
    shown.update(_accuracy_summary(metrics))
    return json.dumps(_rounded(shown), indent=1)


def _accuracy_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    from pipelearn.metrics.rounds import best_accuracy

    shown: dict[str, Any] = {}
    if metrics.get("rounds"):
        shown["best_accuracy"] = best_accuracy(metrics)
        shown["eval_s"] = metrics["eval_s"]
    if metrics.get("target_accuracy") is not None:
        shown["target_accuracy"] = metrics["target_accuracy"]
        shown["time_to_accuracy_s"] = metrics["time_to_accuracy_s"]
        shown["target_round"] = metrics["target_round"]
        if metrics.get("stopped_at_target"):
            shown["stopped_after_round"] = metrics["stopped_after_round"]
    return shown


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value
