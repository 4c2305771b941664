"""lab: a research workbench for accelerator memory hierarchies.

The package is layered (each layer imports only the ones before it):
``lab.trace`` (schema, Workload encoding, statistics, file formats) ->
``lab.workloads`` (synthetic generator, captures of real models) and
``lab.sim`` (policy engine, policies, cost model, simulate) -> ``lab.bounds``
(the optimum, exact miss-ratio curves, capacities) -> ``lab.planning``
(prefetching plans timed by a runtime simulator) -> ``lab.learn``
(eviction scorers) -> ``lab.analysis`` (sweeps, validation, compile
prediction, attribution) -> ``lab.study`` (parameter grids on Dask, into a
Parquet dataset) -> ``lab.ui`` (plots, widgets, app, reports).
The public API is flat, here. The core imports numpy, pandas and numba;
scipy loads on first use, matplotlib with ``lab.ui.plots``, and torch,
transformers, ipywidgets, dask or distributed never with the core.
"""

from lab.version import __version__ as __version__  # noqa: PLC0414 (re-exported)

from lab.analysis.attribution import dram_traffic_by, dram_traffic_by_module_layer_phase, time_breakdown
from lab.analysis.compile_prediction import CompilePrediction, predict_compile
from lab.analysis.contenders import best_online_policy
from lab.analysis.scorer_evaluation import evaluate_scorers, gap_answer, leave_one_model_out, llm_status, traffic_table
from lab.analysis.sweep import (compare_policies, compare_time, metrics_table, optimum_rows, planner_rows, run_policies,
                                sweep_capacity)
from lab.analysis.validation import ValidationReport, validate
from lab.bounds.capacities import default_capacities_mb, working_set_mb
from lab.bounds.curves import miss_ratio_curve
from lab.bounds.optimal import OptimalResult, optimal
from lab.learn.learned import LearnedScorer, default_scorer
from lab.planning import PlannerOptions, PlanResult, check_plan, exhaustive_plan, plan, plan_optimum, planner_gap
from lab.learn.scoring import Schedule, predict_schedule, register_scorer, score, scorer_names
from lab.registry import Registry
from lab.sim import (HARDWARE_PRESETS, CostModel, Policy, SimulationResult, get_policy, param, policy_names,
                     policy_table, register)
from lab.sim import simulate
from lab.sim.model import SimulationModel
from lab.sim.timing import step_time
from lab.trace import (REQUIRED_COLUMNS, Workload, encode_trace, read_trace, reuse_distances, summarize,
                       summarize_all, write_trace)
from lab.workloads.generator import DEFAULT_DIMS, MODEL_TYPES, generate_trace

__all__ = [
    "DEFAULT_DIMS",
    "HARDWARE_PRESETS",
    "LearnedScorer",
    "MODEL_TYPES",
    "OptimalResult",
    "PlanResult",
    "PlannerOptions",
    "REQUIRED_COLUMNS",
    "CompilePrediction",
    "CostModel",
    "Policy",
    "Registry",
    "Schedule",
    "SimulationModel",
    "SimulationResult",
    "ValidationReport",
    "Workload",
    "best_online_policy",
    "check_plan",
    "compare_policies",
    "compare_time",
    "default_capacities_mb",
    "default_scorer",
    "evaluate_scorers",
    "exhaustive_plan",
    "gap_answer",
    "leave_one_model_out",
    "llm_status",
    "dram_traffic_by",
    "dram_traffic_by_module_layer_phase",
    "encode_trace",
    "generate_trace",
    "get_policy",
    "metrics_table",
    "optimum_rows",
    "miss_ratio_curve",
    "optimal",
    "param",
    "plan",
    "plan_optimum",
    "planner_gap",
    "planner_rows",
    "policy_names",
    "policy_table",
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
    "step_time",
    "summarize",
    "summarize_all",
    "sweep_capacity",
    "time_breakdown",
    "traffic_table",
    "validate",
    "working_set_mb",
    "write_trace",
    # loaded on first use (below)
    "CacheModel",
    "Explorer",
    "LLMScorer",
    "MODEL_PRESETS",
    "best_policy",
    "capture_model",
    "capacity_for_benefit_mb",
    "capture_trace",
    "fidelity_table",
    "format_numbers",
    "gap_to_optimum",
    "load_study",
    "load_study_spec",
    "local_cluster",
    "measured_steps",
    "measured_totals",
    "plots",
    "policy_answer",
    "policy_scoreboard",
    "provenance",
    "readable_table",
    "run_study",
    "show_answer",
    "study",
    "study_failures",
    "synthetic_counterpart",
    "time_comparison",
]

# Loaded on first use, so that ``import lab`` stays light: torch and transformers (captures), matplotlib
# (plots), ipywidgets (the explorer), nbformat and papermill (reports).
_LAZY = {
    "capture_model": "lab.workloads.models",
    "synthetic_counterpart": "lab.workloads.models",
    "MODEL_PRESETS": "lab.workloads.models",
    "capture_trace": "lab.workloads.capture",
    "Explorer": "lab.ui.widgets",
    # the reports' own helpers (lab.ui.report: nbformat and papermill load with it)
    "provenance": "lab.ui.report",
    "show_answer": "lab.ui.report",
    "readable_table": "lab.ui.report",
    "format_numbers": "lab.ui.report",
    "policy_answer": "lab.ui.report",
    "capacity_for_benefit_mb": "lab.ui.report",
    "time_comparison": "lab.ui.report",
    "CacheModel": "lab.sim.hardware",
    "LLMScorer": "lab.learn.llm",  # torch and transformers load only when it scores
    "fidelity_table": "lab.analysis.fidelity",
    "measured_totals": "lab.analysis.fidelity",
    "measured_steps": "lab.analysis.fidelity",
    # studies (lab.study): dask and distributed load only when a study runs on them
    "run_study": "lab.study",
    "local_cluster": "lab.study",
    "load_study": "lab.study",
    "load_study_spec": "lab.study",
    "study_failures": "lab.study",
    "gap_to_optimum": "lab.study",
    "best_policy": "lab.study",
    "policy_scoreboard": "lab.study",
}
_LAZY_MODULES = {"plots": "lab.ui.plots", "study": "lab.study"}


def __dir__():
    """Every public name, the lazy ones too (tab completion; ``lab/__init__.pyi`` lists them for type checkers)."""
    return sorted({*__all__, "__version__"})


def __getattr__(name):
    """The names in ``_LAZY`` and ``_LAZY_MODULES``, imported on first use."""
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return getattr(module, "PRESETS" if name == "MODEL_PRESETS" else name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
