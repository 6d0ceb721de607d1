"""The readable end-of-run summary: mode, model, epochs, accuracy, the busiest resource and where the files are."""

from __future__ import annotations

from pipelearn.metrics.summary import summary

RUN = {
    "mode": "pipelearn",
    "model": "vgg5",
    "dataset": "mnist",
    "devices": 2,
    "network": "4g",
    "train_time_s": 26.9,
    "epoch_times_s": [14.61, 12.29],
    "startup_s": {"server": 1.7, "devices": [1.0, 1.2]},
    "test_accuracy": 0.90991,
    "server": {"busy_s": 1.0, "idle_s": 25.9},
    "device": [{"idle_s": 20.0}, {"idle_s": 22.0}],
    "bottleneck": {"resource": "device1/uplink", "busy_s": 20.2},
    "failed_devices": [1],
}


def test_a_run_summary_says_what_ran_how_long_how_well_and_where() -> None:
    text = summary(RUN, "runs/x")
    assert text.splitlines()[0] == "pipelearn mode, vgg5 on mnist, 2 devices, network 4g"
    for part in (
        "14.6 s, 12.3 s",
        "training 26.9 s",
        "start-up 1.7 s server, 1.1 s per device",
        "90.99%",
        "device1/uplink, busy 20.2 s of 26.9 s",
        "server 25.9 s, devices 21.0 s on average",
        "device 1",
        "runs/x/metrics.json",
        "runs/x/trace.json",
    ):
        assert part in text, part


def test_a_local_training_summary_has_no_fleet_rows() -> None:
    local = {k: RUN[k] for k in ("model", "dataset", "train_time_s", "epoch_times_s", "test_accuracy")}
    text = summary({**local, "mode": "local", "samples": 60000}, "runs/train-local")
    assert "60000 samples in one process" in text and "busiest" not in text
    assert "runs/train-local/metrics.json" in text


def test_a_summary_names_the_best_round_and_the_time_to_target() -> None:
    rounds = [{"round": 0, "test_accuracy": 0.5}, {"round": 1, "test_accuracy": 0.93}]
    run = {**RUN, "rounds": rounds, "eval_s": 2.5, "target_accuracy": 0.9, "time_to_accuracy_s": 12.25}
    text = summary({**run, "target_round": 1, "stopped_at_target": True, "stopped_after_round": 2}, "runs/x")
    assert "best 93.00% over 2 rounds (evaluation 2.5 s, not counted)" in text
    assert "90.00% reached after 12.2 s (round 1); stopped after round 2" in text
    assert "not reached" in summary({**run, "time_to_accuracy_s": None}, "runs/x")


def test_a_device_that_rejoined_is_not_left_dropped() -> None:
    run = {
        **RUN,
        "failed_devices": [1],
        "dropped": [{"device": 1, "round": 2, "time_s": 8.0, "reason": "silent"}],
        "rejoined": [{"device": 1, "round": 3, "time_s": 11.0}],
    }
    assert "  dropped       device 1 in round 2, rejoined at round 3" in summary(run, "runs/x").splitlines()
    again = {**run, "dropped": [*run["dropped"], {"device": 1, "round": 4, "time_s": 15.0, "reason": "gone"}]}
    assert "device 1 in round 2, rejoined at round 3; device 1 in round 4" in summary(again, "runs/x")
    assert "dropped" not in summary({**RUN, "failed_devices": [], "dropped": []}, "runs/x")
    assert "  dropped       device 1" in summary(RUN, "runs/x").splitlines()  # metrics without the drop log


def test_a_resumed_run_says_so() -> None:
    text = summary({**RUN, "resumed_from_round": 3}, "runs/x")
    line = "  resumed       from a checkpoint after 3 rounds; times, rounds and trace cover the whole run, less what"
    assert any(row.startswith(line) for row in text.splitlines())
    assert "resumed" not in summary({**RUN, "resumed_from_round": None}, "runs/x")


def test_the_plans_prediction_stands_beside_the_measurement() -> None:
    text = summary({**RUN, "plan": {"predicted_epoch_s": 12.04}}, "runs/x")
    assert "  plan          predicted 12.0 s an epoch, measured 13.4 s on average" in text.splitlines()
    assert "predicted" not in summary({**RUN, "plan": {"predicted_epoch_s": None}}, "runs/x")


def _devices(*pairs: tuple[list[list[float]], float]) -> list[dict[str, object]]:
    return [{"idle_s": 1.0, "uplink_mbps": up, "slowdown": k} for up, k in pairs]


def test_the_network_is_the_presets_only_where_every_device_has_its_rates() -> None:
    first = lambda run: summary({**RUN, **run}, "runs/x").splitlines()[0]  # noqa: E731
    preset = _devices(([[0.0, 10.0]], 4.0), ([[0.0, 10.0]], 4.0))
    assert first({"device": preset}).endswith("2 devices, network 4g")
    faster = _devices(([[0.0, 5.0]], 4.0), ([[0.0, 5.0]], 4.0))
    assert first({"device": faster}).endswith("2 devices, uplink 5 Mbit/s")
    mixed = _devices(([[0.0, 50.0]], 2.0), ([[0.0, 10.0]], 8.0))
    assert first({"device": mixed}).endswith("2 devices, mixed: uplink 10-50 Mbit/s, slowdown 2-8")
    slow = _devices(([[0.0, 10.0]], 4.0), ([[0.0, 10.0]], 8.0))
    assert first({"device": slow}).endswith("2 devices, mixed: network 4g, slowdown 4-8")
    varying = _devices(([[0.0, 10.0], [30.0, 2.0]], 4.0), ([[0.0, 10.0], [30.0, 2.0]], 4.0))
    assert first({"device": varying}).endswith("2 devices, uplink 2-10 Mbit/s over time")
