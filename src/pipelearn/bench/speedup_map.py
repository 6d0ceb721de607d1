"""Where PipeLearn pays off: its predicted speed-up over fl and sfl across device slowdown and uplink rate.

The simulator, calibrated by one profile of the model, predicts each mode's epoch time at its own best plan for
every point of the grid; the bench marks its measured runs on the map beside their predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from pipelearn.config import RunConfig
from pipelearn.data.dealing import data_shape
from pipelearn.models import canonical_model_name
from pipelearn.models.parts import make_model
from pipelearn.planner.measure import profile_model
from pipelearn.planner.resolve import at_best_plan
from pipelearn.planner.search import plan_run

SLOWDOWNS = (1.0, 2.0, 4.0, 7.0, 10.0, 20.0, 40.0, 70.0, 100.0)
"""Device slowdowns on the map's horizontal axis (1 to 100)."""
UPLINKS_MBPS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""Uplink rates (Mbit/s) on its vertical axis; the downlink is 2.5 times the uplink, as in the 4g preset."""


def predicted_epoch_s(
    config: RunConfig, model: nn.Sequential, mode: str, slowdown: float, up_mbps: float, profile: Any
) -> float:
    """The predicted epoch time of `mode` at its best plan, with every device at this slowdown and uplink."""
    shape, _ = data_shape(config)
    point = at_best_plan(
        config, mode, device_slowdown=slowdown, up_mbps=up_mbps, down_mbps=2.5 * up_mbps, device_overrides={}
    )
    planned = plan_run(point, model, shape, profile)
    epoch = planned.plan.predicted_epoch_s
    assert epoch is not None
    return epoch


def speedup_map(
    config: RunConfig,
    measured: Sequence[dict[str, Any]] = (),
    slowdowns: Sequence[float] = SLOWDOWNS,
    uplinks: Sequence[float] = UPLINKS_MBPS,
    profile: Any = None,
) -> dict[str, Any]:
    """Predicted speed-up of pipelearn over fl and over sfl at each (uplink, slowdown) of the grid, and at each
    `measured` point ({"slowdown", "up_mbps", "over_fl", "over_sfl"}: measured speed-ups) the prediction beside it;
    from `profile` where given, else from a profile of the model measured here."""
    shape, classes = data_shape(config)
    model = make_model(config, shape, classes)  # built once: the planner only reads its blocks
    if profile is None:
        profile = profile_model(canonical_model_name(config.model), model, shape, config.batch_size)
    points = []
    for point in measured:
        at = (point["slowdown"], point["up_mbps"], profile)
        ours = predicted_epoch_s(config, model, "pipelearn", *at)
        predicted = {
            f"predicted_over_{mode}": predicted_epoch_s(config, model, mode, *at) / ours for mode in ("fl", "sfl")
        }
        points.append({**point, **predicted})
    over: dict[str, list[list[float]]] = {"fl": [], "sfl": []}
    for up in uplinks:
        row_fl, row_sfl = [], []
        for slowdown in slowdowns:
            ours = predicted_epoch_s(config, model, "pipelearn", slowdown, up, profile)
            row_fl.append(predicted_epoch_s(config, model, "fl", slowdown, up, profile) / ours)
            row_sfl.append(predicted_epoch_s(config, model, "sfl", slowdown, up, profile) / ours)
        over["fl"].append(row_fl)
        over["sfl"].append(row_sfl)
    return {
        "model": config.model,
        "dataset": config.dataset,
        "devices": config.devices,
        "slowdowns": list(slowdowns),
        "uplinks_mbps": list(uplinks),
        "over_fl": over["fl"],
        "over_sfl": over["sfl"],
        "points": points,
    }
