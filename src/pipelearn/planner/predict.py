"""A run's predicted timeline: the schedule the runtime would execute, timed by the simulator at the profile's
costs."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipelearn.config import RunConfig
from pipelearn.plan import RunPlan, schedule_for
from pipelearn.planner.costs import CostModel, action_costs
from pipelearn.planner.simulate import Simulation, simulate


def run_simulation(config: RunConfig, plan: RunPlan, costs: CostModel, samples: list[int]) -> Simulation:
    """Simulate the schedule the runtime would execute for this configuration, plan and sample counts (the plan's
    host_cores shared by their compute)."""
    schedule = schedule_for(config, plan, samples)
    return simulate(schedule, action_costs(costs, schedule, plan.devices), plan.host_cores)


@dataclass(frozen=True)
class StalenessGain:
    """The plan's predicted mean epoch with each staleness; the planner reports it and never chooses staleness,
    which changes what is computed."""

    epoch_s: tuple[float, float]
    """Predicted mean epoch seconds with staleness 0 and with 1."""

    @property
    def speedup(self) -> float:
        """How many times faster staleness 1 is predicted to run."""
        return self.epoch_s[0] / self.epoch_s[1]


def staleness_gain(config: RunConfig, plan: RunPlan, costs: CostModel, samples: list[int]) -> StalenessGain | None:
    """Both staleness settings simulated for this plan; None in fl, which has no pipeline to keep full."""
    if config.mode == "fl":
        return None
    means = []
    for staleness in (0, 1):
        epochs = run_simulation(replace(config, staleness=staleness), plan, costs, samples).epoch_times_s()
        means.append(sum(epochs) / len(epochs))
    return StalenessGain((means[0], means[1]))
