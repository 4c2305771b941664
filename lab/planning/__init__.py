"""Prefetching plans (issue 26): ``lab.plan`` (``planner``), the runtime simulator of a schedule (``runtime``,
XLA's ``RuntimeSimulator`` rules) and ``check_plan`` (``checks``). Between ``lab.bounds`` and ``lab.learn``:
it seeds from the optimum and the policies' runs."""

from lab.planning.checks import check_plan
from lab.planning.planner import PlannerOptions, PlanResult, plan

__all__ = ["PlanResult", "PlannerOptions", "check_plan", "plan"]
