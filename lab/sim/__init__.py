"""Simulation: the policy engine, its shared structures, the policies, the cost model and ``simulate``."""

from lab.sim import policies  # noqa: F401  (registers every policy)
from lab.sim.cost import HARDWARE_PRESETS, CostModel
from lab.sim.policy import POLICIES, Policy, get_policy, param, policy_names, policy_table, register
from lab.sim.simulate import SimulationResult, simulate

__all__ = ["HARDWARE_PRESETS", "POLICIES", "CostModel", "Policy", "SimulationResult", "get_policy", "param",
           "policy_names", "policy_table", "register", "simulate"]
