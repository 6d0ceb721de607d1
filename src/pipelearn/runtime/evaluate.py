"""Test accuracy of a whole model, and the evaluation of each round's global model beside training."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from pipelearn.config import RunConfig
from pipelearn.data import Dataset
from pipelearn.events import Event, now
from pipelearn.metrics.rounds import RoundRecord, round_losses, time_to_accuracy
from pipelearn.privacy import PrivacyLedger, dp_enabled
from pipelearn.schedule import Schedule
from pipelearn.training import evaluate

State = dict[str, torch.Tensor]
log = logging.getLogger("pipelearn.server")


class RoundEvaluator:
    """Keeps a record of every aggregation round and evaluates its global model on a thread of its own.

    The server hands over each new global model as it is made and goes on at once: the evaluation runs beside
    training, on its own copy of the model, at a lower CPU priority, and is timed apart.
    """

    def __init__(
        self, config: RunConfig, model: nn.Module, test: Dataset, schedule: Schedule, samples: Sequence[int] = ()
    ) -> None:
        self.config, self.test = config, test
        self.privacy = PrivacyLedger(config, schedule, list(samples)) if dp_enabled(config) and samples else None
        """What each device's DP-SGD has spent, round by round (None without DP)."""
        self.total = schedule.rounds
        self.round_of = {str(a.key): a.key.round for a in schedule.actions()}
        """The round of every action, by its name on the timeline."""
        self.start = 0.0
        """When training started (the clock reading); set by `begin`."""
        self.show: Callable[[str], None] = lambda _: None
        self.samples = config.eval_samples if config.eval_samples is not None else config.test_samples
        self.model = copy.deepcopy(model)
        self.records: list[RoundRecord] = []
        self.reached: RoundRecord | None = None
        """The earliest evaluated round at or above the target accuracy, once its evaluation is done."""
        self.stopped_after: int | None = None
        self.error: BaseException | None = None
        self._queue: queue.Queue[tuple[RoundRecord, State] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._seen = 0
        self._shown: RoundRecord | None = None

    def follow(self, schedule: Schedule) -> None:
        """The run was re-planned: name its actions' rounds from `schedule` too."""
        self.round_of = {**self.round_of, **{str(a.key): a.key.round for a in schedule.actions()}}

    def begin(self, start: float, show: Callable[[str], None] = lambda _: None) -> None:
        """Start evaluating; `start` is when training started, `show` takes the progress line."""
        self.start, self.show = start, show
        self._thread = threading.Thread(target=self._work, daemon=True, name="round-evaluator")
        self._thread.start()

    def resume(self, records: Sequence[Mapping[str, Any]], seen: int, state: State) -> None:
        """Go on from a checkpoint: the records of its rounds, the number of events before this part, and its global
        model, evaluated again where the checkpoint was written before that evaluation ended."""
        self.records = [RoundRecord(**r) for r in records]
        self._seen = seen
        target = self.config.target_accuracy
        for r in self.records:
            if target is not None and r.test_accuracy is not None and r.test_accuracy >= target:
                self.reached = r
                break
        last = self.records[-1] if self.records else None
        if last is not None and last.test_accuracy is None and self._evaluates(last.round):
            self._queue.put((last, {k: v.detach().clone() for k, v in state.items()}))

    def snapshot(self) -> list[dict[str, Any]]:
        """The records so far, as plain dicts (for a checkpoint)."""
        with self._lock:
            return [asdict(r) for r in self.records]

    def _evaluates(self, round: int) -> bool:
        every = self.config.eval_every
        return every > 0 and ((round + 1) % every == 0 or round == self.total - 1)

    def aggregated(self, round: int, state: State, events: Sequence[Event]) -> bool:
        """Note round `round`'s new global model and queue its evaluation; return whether the run should end here."""
        time_s = now() - self.start
        # every loss the server records in this round comes after the previous aggregation
        seen, self._seen = self._seen, len(events)
        record = RoundRecord(round, time_s, round_losses(events[seen : self._seen], self.round_of).get(round))
        if self.privacy is not None:
            record.epsilon = max(self.privacy.after(round), default=0.0)
        with self._lock:
            self.records.append(record)
            stop = self.config.stop_at_target and self.reached is not None and round < self.total - 1
        if stop:
            self.stopped_after = round
        if self._evaluates(round) or (stop and self.config.eval_every > 0):
            self._queue.put((record, {k: v.detach().clone() for k, v in state.items()}))
        else:
            self._log(record)  # an evaluated round's line waits for its accuracy
        self._show(record)
        return stop

    def finish(self) -> None:
        """Wait for the evaluations still queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def metrics(self, events: Sequence[Event], final_accuracy: float) -> dict[str, Any]:
        """The rounds and what they say, for metrics.json; losses are taken from every event (devices' too)."""
        if self.error is not None:
            raise RuntimeError(f"evaluating the rounds' global models failed: {self.error!r}") from self.error
        losses = round_losses(events, self.round_of) if self.records else {}
        for record in self.records:
            record.train_loss = losses.get(record.round, record.train_loss)
        if self.config.eval_every == 0 and self.records and self.config.mode != "sl":
            self.records[-1].test_accuracy = final_accuracy  # the last round's model is the final model
        target = self.config.target_accuracy
        hit = time_to_accuracy(self.records, target) if target is not None else None
        return {
            "rounds": [asdict(r) for r in self.records],
            "eval_s": sum(r.eval_s for r in self.records),
            "eval_every": self.config.eval_every,
            "eval_samples": self.samples if self.samples is not None else len(self.test),
            "target_accuracy": target,
            "time_to_accuracy_s": hit.time_s if hit else None,
            "target_round": hit.round if hit else None,
            "stopped_at_target": self.stopped_after is not None,
            "stopped_after_round": self.stopped_after,
            "privacy": self.privacy.metrics() if self.privacy is not None else None,
        }

    def _work(self) -> None:
        _lower_priority()
        while (item := self._queue.get()) is not None:
            record, state = item
            if self.error is not None:
                self._log(record)
                continue
            try:
                started = now()
                self.model.load_state_dict(state)
                accuracy = evaluate(self.model, self.test, self.samples, self.config.seed)
            except Exception as exc:  # reported with the metrics; training goes on without it
                self.error = exc
                log.error("evaluating round %d's global model failed: %r", record.round + 1, exc)
                continue
            target = self.config.target_accuracy
            with self._lock:
                record.test_accuracy, record.eval_s = accuracy, now() - started
                if target is not None and accuracy >= target and self.reached is None:
                    self.reached = record
            self._log(record)
            self._show(record)

    def _log(self, record: RoundRecord) -> None:
        """One line a round: its loss, its accuracy where evaluated, and when it was aggregated."""
        parts = [f"round {record.round + 1}/{self.total}"]
        if record.train_loss is not None:
            parts.append(f"train loss {record.train_loss:.4f}")
        if record.test_accuracy is not None:
            parts.append(f"test accuracy {record.test_accuracy:.2%}")
        log.info("%s; at %.1f s", ", ".join(parts), record.time_s)

    def _show(self, record: RoundRecord) -> None:
        with self._lock:
            if record.test_accuracy is not None:
                self._shown = record
            latest, shown = self.records[-1], self._shown
        parts = [f"round {latest.round + 1}/{self.total}"]
        if latest.train_loss is not None:
            parts.append(f"loss {latest.train_loss:.3f}")
        if latest.epsilon is not None:
            parts.append(f"epsilon {latest.epsilon:.2f}")
        if shown is not None:
            parts.append(f"accuracy {shown.test_accuracy:.2%} (round {shown.round + 1})")
        self.show(", ".join(parts))


def _lower_priority(by: int = 10) -> None:
    """Let training have the CPU first: on Linux a thread's nice value is its own, so this slows only this thread."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            thread = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + by))
