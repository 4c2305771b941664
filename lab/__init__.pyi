# Type stub of lab's public names: the eager ones and those loaded on first use (lab._LAZY), each with its
# import, for type checkers and editors. tests/test_package.py keeps it equal to lab.__all__ and dir(lab).

from lab.version import __version__ as __version__

from lab import study as study
from lab.analysis.attribution import (
    dram_traffic_by as dram_traffic_by,
    dram_traffic_by_module_layer_phase as dram_traffic_by_module_layer_phase, time_breakdown as time_breakdown)
from lab.analysis.compile_prediction import (
    CompilePrediction as CompilePrediction, predict_compile as predict_compile)
from lab.analysis.contenders import best_online_policy as best_online_policy
from lab.analysis.fidelity import (
    fidelity_table as fidelity_table, measured_steps as measured_steps, measured_totals as measured_totals)
from lab.analysis.scorer_evaluation import (
    evaluate_scorers as evaluate_scorers, gap_answer as gap_answer, leave_one_model_out as leave_one_model_out,
    llm_status as llm_status, traffic_table as traffic_table)
from lab.analysis.sweep import (
    compare_policies as compare_policies, compare_time as compare_time, metrics_table as metrics_table,
    optimum_rows as optimum_rows, planner_rows as planner_rows, run_policies as run_policies,
    sweep_capacity as sweep_capacity)
from lab.analysis.validation import ValidationReport as ValidationReport, validate as validate
from lab.bounds.capacities import default_capacities_mb as default_capacities_mb, working_set_mb as working_set_mb
from lab.bounds.curves import miss_ratio_curve as miss_ratio_curve
from lab.bounds.optimal import OptimalResult as OptimalResult, optimal as optimal
from lab.learn.learned import LearnedScorer as LearnedScorer, default_scorer as default_scorer
from lab.learn.llm import LLMScorer as LLMScorer
from lab.planning import (
    PlannerOptions as PlannerOptions, PlanResult as PlanResult, check_plan as check_plan,
    exhaustive_plan as exhaustive_plan, plan as plan, plan_optimum as plan_optimum, planner_gap as planner_gap)
from lab.learn.scoring import (
    Schedule as Schedule, predict_schedule as predict_schedule, register_scorer as register_scorer,
    score as score, scorer_names as scorer_names)
from lab.registry import Registry as Registry
from lab.sim import (
    CostModel as CostModel, HARDWARE_PRESETS as HARDWARE_PRESETS, Policy as Policy,
    SimulationResult as SimulationResult, get_policy as get_policy, param as param, policy_names as policy_names,
    policy_table as policy_table, register as register, simulate as simulate)
from lab.sim.hardware import CacheModel as CacheModel
from lab.sim.model import SimulationModel as SimulationModel
from lab.sim.timing import step_time as step_time
from lab.study import (
    best_policy as best_policy, gap_to_optimum as gap_to_optimum, load_study as load_study,
    load_study_spec as load_study_spec, local_cluster as local_cluster, policy_scoreboard as policy_scoreboard,
    run_study as run_study, study_failures as study_failures)
from lab.trace import (
    REQUIRED_COLUMNS as REQUIRED_COLUMNS, Workload as Workload, encode_trace as encode_trace,
    read_trace as read_trace, reuse_distances as reuse_distances, summarize as summarize,
    summarize_all as summarize_all, write_trace as write_trace)
from lab.ui import plots as plots
from lab.ui.report import (
    capacity_for_benefit_mb as capacity_for_benefit_mb, format_numbers as format_numbers,
    policy_answer as policy_answer, provenance as provenance, readable_table as readable_table,
    show_answer as show_answer, time_comparison as time_comparison)
from lab.ui.widgets import Explorer as Explorer
from lab.workloads.capture import capture_trace as capture_trace
from lab.workloads.generator import (
    DEFAULT_DIMS as DEFAULT_DIMS, MODEL_TYPES as MODEL_TYPES, generate_trace as generate_trace)
from lab.workloads.models import Preset as _Preset
from lab.workloads.models import capture_model as capture_model, synthetic_counterpart as synthetic_counterpart

MODEL_PRESETS: Registry[_Preset]  # lab.workloads.models.PRESETS
