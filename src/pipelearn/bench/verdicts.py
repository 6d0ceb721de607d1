"""One sentence per setting of a bench: where pipelining paid and where it did not, and what bound each run.

A setting is one regime, model and network. pipelearn is held against the fastest of the other modes run there:
it "paid" where it was at least `EVEN` faster, "did not pay" where it was at least `EVEN` slower, and was "about
even" between. What bound a run is the busiest resource of its trace (metrics.json's "bottleneck")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

EVEN = 0.05
"""Within this fraction of the fastest other mode's epoch time, pipelearn is "about even" (the machine is noisy)."""
REGIME_LABELS = {"strong": "strong devices", "edge": "edge devices"}


def resource_kind(track: str | None) -> str:
    """What a bottleneck's track is, in words: a device's compute, its uplink or downlink, or the server."""
    if not track:
        return "nothing recorded"
    owner, _, kind = track.partition("/")
    if owner == "server":
        return "the server's compute"
    if kind in ("uplink", "downlink"):
        return f"the {kind}"
    return "the devices' compute"


def _bound(row: dict[str, Any]) -> str:
    share = row["bound_s"] / row["train_time_s"] if row["train_time_s"] > 0 else 0.0
    return f"{row['mode']} by {resource_kind(row['bound_resource'])} ({row['bound_resource']}, busy {share:.0%})"


def _why(ours: dict[str, Any], best: dict[str, Any], outcome: str) -> str:
    """Why pipelearn paid or did not, from what bound it and the fastest other mode."""
    theirs, mine = resource_kind(best["bound_resource"]), resource_kind(ours["bound_resource"])
    if outcome == "paid":
        if theirs == "the devices' compute" and mine != theirs:
            return (
                f"the devices' compute held {best['mode']} back, and pipelearn moved most of it to the server and "
                "overlapped the rest with the links"
            )
        return f"pipelearn overlapped {theirs}, which held {best['mode']} back, with the other resources"
    if mine in ("the uplink", "the downlink"):
        return f"pipelearn's activations and gradients made {mine} its bound, which cost more than the split saved"
    if mine == "the server's compute":
        return (
            "the server's compute, which serves every device's part, bound pipelearn: with the devices' work moved "
            "there, little was left to overlap"
        )
    if mine == "the devices' compute":
        return "the devices' compute bound pipelearn too: pipelining overlaps it with the links, it does not shrink it"
    return f"nothing held {best['mode']} back that pipelining could overlap"


def same_plan_as_sfl(ours: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str | None:
    """Where the planner gave pipelearn sfl's own plan (its split, one micro-batch), the reason to say so."""
    sfl = next((r for r in rows if r["mode"] == "sfl"), None)
    if sfl is None or "split" not in ours or ours["split"] != sfl.get("split"):
        return None
    if any(m != 1 for m in ours.get("microbatches", [])):
        return None
    splits = "/".join(str(s) for s in dict.fromkeys(ours["split"]))
    return (
        f"the planner gave pipelearn sfl's own plan (split {splits}, one micro-batch): nothing was pipelined, and "
        "the difference from sfl is noise between two runs of one schedule"
    )


def verdict(rows: Sequence[dict[str, Any]]) -> str | None:
    """The sentence for one setting's runs (one regime, model and network), or None without pipelearn and another
    mode among them."""
    ours = next((r for r in rows if r["mode"] == "pipelearn"), None)
    others = sorted((r for r in rows if r["mode"] != "pipelearn"), key=lambda r: r["epoch_time_s"])
    if ours is None or not others:
        return None
    best = others[0]
    ratio = best["epoch_time_s"] / ours["epoch_time_s"]
    outcome = "paid" if ratio >= 1 + EVEN else "did not pay" if ratio <= 1 - EVEN else "was about even"
    regime = ours.get("regime", "strong")
    slowdown = ours.get("device_slowdown")
    setting = f"{REGIME_LABELS.get(regime, regime)}" + (f" (slowdown {slowdown:g})" if slowdown else "")
    speeds = ", ".join(f"{r['epoch_time_s'] / ours['epoch_time_s']:.2f}x {r['mode']}'s speed" for r in others)
    bounds = "; ".join(_bound(r) for r in [*others, ours])
    return (
        f"{setting}, {ours['model']} under {ours['network']}: pipelining {outcome} "
        f"(pipelearn {ours['epoch_time_s']:.2f} s per epoch, {speeds}), because "
        f"{same_plan_as_sfl(ours, rows) or _why(ours, best, outcome)}; "
        f"bound: {bounds}."
    )


def verdicts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One sentence per setting (regime, model, network) of a bench's runs, in the order they ran."""

    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return (r.get("regime", "strong"), r["model"], r["network"])

    said = [verdict([r for r in rows if key(r) == setting]) for setting in dict.fromkeys(key(r) for r in rows)]
    return [s for s in said if s is not None]
