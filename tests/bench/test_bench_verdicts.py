"""The verdict sentences of a bench, from hand-made rows: where pipelining paid, where not, and what bound each run."""

from __future__ import annotations

from typing import Any

import pytest

from pipelearn.bench.verdicts import resource_kind, verdict, verdicts


def _row(mode: str, epoch: float, bound: str, regime: str = "strong", network: str = "wifi") -> dict[str, Any]:
    return {
        "regime": regime,
        "device_slowdown": 4.0 if regime == "strong" else 40.0,
        "model": "vgg5",
        "network": network,
        "mode": mode,
        "epoch_time_s": epoch,
        "train_time_s": epoch,
        "bound_s": 0.8 * epoch,
        "bound_resource": bound,
    }


EDGE = [
    _row("fl", 30.0, "device0/compute", "edge"),
    _row("sfl", 12.0, "device1/compute", "edge"),
    _row("pipelearn", 4.0, "server/compute", "edge"),
]
STRONG = [
    _row("fl", 2.2, "device0/compute"),
    _row("sfl", 2.5, "device0/uplink"),
    _row("pipelearn", 2.6, "device0/uplink"),
]


@pytest.mark.parametrize(
    ("track", "kind"),
    [
        ("server/compute", "the server's compute"),
        ("device3/compute", "the devices' compute"),
        ("device0/uplink", "the uplink"),
        ("device1/downlink", "the downlink"),
        (None, "nothing recorded"),
    ],
)
def test_a_bound_is_named_by_what_it_is(track: str | None, kind: str) -> None:
    assert resource_kind(track) == kind


def test_where_the_devices_bound_the_others_pipelining_paid_and_the_sentence_says_why() -> None:
    said = verdict(EDGE)
    assert said is not None
    assert said.startswith("edge devices (slowdown 40), vgg5 under wifi: pipelining paid (pipelearn 4.00 s per epoch")
    assert "3.00x sfl's speed, 7.50x fl's speed" in said
    assert "the devices' compute held sfl back, and pipelearn moved most of it to the server" in said
    assert "pipelearn by the server's compute (server/compute, busy 80%)" in said
    assert "fl by the devices' compute (device0/compute, busy 80%)" in said


def test_where_pipelearn_was_slower_the_sentence_says_it_did_not_pay_and_names_its_bound() -> None:
    said = verdict(STRONG)
    assert said is not None
    assert said.startswith("strong devices (slowdown 4), vgg5 under wifi: pipelining did not pay")
    assert "0.85x fl's speed" in said  # 2.2 / 2.6, the fastest other mode first
    assert "pipelearn's activations and gradients made the uplink its bound" in said


def test_within_five_percent_is_about_even_whichever_side() -> None:
    for ours in (1.96, 2.04):
        rows = [_row("fl", 2.0, "device0/compute"), _row("pipelearn", ours, "server/compute")]
        assert "pipelining was about even" in (verdict(rows) or "")
    assert "pipelining paid" in (verdict([_row("fl", 2.0, "device0/compute"), _row("pipelearn", 1.9, "x")]) or "")


def test_one_sentence_per_setting_and_none_without_pipelearn_or_another_mode() -> None:
    said = verdicts([*STRONG, *EDGE, _row("fl", 5.0, "device0/compute", network="4g")])
    assert len(said) == 2
    assert said[0].startswith("strong devices") and said[1].startswith("edge devices")
    assert verdict([_row("pipelearn", 1.0, "server/compute")]) is None
    assert verdict([_row("fl", 1.0, "device0/compute")]) is None


def test_rows_of_a_bench_before_regimes_read_as_strong_devices() -> None:
    old = [{k: v for k, v in r.items() if k not in ("regime", "device_slowdown")} for r in STRONG]
    (said,) = verdicts(old)
    assert said.startswith("strong devices, vgg5 under wifi: pipelining did not pay")


def test_the_reason_follows_what_bound_pipelearn_and_the_fastest_other_mode() -> None:
    server_bound = [_row("sfl", 8.0, "device1/compute", "edge"), _row("pipelearn", 9.0, "server/compute", "edge")]
    assert "the server's compute, which serves every device's part, bound pipelearn" in (verdict(server_bound) or "")
    both_devices = [_row("fl", 5.0, "device1/compute"), _row("pipelearn", 4.0, "device2/compute")]
    said = verdict(both_devices) or ""
    assert "pipelining paid" in said and "pipelearn overlapped the devices' compute, which held fl back" in said
    assert "moved most of it" not in said
    device_bound = [_row("fl", 2.0, "device0/compute"), _row("pipelearn", 3.0, "device0/compute")]
    assert "the devices' compute bound pipelearn too: pipelining overlaps it" in (verdict(device_bound) or "")


def test_where_pipelearn_ran_sfls_own_plan_the_sentence_says_nothing_was_pipelined() -> None:
    plan = {"split": [1, 1], "microbatches": [1, 1]}
    rows = [_row("sfl", 6.8, "device1/compute") | plan, _row("pipelearn", 7.3, "device0/compute") | plan]
    said = verdict(rows) or ""
    assert "did not pay" in said and "the planner gave pipelearn sfl's own plan (split 1, one micro-batch)" in said
    pipelined = {"split": [1, 1], "microbatches": [2, 2]}
    rows = [_row("sfl", 6.8, "device1/compute") | plan, _row("pipelearn", 7.3, "device0/compute") | pipelined]
    assert "sfl's own plan" not in (verdict(rows) or "")
