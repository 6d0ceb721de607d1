"""Adaptive planning: after each round, fit the planner's costs to what the run measured, and re-plan where the
predicted gain passes a threshold (so that noise does not make the plan flap)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipelearn.events import Event
from pipelearn.plan import RunPlan
from pipelearn.schedule import Schedule


@dataclass
class Replan:
    """A new plan for the rounds after `round`, and why: what was measured, and what each plan is predicted to take."""

    round: int
    """The round after whose aggregation the new plan takes over."""
    old: RunPlan
    new: RunPlan
    predicted_old_s: float
    """Predicted mean epoch of the old plan, under the measured costs."""
    predicted_new_s: float
    measured: dict[str, Any] = field(default_factory=dict)
    """What the run measured that the prediction rests on (per device speed, link rates, the server's costs)."""
    next_round_s: float | None = None
    """What the round after it then measured (filled in once it is over)."""

    @property
    def gain(self) -> float:
        """The predicted share of an epoch the new plan saves."""
        return 1 - self.predicted_new_s / self.predicted_old_s

    def to_dict(self) -> dict[str, Any]:
        """Plain data for metrics.json."""
        return {
            "round": self.round,
            "old": self.old.to_dict(),
            "new": self.new.to_dict(),
            "predicted_old_s": self.predicted_old_s,
            "predicted_new_s": self.predicted_new_s,
            "predicted_gain": self.gain,
            "measured": self.measured,
            "next_round_s": self.next_round_s,
        }


class Adapter(Protocol):
    """What decides, after each aggregation, whether the run goes on with another plan."""

    def after_round(self, round: int, events: Sequence[Event], schedule: Schedule, plan: RunPlan) -> Replan | None:
        """A new plan for the rounds after `round` (aggregated just now), or None to keep `plan`."""
        ...
