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
