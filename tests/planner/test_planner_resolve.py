"""From configuration to plan: a mode at its best plan, staleness where it means something."""

from __future__ import annotations

from pipelearn.config import RunConfig
from pipelearn.planner.resolve import at_best_plan


def test_a_mode_at_its_best_plan_keeps_staleness_where_it_means_something() -> None:
    config = RunConfig(staleness=1, split=3, microbatches=7).validate()
    fl, sfl, pipelearn = (at_best_plan(config, mode) for mode in ("fl", "sfl", "pipelearn"))
    assert (fl.staleness, sfl.staleness, pipelearn.staleness) == (0, 1, 1)
    assert (sfl.split, sfl.microbatches, pipelearn.split, pipelearn.microbatches) == ("auto", 1, "auto", "auto")
    assert at_best_plan(config, "pipelearn", microbatches=4).microbatches == 4
