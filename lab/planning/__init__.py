"""Prefetching plans (issue 26): ``lab.plan`` (``planner``), the runtime simulator of a schedule (``runtime``,
XLA's ``RuntimeSimulator`` rules), ``check_plan`` (``checks``) and the planner's own optimum on small traces
(``exact``: ``exhaustive_plan``, the integer program ``plan_optimum``, ``planner_gap``). Between ``lab.bounds`` and
``lab.learn``: it seeds from the optimum and the policies' runs."""

from lab.planning.checks import check_plan
from lab.planning.exact import exhaustive_plan, plan_optimum, planner_gap
from lab.planning.planner import PlannerOptions, PlanResult, plan

__all__ = ["PlanResult", "PlannerOptions", "check_plan", "exhaustive_plan", "plan", "plan_optimum", "planner_gap"]
