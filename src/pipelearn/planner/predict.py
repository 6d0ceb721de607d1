"""A run's predicted timeline: the schedule the runtime would execute, timed by the simulator at the profile's
costs."""

from __future__ import annotations

from pipelearn.config import RunConfig
from pipelearn.plan import RunPlan, schedule_for
from pipelearn.planner.costs import CostModel, action_costs
from pipelearn.planner.simulate import Simulation, simulate


def run_simulation(config: RunConfig, plan: RunPlan, costs: CostModel, samples: list[int]) -> Simulation:
    """Simulate the schedule the runtime would execute for this configuration, plan and sample counts (the plan's
    host_cores shared by their compute)."""
    schedule = schedule_for(config, plan, samples)
    return simulate(schedule, action_costs(costs, schedule, plan.devices), plan.host_cores)
