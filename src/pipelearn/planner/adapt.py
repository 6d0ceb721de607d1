"""Adaptive planning: after each round, fit the planner's costs to what the run measured, and re-plan where the
predicted gain passes a threshold (so that noise does not make the plan flap)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from torch import nn

from pipelearn.config import DeviceOverride, Direction, RunConfig, chooses_plan
from pipelearn.events import Event
from pipelearn.plan import RunPlan, schedule_for
from pipelearn.planner.calibrate import MESSAGE_S_LIMIT, with_message_s
from pipelearn.planner.costs import CostModel, action_costs
from pipelearn.planner.observe import Measured, RoundMeasure, measure_round, median
from pipelearn.planner.predict import run_simulation
from pipelearn.planner.profile import Calibration, Profile
from pipelearn.planner.search import plan_run
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
    at_s: float | None = None
    """Seconds since training started when the run took it on."""

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
            "at_s": self.at_s,
        }


class Adapter(Protocol):
    """What decides, after each aggregation, whether the run goes on with another plan."""

    def after_round(self, round: int, events: Sequence[Event], schedule: Schedule, plan: RunPlan) -> Replan | None:
        """A new plan for the rounds after `round` (aggregated just now), or None to keep `plan`."""
        ...


ROUNDS_MEASURED = 3
"""Rounds whose measurements the costs are fitted to, each the median over them: one noisy round moves nothing."""
GAIN = 0.05
"""The share of a round a new plan must be predicted to save before the run changes plan (hysteresis)."""
CHANGED = 0.2
"""How far a measured speed or rate moves before the planner searches again: a search takes seconds of the server's
process (more on a loaded host), which the next round waits for."""


class RunAdapter:
    """Re-plans a run from its own measurements: after each aggregation, the profile and the fleet are fitted to
    the last rounds (each device's speed, each link's rate, the server's speed and its seconds a message); where the
    plan in force is then predicted slower than the planner's best by more than GAIN, the best runs next."""

    def __init__(
        self,
        config: RunConfig,
        model: nn.Sequential,
        input_shape: tuple[int, int, int],
        profile: Profile,
        samples: Sequence[int],
        gain: float = GAIN,
    ) -> None:
        self.config, self.model, self.input_shape = config, model, input_shape
        self.profile = uncalibrated(profile)
        """The profile measured before the run, which the run's measurements scale."""
        self.message_s = profile.server.calibration.message_s if profile.server.calibration is not None else 0.0
        self.samples = list(samples)
        self.gain = gain
        self.searched: tuple[float, ...] | None = None
        """What was measured when the planner last searched: it searches again only where that changed."""
        self.next_search = 0
        """The first round after which it may search again: one search in ROUNDS_MEASURED rounds at most."""
        self.measures: list[RoundMeasure] = []

    def after_round(self, round: int, events: Sequence[Event], schedule: Schedule, plan: RunPlan) -> Replan | None:
        """A new plan for the rounds after `round` where the measured costs predict it clearly faster."""
        base = CostModel.for_run(self.profile, self.config)
        profiled = action_costs(base, schedule, plan.devices)
        self.measures.append(measure_round(round, events, schedule, plan, profiled, self.config.netns))
        measured = Measured(tuple(self.measures[-ROUNDS_MEASURED:]))
        if measured.seconds is None:
            return None
        seen = measured.summary()
        if round < self.next_search or (
            self.searched is not None
            and all(math.isclose(a, b, rel_tol=CHANGED) for a, b in zip(seen, self.searched, strict=True))
        ):
            return None  # the plan in force was searched for under these costs, or was just now
        self.searched, self.next_search = seen, round + ROUNDS_MEASURED
        fleet = self.fleet(measured, plan)
        profile = self.fitted(measured, fleet, plan)
        costs = CostModel.for_run(profile, fleet)
        old_s = epoch_s(fleet, plan, costs, self.samples)
        best = plan_run(fleet, self.model, self.input_shape, profile, self.samples).plan
        same = _choice(best) == _choice(plan)
        new_s = best.predicted_epoch_s
        if same or new_s is None or new_s > old_s * (1 - self.gain):
            return None
        new = dataclasses.replace(
            best,
            devices=tuple(
                dataclasses.replace(old, split=b.split, microbatches=b.microbatches)
                for old, b in zip(plan.devices, best.devices, strict=True)
            ),
        )
        self.measures.clear()  # a round's time is of its plan: the next decision rests on the new plan's rounds
        return Replan(round, plan, new, old_s, new_s, self.described(measured, fleet, profile))

    def fleet(self, measured: Measured, plan: RunPlan) -> RunConfig:
        """The run's configuration, one epoch long, with each device's slowdown and link rates as measured."""
        factors = [measured.device_cpu(d) for d in range(self.config.devices)]
        common = median(factors) or 1.0
        overrides = {}
        for d in range(self.config.devices):
            o = self.config.device_overrides.get(d, DeviceOverride())
            slowdown = (measured.slowdown(d) or plan.devices[d].slowdown) * (factors[d] or common) / common
            overrides[d] = dataclasses.replace(
                o,
                device_slowdown=max(1.0, slowdown),
                slowdown_schedule=None,
                up_schedule=None,
                down_schedule=None,
                up_mbps=self._rate(measured, d, "up", plan.devices[d].link.up_mbps),
                down_mbps=self._rate(measured, d, "down", plan.devices[d].link.down_mbps),
            )
        return dataclasses.replace(
            self.config,
            epochs=1,
            device_slowdown=1.0,
            slowdown_schedule=None,
            up_schedule=None,
            down_schedule=None,
            device_overrides=overrides,
        ).validate()

    def _rate(self, measured: Measured, device: int, direction: Direction, planned: float) -> float:
        """A link's rate as measured, where its configured rates are finite (an unlimited link's messages take the
        transport's time, which the server's seconds a message hold); else as planned."""
        rate = measured.mbps(direction, device)
        finite = all(math.isfinite(r) for _, r in self.config.rates(device, direction))
        return rate if rate is not None and finite else planned

    def fitted(self, measured: Measured, fleet: RunConfig, plan: RunPlan) -> Profile:
        """The profile scaled to the host's measured speed on each side, and the server's seconds a message that
        makes the plan in force take the rounds' measured time."""
        factors = [measured.device_cpu(d) for d in range(self.config.devices)]
        lines = dataclasses.replace(
            self.profile,
            device=dataclasses.replace(self.profile.device, calibration=_line(median(factors))),
            server=dataclasses.replace(self.profile.server, calibration=_line(measured.server_cpu)),
        )
        assert measured.seconds is not None
        target = measured.seconds * rounds_per_epoch(fleet, plan, self.samples)

        def error(message_s: float) -> float:
            costs = CostModel.for_run(with_message_s(lines, message_s), fleet)
            return abs(math.log(epoch_s(fleet, plan, costs, self.samples) / target))

        low, high, best = 0.0, MESSAGE_S_LIMIT, self.message_s
        for _ in range(2):  # a grid over the range, then over the cells either side of its best
            grid = np.linspace(low, high, 6)
            best = float(min(grid, key=error))
            low, high = max(best - (grid[1] - grid[0]), 0.0), min(best + (grid[1] - grid[0]), MESSAGE_S_LIMIT)
        self.message_s = best
        return with_message_s(lines, best)

    def described(self, measured: Measured, fleet: RunConfig, profile: Profile) -> dict[str, Any]:
        """What the decision rests on, for metrics.json."""
        devices = range(self.config.devices)
        assert profile.device.calibration is not None and profile.server.calibration is not None
        return {
            "rounds": [m.round for m in measured.rounds],
            "round_s": measured.seconds,
            "slowdown": [fleet.slowdown(d) for d in devices],
            "up_mbps": [fleet.link(d).up_mbps for d in devices],
            "down_mbps": [fleet.link(d).down_mbps for d in devices],
            "device_cpu_factor": profile.device.calibration.factor,
            "server_cpu_factor": profile.server.calibration.factor,
            "message_s": profile.server.calibration.message_s,
        }


def uncalibrated(profile: Profile) -> Profile:
    """The profile as measured, without any calibration."""
    return dataclasses.replace(
        profile,
        device=dataclasses.replace(profile.device, calibration=None),
        server=dataclasses.replace(profile.server, calibration=None),
    )


def _line(factor: float | None) -> Calibration:
    return Calibration(factor or 1.0, 0.0, actions=0)


def epoch_s(config: RunConfig, plan: RunPlan, costs: CostModel, samples: list[int]) -> float:
    """The plan's predicted mean epoch under these costs."""
    epochs = run_simulation(config, plan, costs, samples).epoch_times_s()
    return sum(epochs) / len(epochs)


def rounds_per_epoch(config: RunConfig, plan: RunPlan, samples: list[int]) -> int:
    """How many rounds one epoch of the run holds."""
    return schedule_for(dataclasses.replace(config, epochs=1), plan, samples).rounds


def _choice(plan: RunPlan) -> tuple[object, ...]:
    return plan.splits, plan.microbatches, plan.server_order


def adapter_for(
    config: RunConfig,
    model: nn.Sequential,
    input_shape: tuple[int, int, int],
    profile: Profile | None,
    samples: Sequence[int],
) -> RunAdapter | None:
    """The run's adapter: where adapt is on, the plan was made from a profile and something is left to choose."""
    if config.adapt == "off" or profile is None or not chooses_plan(config) or config.mode == "sl":
        return None
    return RunAdapter(config, model, input_shape, profile, samples)
