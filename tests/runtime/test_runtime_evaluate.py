"""Each round's global model is evaluated beside training: the right model, the arithmetic unchanged, early stops."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from pipelearn.data import load_dataset
from pipelearn.events import compute_track
from pipelearn.models.parts import make_model
from pipelearn.plan import RunPlan, schedule_for
from pipelearn.planner.resolve import resolve_plan
from pipelearn.runtime.evaluate import RoundEvaluator, _lower_priority
from pipelearn.runtime.launch import run_local
from pipelearn.runtime.server import Server, prepare
from pipelearn.schedule import Resource
from pipelearn.training import evaluate

State = dict[str, torch.Tensor]


def _run(
    config: Any, seen: dict[int, set[str]] | None = None
) -> tuple[Server, dict[str, Any], dict[int, State], list[int | None]]:
    """Train with real device processes; return the server, its metrics, every round's global model, device exits;
    `seen` gets the names of the events the server holds at each aggregation."""
    server = Server(prepare(config), progress=False)
    port = server.listen("127.0.0.1:0", insecure=True)
    globals_: dict[int, State] = {}
    handed_over = server.rounds.aggregated

    def spy(round: int, state: State, events: Any) -> bool:
        globals_[round] = {k: v.clone() for k, v in state.items()}
        if seen is not None:
            seen[round] = {e.name for e in events}
        return handed_over(round, state, events)

    server.rounds.aggregated = spy  # type: ignore[method-assign]
    devices = [
        subprocess.Popen(
            [sys.executable, "-m", "pipelearn", "device", "--insecure", "--server", f"127.0.0.1:{port}", "--id", str(d)]
        )
        for d in range(config.devices)
    ]
    try:
        metrics = server.run()
    finally:
        codes = [p.wait(60) for p in devices]
    return server, metrics, globals_, codes


def _accuracy(config: Any, state: State, samples: int | None) -> float:
    test = load_dataset(config.dataset, "test")
    model = make_model(config, test.input_shape, test.num_classes)
    model.load_state_dict(state)
    return evaluate(model, test, samples, config.seed)


@pytest.mark.slow
def test_every_round_is_recorded_with_the_accuracy_of_its_global_model(small_config):
    config = small_config(epochs=2, samples_per_device=60, aggregate_every=1, eval_every=2, eval_samples=150)
    server, metrics, globals_, codes = _run(config)
    assert codes == [0, 0]
    rounds = metrics["rounds"]
    assert [r["round"] for r in rounds] == list(range(6)) == sorted(globals_)
    assert all(r["train_loss"] is not None and r["train_loss"] > 0 for r in rounds)
    times = [r["time_s"] for r in rounds]
    assert times == sorted(times) and 0 < times[-1] <= metrics["train_time_s"]
    evaluated = [r["round"] for r in rounds if r["test_accuracy"] is not None]
    assert evaluated == [1, 3, 5]
    for r in evaluated:
        assert rounds[r]["test_accuracy"] == _accuracy(config, globals_[r], 150), f"round {r}"
        assert rounds[r]["eval_s"] > 0
    assert metrics["eval_s"] == pytest.approx(sum(r["eval_s"] for r in rounds))
    assert metrics["eval_samples"] == 150
    # the last round's global model is the final model written out, whose accuracy is on test_samples
    final = load_file(f"{config.out}/model.safetensors")
    assert all(torch.equal(final[k], v) for k, v in globals_[5].items())
    assert metrics["test_accuracy"] == _accuracy(config, final, config.test_samples)
    # nothing of the evaluation is on the server's track: its events are exactly the schedule's server actions
    schedule = schedule_for(config, _plan(config), [d["samples"] for d in metrics["device"]])
    server_actions = sorted(
        str(a.key) for (res, _), lane in schedule.lanes.items() if res is Resource.SERVER for a in lane
    )
    assert sorted(e.name for e in server.recorder.events if e.track == compute_track(None)) == server_actions


@pytest.mark.slow
def test_the_server_holds_each_devices_timeline_of_a_round_when_it_aggregates_it(small_config):
    config = small_config(epochs=2, samples_per_device=60, aggregate_every=1, eval_every=0)
    seen: dict[int, set[str]] = {}
    server, metrics, _, codes = _run(config, seen)
    assert codes == [0, 0]
    schedule = schedule_for(config, _plan(config), [d["samples"] for d in metrics["device"]])
    for round, names in seen.items():
        for d in range(config.devices):
            computed = [a for a in schedule.lane(Resource.DEVICE, d) if a.key.round == round]
            sent = [a for a in schedule.lane(Resource.UPLINK, d) if a.key.round == round]
            # all but the upload of the weights themselves, which comes with the next round's
            assert {str(a.key) for a in computed[:-1]} <= names, (round, d)
            assert {str(a.key) for a in sent[:-1]} <= names, (round, d)
    # and nothing twice by the end: the devices' last words hold only what they had not sent
    names = [e.name for e in server.recorder.events]
    assert len(names) == len(set(names))


@pytest.mark.slow
def test_evaluating_every_round_leaves_the_training_arithmetic_as_it_is(small_config):
    weights = {}
    for every in (1, 0):
        config = small_config(aggregate_every=1, eval_every=every, out=small_config().out + f"-every{every}")
        metrics = run_local(config, progress=False)
        weights[every] = load_file(f"{config.out}/model.safetensors")
        accuracies = [r["test_accuracy"] for r in metrics["rounds"]]
        assert len(accuracies) == 2
        if every == 0:  # only the final model is evaluated
            assert accuracies == [None, metrics["test_accuracy"]] and metrics["eval_s"] == 0
        else:
            assert None not in accuracies and metrics["eval_s"] > 0
    assert weights[1].keys() == weights[0].keys()
    for name, value in weights[1].items():
        assert torch.equal(value, weights[0][name]), name


@pytest.mark.slow
def test_stop_at_target_ends_the_run_early_and_every_device_exits_cleanly(small_config):
    config = small_config(
        epochs=3,
        samples_per_device=100,
        aggregate_every=1,
        device_slowdown=2.0,
        eval_samples=50,
        target_accuracy=0.0,
        stop_at_target=True,
    )
    _, metrics, globals_, codes = _run(config)
    assert codes == [0, 0]
    assert metrics["failed_devices"] == []
    assert metrics["stopped_at_target"] is True
    stopped = metrics["stopped_after_round"]
    assert 1 <= stopped < 14  # the schedule has 15 rounds; the first evaluation decides, one round or more later
    assert [r["round"] for r in metrics["rounds"]] == list(range(stopped + 1)) == sorted(globals_)
    assert metrics["target_round"] == 0
    assert metrics["time_to_accuracy_s"] == metrics["rounds"][0]["time_s"]
    assert metrics["rounds"][stopped]["test_accuracy"] is not None  # the round it stopped at is evaluated too
    final = load_file(f"{config.out}/model.safetensors")
    assert all(torch.equal(final[k], v) for k, v in globals_[stopped].items())


class _Shown(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)


def _wait_for(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the evaluator did not finish in time"
        time.sleep(0.01)


def test_the_evaluator_stops_only_after_an_evaluation_has_reached_the_target(small_config):
    config = small_config(aggregate_every=1, epochs=2, target_accuracy=0.0, stop_at_target=True)
    test = load_dataset(config.dataset, "test")
    model = make_model(config, test.input_shape, test.num_classes)
    schedule = schedule_for(config, _plan(config), [40, 40])
    assert schedule.rounds == 4
    evaluator, shown = RoundEvaluator(config, model, test, schedule), _Shown()
    evaluator.begin(time.time(), shown)
    state = model.state_dict()
    assert evaluator.aggregated(0, state, []) is False  # not evaluated yet: the run goes on
    _wait_for(lambda: evaluator.reached is not None)
    assert evaluator.reached is evaluator.records[0]
    assert evaluator.aggregated(1, state, []) is True
    assert evaluator.stopped_after == 1
    evaluator.finish()
    assert [r.test_accuracy is not None for r in evaluator.records] == [True, True]
    assert shown[0] == "round 1/4" and any("accuracy" in line and "(round 1)" in line for line in shown)
    out = evaluator.metrics([], 0.5)
    assert (out["target_round"], out["stopped_at_target"], out["stopped_after_round"]) == (0, True, 1)


def test_the_last_round_never_stops_and_a_failed_evaluation_is_reported(small_config):
    config = small_config(aggregate_every=1, target_accuracy=0.0, stop_at_target=True)
    test = load_dataset(config.dataset, "test")
    model = make_model(config, test.input_shape, test.num_classes)
    evaluator = RoundEvaluator(config, model, test, schedule_for(config, _plan(config), [40, 40]))
    evaluator.begin(time.time(), _Shown())
    assert evaluator.aggregated(0, model.state_dict(), []) is False
    _wait_for(lambda: evaluator.reached is not None)
    assert evaluator.aggregated(1, {"not": torch.zeros(1)}, []) is False  # round 1 of 2 is the last
    evaluator.finish()
    with pytest.raises(RuntimeError, match="evaluating the rounds' global models failed"):
        evaluator.metrics([], 0.5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_evaluator_thread_alone_runs_at_a_lower_priority():
    seen: list[int] = []

    def lowered() -> None:
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        _lower_priority()
        seen.extend([before, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())])

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join()
    assert seen[1] == min(19, seen[0] + 10)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


def _plan(config: Any) -> RunPlan:
    """The plan a server resolves for the small synthetic runs (fixed splits: nothing to profile)."""
    return resolve_plan(config, make_model(config, (1, 28, 28), 10), (1, 28, 28))
