"""lab: a research workbench for accelerator memory hierarchies.

The core (trace format, IO, cost model, policies, simulator) imports numpy,
pandas and numba only; torch and transformers stay at the edges.
"""

from lab.cost import HARDWARE_PRESETS, CostModel
from lab.io import read_trace, write_trace
from lab.policies import Policy, get_policy, policy_names, register
from lab.simulator import SimulationResult, simulate
from lab.trace import REQUIRED_COLUMNS, encode_trace

__all__ = [
    "HARDWARE_PRESETS",
    "CostModel",
    "Policy",
    "REQUIRED_COLUMNS",
    "SimulationResult",
    "encode_trace",
    "get_policy",
    "policy_names",
    "read_trace",
    "register",
    "simulate",
    "write_trace",
]
