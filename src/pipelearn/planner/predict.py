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


def critical_path_order(config: RunConfig, plan: RunPlan, costs: CostModel, samples: list[int]) -> tuple[int, ...]:
    """Each device's rank at the shared server (0 first): served as their work arrives, the device predicted to
    finish the first round last ranks first, as the round's critical path runs through it."""
    sim = run_simulation(replace(config, epochs=1), replace(plan, server_order=None), costs, samples)
    finish = [0.0] * config.devices
    for action, end in zip(sim.actions, sim.ends, strict=True):
        if action.key.round == 0 and 0 <= action.key.device < config.devices:
            finish[action.key.device] = max(finish[action.key.device], end)
    ranks = [0] * config.devices
    for rank, device in enumerate(sorted(range(config.devices), key=lambda d: (-finish[d], d))):
        ranks[device] = rank
    return tuple(ranks)


def with_server_order(config: RunConfig, plan: RunPlan, costs: CostModel, samples: list[int]) -> RunPlan:
    """`plan` with the server order its configuration asks for, and its prediction under that order."""
    if config.server_order == "arrival" or config.mode not in ("sfl", "pipelearn"):
        return replace(plan, server_order=None)
    ordered = replace(plan, server_order=critical_path_order(config, plan, costs, samples))
    epochs = run_simulation(config, ordered, costs, samples).epoch_times_s()
    return replace(ordered, predicted_epoch_s=sum(epochs) / len(epochs))
