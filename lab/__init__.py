"""lab: a research workbench for accelerator memory hierarchies.

The core (trace format, IO, cost model, policies, simulator, generator,
scoring, validation) imports numpy, pandas and numba; scipy loads on first
use, matplotlib with ``lab.plots``, and torch or transformers never with the core.
"""

__version__ = "0.1.0"

from lab.compile_prediction import CompilePrediction, predict_compile
from lab.cost import HARDWARE_PRESETS, CostModel
from lab.generator import DEFAULT_DIMS, MODEL_TYPES, generate_trace
from lab.io import read_trace, write_trace
from lab.policies import Policy, get_policy, policy_names, register
from lab.scoring import Schedule, predict_schedule, register_scorer, score, scorer_names
from lab.simulator import SimulationResult, simulate
from lab.sweep import compare_policies, run_policies, sweep_capacity
from lab.trace import REQUIRED_COLUMNS, encode_trace, reuse_distances, summarize, summarize_all
from lab.validation import ValidationReport, validate

__all__ = [
    "DEFAULT_DIMS",
    "HARDWARE_PRESETS",
    "MODEL_TYPES",
    "REQUIRED_COLUMNS",
    "CompilePrediction",
    "CostModel",
    "Policy",
    "Schedule",
    "SimulationResult",
    "ValidationReport",
    "compare_policies",
    "encode_trace",
    "generate_trace",
    "get_policy",
    "policy_names",
    "predict_compile",
    "predict_schedule",
    "read_trace",
    "register",
    "register_scorer",
    "reuse_distances",
    "run_policies",
    "score",
    "scorer_names",
    "simulate",
    "summarize",
    "summarize_all",
    "sweep_capacity",
    "validate",
    "write_trace",
]

_CAPTURE = {"capture_model": "lab.models", "capture_trace": "lab.capture"}


def __getattr__(name):
    """``lab.capture_model`` and ``lab.capture_trace`` load torch on first use, not with ``import lab``."""
    if name in _CAPTURE:
        import importlib

        return getattr(importlib.import_module(_CAPTURE[name]), name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
