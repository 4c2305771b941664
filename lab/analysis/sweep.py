"""Several simulations at once: every policy at one capacity, and metrics against capacity, each set against
the optimum.

The trace is validated and encoded once (a ``Workload``) for all the runs; a
capacity sweep runs its simulations on threads (the engine releases the GIL).
The optimum comes from ``lab.optimal`` (the whole-tensor optimum in the
scratchpad model, on DRAM traffic, MB read + written), not Belady: with tensors
of different sizes Belady (MIN) is no bound. A table shows it as one row
``OPT`` when it is exact, else as two rows, ``OPT (lower bound)`` (no schedule
moves less) and ``OPT (achievable)`` (the best schedule known: the optimum's
own, or a policy of the same table when one moves less), so that no policy is
ever listed below the optimum's achievable end.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from lab.bounds.capacities import capacity_list, default_capacities_mb
from lab.bounds.curves import one_pass_algorithm, one_pass_metrics
from lab.bounds.optimal import DEFAULT_TIME_LIMIT_S, OPTIMUM, OPTIMUM_ACHIEVABLE, OPTIMUM_LOWER, optimal
from lab.checks import check_int, check_positive_mb
from lab.learn.scoring import score
from lab.analysis.contenders import (AUTO_OPTIMUM_ACCESSES, TIE_PCT, best_online_policy,  # noqa: F401 (re-exported)
                                     PLANNER, PLANNER_LOWER, gap_closed_pct, is_offline, is_optimum, is_planner,
                                     wants_optimum)
from lab.planning.planner import PlannerOptions, PlanResult, demand_metrics, model_line, plan
from lab.sim.cost import resolve_cost
from lab.sim.model import PLAN_BUFFER, BufferModelError, resolve_buffer
from lab.sim.policy import Policy, get_policy, policy_names
from lab.sim.precompile import precompile
from lab.sim.simulate import SimulationResult, capacity_bytes_of, simulate
from lab.sim.timing import EXECUTION_MODES, missing_numbers
from lab.trace.workload import Workload, encode_trace


# Policy sets by name: the classics a first comparison shows (policy_names(featured=True)), or the whole zoo.
POLICY_SETS = ("featured", "all")


def policy_list(policies) -> list[Policy]:
    """Policy instances for ``policies``: ``"featured"`` (the classics: LRU, FIFO, SIEVE, Belady, ML),
    ``"all"`` or None (every registered policy), one name or Policy, or an iterable of them. ValueError for an
    empty list or an unknown name."""
    if policies is None or (isinstance(policies, str) and policies.lower() in POLICY_SETS):
        featured = isinstance(policies, str) and policies.lower() == "featured"
        return [get_policy(name) for name in policy_names(featured=featured)]
    if isinstance(policies, (str, Policy)):
        return [get_policy(policies)]
    try:
        chosen = [get_policy(p) for p in policies]
    except TypeError as error:
        if "iterable" not in str(error):
            raise
        raise TypeError(f"policies must be a policy name, a list of them, one of {list(POLICY_SETS)} or None, "
                        f"got {policies!r}") from None
    if not chosen:
        raise ValueError(f"policies must name at least one policy; known: {policy_names()}")
    return chosen


def names_a_set(policies) -> bool:
    """Whether ``policies`` asks for a set of policies (None, ``"featured"``, ``"all"``) rather than naming
    them."""
    return policies is None or (isinstance(policies, str) and policies.lower() in POLICY_SETS)


def policies_for(policies, buffer, cost) -> list[Policy]:
    """``policy_list(policies)`` for a run under ``buffer`` (None: the cost preset's model): under the hardware
    cache, whose accesses are lines, the policies that read a tensor's scores are left out when every policy
    was asked for as a set (``names_a_set``), and refused (BufferModelError naming them) when named."""
    chosen = policy_list(policies)
    if resolve_buffer(buffer, resolve_cost(cost)) != "cache":
        return chosen
    scored = [p.name for p in chosen if p.needs_scores]
    if scored and not names_a_set(policies):
        raise BufferModelError(f"{', '.join(scored)} cannot run in the hardware cache (buffer='cache'): it reads "
                               "each tensor's eviction_score, and the cache's accesses are lines; leave it out or "
                               "use buffer='scratchpad'")
    return [p for p in chosen if not p.needs_scores]


def in_scratchpad(buffer, cost) -> bool:
    """Whether a run under ``buffer`` (None: the cost preset's model) is in the scratchpad model, the one the
    optimum and the one-pass curves are computed in."""
    return resolve_buffer(buffer, resolve_cost(cost)) == PLAN_BUFFER


def with_scores(trace, policies, scorer: str = "heuristic"):
    """``trace`` itself when it has ``eviction_score`` or no policy needs one (ML); else scored by ``scorer``."""
    needs = any(p.needs_scores for p in policy_list(policies))
    if isinstance(trace, Workload):
        if needs and (trace.trace is None or "eviction_score" not in trace.trace.columns):
            return encode_trace(score(trace.trace, scorer))
        return trace
    return score(trace, scorer) if needs and "eviction_score" not in trace.columns else trace


def run_policies(trace, policies=None, capacity_mb: float = 64.0, cost=None, scorer: str = "heuristic",
                 per_access: bool = True, buffer: Optional[str] = None) -> dict[str, SimulationResult]:
    """Simulate each policy (default: every registered one) at ``capacity_mb``; returns {policy name: result}.

    Takes a trace DataFrame or Workload. A trace without ``eviction_score`` is
    scored with ``scorer`` for the policies that read scores (ML). ``buffer``:
    the buffer model (see ``lab.simulate``; None: the cost preset's). The
    trace is encoded once.
    """
    chosen = policies_for(policies, buffer, cost)
    workload = encode_trace(with_scores(trace, chosen, scorer))
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    return evaluate_contenders(workload, chosen, [capacity_mb], cost, buffer=buffer, per_access=per_access).at(capacity_mb)


# A sweep solves the optimum at every capacity: each within this many seconds (then bracketed, usually within
# 0.1 %), so that a sweep of two dozen capacities of a training step stays within minutes.
SWEEP_TIME_LIMIT_S = 10.0


def optimum_rows(trace, capacity_mb: float, cost=None, time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> list[dict]:
    """The optimum's rows of a table at ``capacity_mb`` MB: ``lab.optimal(...).table_rows()`` (``OPT``, or
    ``OPT (lower bound)`` and ``OPT (achievable)``), the integer program given ``time_limit_s`` seconds."""
    return optimal(trace, capacity_mb, cost, time_limit_s=time_limit_s, progress=False).table_rows()


def planner_rows(trace, capacity_mb: float, cost="H200", options: Optional[PlannerOptions] = None) -> list[dict]:
    """The planner's rows of a table at ``capacity_mb`` MB, as ``optimum_rows`` gives the optimum's: ``lab.plan``'s
    schedule of ``trace`` under ``cost`` (a preset with the physical numbers) and ``options`` (``PlannerOptions``:
    execution mode, copy engine, ...), see ``plan_rows``."""
    return plan_rows(plan(trace, capacity_mb, cost, options))


def plan_rows(result: PlanResult) -> list[dict]:
    """The rows of a plan (``lab.plan``) in a table of policies: ``PLAN``, the schedule's metrics
    (``SimulationResult.metrics``' keys: DRAM traffic in MB, ``step_time_ms`` in ms, ...), and ``PLAN (lower
    bound)``: no whole-tensor schedule of the planner's model is faster (``step_time_ms`` = ``lower_bound_ms``) or
    moves less (``dram_traffic_mb`` = ``traffic_lower_mb``), its other metrics NaN. Both rows name the model
    (buffer, preset, capacity, planner options, execution mode) in ``algorithm``."""
    plan_row = {"policy": PLANNER, **result.metrics,
                "algorithm": f"prefetching planner (lab.plan, seeded with the {result.seed} schedule): {result.model}"}
    bound = dict.fromkeys(result.metrics, np.nan)
    bound["dram_traffic_mb"] = result.traffic_lower_mb
    bound["step_time_ms"] = result.lower_bound_ms
    bound_row = {"policy": PLANNER_LOWER, **bound,
                 "algorithm": "lower bound of the planner's model (ops' compute, on-chip and launch floors; the "
                              f"flow's least traffic at DRAM bandwidth): {result.model}"}
    return [plan_row, bound_row]


# compare_time's columns: traffic of the graph-mode schedule, then the times in each execution mode
TIME_TABLE_COLUMNS = ("role", "dram_traffic_mb", "dram_reads_mb", "dram_writes_mb", "graph_step_time_ms",
                      "eager_step_time_ms", "graph_gpu_time_ms", "eager_host_time_ms", "graph_memory_bound_ops",
                      "algorithm")


def compare_time(trace, capacity_mb: float, cost="H200", policies="featured",
                 options: Optional[PlannerOptions] = None, scorer: str = "heuristic") -> pd.DataFrame:
    """Demand-fetch policies beside the prefetching planner and its bound, in step time and DRAM traffic, every
    row in the planner's model (``lab.plan``): a scratchpad of ``capacity_mb`` MB holding whole tensors, ops in
    trace order on one stream timed by ``lab.sim.timing`` under ``cost`` (a preset with the physical numbers:
    H200, H100-SXM5, A100-SXM4-40GB), one copy engine (``options``, a ``PlannerOptions``; its ``execution`` is
    replaced by each mode in turn).

    Rows: LRU, the best online policy of ``policies`` (``policy_list``; default the featured classics: least DRAM
    traffic in this model at ``capacity_mb``, ``best_online_policy`` over each policy's demand schedule; ties: the
    first), Belady, each a demand schedule (no prefetch: its scratchpad run read as kept intervals, fitted to
    the buffer op by op, ``lab.planning.planner.demand_metrics``); then ``PLAN`` and ``PLAN (lower bound)``
    (``plan_rows``; the planner is seeded with these policies too, so it is never slower than any of them).
    Columns (``TIME_TABLE_COLUMNS``): ``role``; DRAM traffic, reads and writes (MB) of the graph-mode schedule;
    ``graph_step_time_ms`` (no host cost: a CUDA graph or a compiler) and ``eager_step_time_ms`` (the host issues
    each op), ms; the GPU's busy time in graph mode and the host's time in eager mode (ms); the memory-bound ops in
    graph mode; ``algorithm``: what produced the row. ``attrs["model"]``: the model in one sentence. Traces that
    do not record their ops (no ``op_index``) get their ops from the data flow, as ``lab.plan`` does.

    Raises a one-line ValueError for a capacity that is not a number of MB > 0, a preset without the physical
    numbers, an unknown policy, or bad ``options`` (TypeError for another type)."""
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    cost = resolve_cost(cost)
    why = missing_numbers(cost)
    if why:
        raise ValueError(f"no time comparison: {why}")
    if options is None:
        options = PlannerOptions()
    if not isinstance(options, PlannerOptions):
        raise TypeError(f"options must be a lab.PlannerOptions, got {type(options).__name__}")
    if not isinstance(trace, pd.DataFrame) or len(trace) == 0:
        raise ValueError("trace must be a non-empty trace DataFrame (tensor_id, size_mb, access, op_index, ...)")
    chosen = policy_list(policies)
    names = [p.name for p in chosen]
    chosen += [get_policy(p) for p in ("LRU", "Belady") if p not in names]
    scored = with_scores(trace, chosen, scorer)
    # the best online policy in this model (its traffic does not depend on the execution mode), so that the rows
    # shown are the ones the model ranks, not those of lab.simulate's access-by-access scratchpad
    in_model = demand_metrics(scored, capacity_mb, [p.name for p in chosen], cost, replace(options, execution="graph"))
    best = best_online_policy(pd.Series({name: in_model[name]["dram_traffic_mb"] for name in names}))
    shown = list(dict.fromkeys(["LRU", *best[:1], "Belady"]))
    seeds = tuple(dict.fromkeys([*options.seed_policies, *(p for p in shown if not is_offline(p))]))
    rows = {}
    for execution in EXECUTION_MODES:
        mode = replace(options, execution=execution, seed_policies=seeds)
        demand = in_model if execution == "graph" else demand_metrics(scored, capacity_mb, shown, cost, mode)
        rows[execution] = [{"policy": name, **demand[name], "algorithm": "demand fetch (no prefetch): its "
                            "scratchpad run as kept intervals"} for name in shown]
        rows[execution] += plan_rows(plan(scored, capacity_mb, cost, mode))
    graph = pd.DataFrame(rows["graph"]).set_index("policy")
    eager = pd.DataFrame(rows["eager"]).set_index("policy")
    tags = {name: [] for name in shown}
    tags["LRU"].append("baseline")
    for name in best[:1]:
        tags[name].append("best online")
    for name in shown:
        if is_offline(name):
            tags[name].append("offline (reads the future)")
    roles = {**{name: ", ".join(words) for name, words in tags.items()},
             PLANNER: "planner (prefetch, eviction, bypass)", PLANNER_LOWER: "lower bound of the planner's model"}
    table = pd.DataFrame({
        "role": [roles.get(p, "") for p in graph.index],
        "dram_traffic_mb": graph["dram_traffic_mb"], "dram_reads_mb": graph["dram_reads_mb"],
        "dram_writes_mb": graph["dram_writes_mb"],
        "graph_step_time_ms": graph["step_time_ms"], "eager_step_time_ms": eager["step_time_ms"],
        "graph_gpu_time_ms": graph["gpu_time_ms"], "eager_host_time_ms": eager["host_time_ms"],
        "graph_memory_bound_ops": graph["memory_bound_ops"],
        "algorithm": [text.split(": ", 1)[0] for text in graph["algorithm"]]}, index=graph.index)
    table.attrs["model"] = (
        f"Every row in the planner's model (lab.plan): {model_line(cost, capacity_mb, options, execution='')}; "
        "ops in trace order on one stream, timed by lab.sim.timing (graph execution: no host cost; eager: the host "
        "issues each op). LRU, the best online policy and Belady: demand fetch, each policy's scratchpad run "
        "(lab.simulate, buffer='scratchpad') read as kept intervals and fitted to the buffer op by op, no prefetch; "
        f"the best online policy has the least DRAM traffic of {len(names)} policies in this model. PLAN: "
        "lab.plan's schedule (prefetches, evictions, bypass), never slower than those demand schedules; PLAN (lower "
        "bound): no schedule of this model is faster or moves less. Traffic: the graph-mode schedule's (MB, reads + "
        "writes).")
    return table


def achievable_at_most_every_policy(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (long, with ``policy``, or indexed by policy) with the optimum's achievable end never above a
    policy of the same table at the same capacity: a policy's run is a schedule of the optimum's model too, so
    when one moves less than the optimum's best schedule found, ``OPT (achievable)`` takes that policy's metrics
    (``algorithm`` says so) and ``opt_upper_mb`` its traffic; a bracket closed that way becomes one row ``OPT``."""
    indexed = "policy" not in table.columns
    long = table.reset_index() if indexed else table.reset_index(drop=True)
    if OPTIMUM_ACHIEVABLE not in set(long["policy"]):
        return table
    by = long["capacity_mb"] if "capacity_mb" in long.columns else pd.Series(0.0, index=long.index)
    optimum = long["policy"].map(is_optimum)
    policies = long[~optimum & ~long["policy"].map(is_planner) & long["dram_traffic_mb"].notna()]
    shared = [c for c in policies.columns if c not in ("policy", "algorithm") and not c.startswith("opt_")]
    closed = []
    for achievable in long.index[long["policy"] == OPTIMUM_ACHIEVABLE]:
        here = policies[by[policies.index] == by[achievable]]
        if here.empty or here["dram_traffic_mb"].min() >= long.at[achievable, "dram_traffic_mb"]:
            continue
        best = here["dram_traffic_mb"].idxmin()
        upper = float(long.at[best, "dram_traffic_mb"])
        long.loc[achievable, shared] = long.loc[best, shared].to_numpy()
        long.loc[optimum & (by == by[achievable]), "opt_upper_mb"] = upper
        long.loc[achievable, "algorithm"] = (f"whole-tensor optimum (lab.optimal): achievable end from "
                                             f"{long.at[best, 'policy']}'s schedule, which moves less than the "
                                             "optimum's best found")
        if long.at[achievable, "opt_lower_mb"] >= upper:  # the policy meets the bound: the optimum is exact
            long.loc[achievable, ["policy", "opt_exact"]] = [OPTIMUM, True]
            closed.extend(long.index[(long["policy"] == OPTIMUM_LOWER) & (by == by[achievable])])
    long = long.drop(index=closed)
    return long.set_index("policy") if indexed else long.reset_index(drop=True)


def optimum_bracket(table: pd.DataFrame) -> Optional[tuple[float, float]]:
    """(lower, upper) MB of the optimum in a table indexed by policy (``metrics_table``), or None without it."""
    rows = [name for name in table.index if is_optimum(name)]
    if not rows:
        return None
    return float(table.loc[rows[0], "opt_lower_mb"]), float(table.loc[rows[-1], "opt_upper_mb"])


def metrics_table(results: dict[str, SimulationResult], optimum: Optional[list[dict]] = None) -> pd.DataFrame:
    """The metrics of several results, one row per policy (index ``policy``); with ``optimum`` (the rows of
    ``optimum_rows``), the optimum's row(s) last, never above a policy (``achievable_at_most_every_policy``),
    and ``gap_closed_pct`` (see ``with_gap_closed``)."""
    rows = [{"policy": name, **r.metrics} for name, r in results.items()]
    rows.extend(optimum or [])
    table = pd.DataFrame(rows).set_index("policy")
    return with_gap_closed(achievable_at_most_every_policy(table))


def with_gap_closed(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``gap_closed_pct``: the share of LRU's excess DRAM traffic over the optimum that each row
    removes, 100 (LRU - row) / (LRU - OPT) on ``dram_traffic_mb``, OPT being the optimum's lower end (LRU 0 %,
    the optimum 100 %; NaN when LRU is already optimal). Unchanged without an LRU and an optimum row."""
    bracket = optimum_bracket(table)
    if "LRU" not in table.index or bracket is None:
        return table
    table["gap_closed_pct"] = gap_closed_pct(table.loc["LRU", "dram_traffic_mb"], table["dram_traffic_mb"], bracket[0])
    return table


def compare_policies(trace, policies="featured", capacity_mb: float = 64.0, cost=None,
                     scorer: str = "heuristic", optimum="auto",
                     time_limit_s: float = DEFAULT_TIME_LIMIT_S, buffer: Optional[str] = None) -> pd.DataFrame:
    """Metrics of each policy at one capacity: a DataFrame with one row per policy (see ``SimulationResult``).

    ``policies``: see ``policy_list``; the default, ``"featured"``, is the classics (LRU, FIFO, SIEVE, Belady,
    ML), ``"all"`` every registered policy (each compiles its loop on first use: seconds each, once per
    install).

    With ``optimum`` (True, or ``"auto"``, the default: on traces of at most
    AUTO_OPTIMUM_ACCESSES accesses) the last row is ``OPT``, the exact
    whole-tensor optimum, or two rows ``OPT (lower bound)`` and
    ``OPT (achievable)`` when ``lab.optimal`` brackets it within
    ``time_limit_s`` seconds (see ``optimum_rows``), and every row has its
    ``gap_closed_pct``. ``buffer``: the buffer model (``lab.simulate``;
    None: the cost preset's). The optimum is a schedule of the scratchpad:
    under the hardware cache it is left out (``optimum="auto"``) or refused
    (``optimum=True``), never set beside lines.
    """
    chosen = policies_for(policies, buffer, cost)
    workload = encode_trace(with_scores(trace, chosen, scorer))
    with_optimum = wants_optimum(optimum, workload, in_scratchpad(buffer, cost))
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    return evaluate_contenders(workload, chosen, [capacity_mb], cost, optimum=with_optimum, buffer=buffer,
                               time_limit_s=time_limit_s).comparison(capacity_mb)


def sweep_capacity(trace, policies="featured", capacities_mb: Optional[Iterable[float]] = None, cost=None,
                   scorer: str = "heuristic", progress: bool = False, threads: Optional[int] = None,
                   optimum="auto", method: str = "auto",
                   time_limit_s: float = SWEEP_TIME_LIMIT_S, buffer: Optional[str] = None) -> pd.DataFrame:
    """Metrics against capacity for each policy, and the optimum.

    Takes a trace DataFrame or Workload, policies (``policy_list``; default: the featured classics, ``"all"``
    for every policy), capacities
    in MB (default: ``default_capacities_mb``), a cost model or preset,
    ``progress`` (show a tqdm bar: a notebook widget in Jupyter, text
    elsewhere), ``threads`` (simulations at once; default: one per CPU),
    ``optimum`` (the optimum's rows per capacity, ``OPT`` or ``OPT (lower
    bound)`` and ``OPT (achievable)``, with ``opt_lower_mb`` and
    ``opt_upper_mb``, see ``optimum_rows``, each within ``time_limit_s``
    seconds: True, False, or ``"auto"``, the default: on traces of at most
    AUTO_OPTIMUM_ACCESSES accesses, with a warning when skipped) and
    ``method``: ``"auto"`` (default: LRU, and Belady with equal sizes, from
    their exact one-pass curves on plain traces, see ``miss_ratio_curve``;
    every other policy simulated per capacity), ``"one-pass"`` (the same,
    ValueError for a policy without one) or ``"simulation"`` (one
    simulation per capacity for every policy). One-pass rows equal the
    simulation's metrics except ``peak_occupancy_mb`` (NaN for LRU with
    tensors of different sizes). The trace is encoded once; each simulation
    runs without the GIL. ``buffer``: the buffer model (``lab.simulate``;
    None: the cost preset's); under the hardware cache every row is a
    simulation of lines and the optimum is left out (``"auto"``) or refused
    (True). Returns a long DataFrame: policy, capacity_mb, every metric and
    ``algorithm`` (what produced the row), one row per pair, ordered by
    capacity then policy (the optimum last).
    """
    if method not in SWEEP_METHODS:
        raise ValueError(f"method must be one of {list(SWEEP_METHODS)}, got {method!r}")
    chosen = policies_for(policies, buffer, cost)
    scratchpad = in_scratchpad(buffer, cost)
    if not scratchpad and method == "one-pass":
        raise ValueError("method='one-pass': the one-pass curves are of the scratchpad; under buffer='cache' use "
                         "method='auto' or 'simulation'")
    workload = encode_trace(with_scores(trace, chosen, scorer))
    with_optimum = wants_optimum(optimum, workload, scratchpad)
    capacities = default_capacities_mb(workload) if capacities_mb is None else capacity_list(capacities_mb)
    threads = (os.cpu_count() or 1) if threads is None else check_int("threads", threads)
    cost = resolve_cost(cost)
    table = evaluate_contenders(workload, chosen, capacities, cost, optimum=with_optimum, buffer=buffer, method=method,
                                time_limit_s=time_limit_s, threads=threads, progress=progress).table
    table = achievable_at_most_every_policy(table)
    return table[[c for c in table.columns if c != "algorithm"] + ["algorithm"]]


@dataclass
class Contenders:
    """What ``evaluate_contenders`` found. ``table``: one row per contender and capacity (``policy``,
    ``capacity_mb``, every metric, the optimum's ``opt_*`` columns, ``algorithm``: what produced the row), by
    capacity, the policies in the order given and the optimum's rows last; ``results``: {(policy,
    capacity_mb): SimulationResult} of the simulated rows, in the same order; ``optima``: {capacity_mb:
    OptimalResult}; ``skipped``: {policy: why it cannot run under the buffer model}."""

    table: pd.DataFrame
    results: dict = field(default_factory=dict)
    optima: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)

    def at(self, capacity_mb: float) -> dict[str, SimulationResult]:
        """{policy: SimulationResult} of the policies simulated at ``capacity_mb`` MB."""
        return {name: r for (name, c), r in self.results.items() if c == float(capacity_mb)}

    def comparison(self, capacity_mb: float) -> pd.DataFrame:
        """``metrics_table`` at ``capacity_mb`` MB: one row per policy simulated, the optimum's row(s) last."""
        optimum = self.optima.get(float(capacity_mb))
        return metrics_table(self.at(capacity_mb), optimum.table_rows() if optimum is not None else None)


def evaluate_contenders(workload: Workload, policies: list[Policy], capacities_mb: list[float], cost=None, *,
                        optimum: bool = False, buffer: Optional[str] = None, method: str = "simulation",
                        per_access=False, time_limit_s: float = SWEEP_TIME_LIMIT_S, threads: int = 1,
                        progress=False, optima: Optional[dict] = None,
                        skip_unsupported: bool = False) -> Contenders:
    """The one evaluation of contenders: each of ``policies`` (Policy instances) at each of ``capacities_mb``
    (MB) on ``workload`` (encoded, scored when a policy needs scores), and with ``optimum`` the optimum as one
    more contender per capacity (``lab.optimal`` within ``time_limit_s`` seconds: its table rows ``OPT``, or
    ``OPT (lower bound)`` and ``OPT (achievable)``). Sweeps, comparisons, studies, the explorer and compile
    prediction all go through it; the checks of their arguments and the ``optimum="auto"`` rule
    (``wants_optimum``) are theirs.

    ``method``: ``"simulation"`` (every policy simulated per capacity), ``"auto"`` (a policy with an exact
    one-pass curve on this trace, see ``lab.bounds.curves.one_pass_algorithm``, from it; only in the
    scratchpad) or ``"one-pass"`` (the same, ValueError for a policy without one). ``per_access``: keep the
    per-access record of every simulation (True), of none (False) or of the policies named in a collection.
    ``buffer``: the buffer model (``lab.simulate``). ``threads``: runs at once (the engine releases the GIL).
    ``progress``: a tqdm bar over the runs (True), none (False), or an object whose ``update(1)`` is called
    after each run. ``optima``: {capacity_mb: OptimalResult} already solved on this workload and cost (reused,
    and filled with the new ones: a cache the caller keeps). ``skip_unsupported``: a policy the buffer model
    cannot run (``BufferModelError``) is left out and said why in ``skipped`` instead of raising.
    """
    scratchpad = in_scratchpad(buffer, cost)
    solved = {} if optima is None else optima
    capacities = [float(c) for c in capacities_mb]
    one_pass = {}
    for policy in policies:
        algorithm = one_pass_algorithm(workload, policy) if method != "simulation" and scratchpad else None
        if algorithm is None and method == "one-pass":
            raise ValueError(f"method='one-pass': no one-pass algorithm for {policy.name} on this trace (LRU on "
                             "plain traces, Belady on plain traces with equal sizes); use method='auto'")
        if algorithm is not None:
            metrics = one_pass_metrics(workload, policy, capacities, cost)
            one_pass[policy.name] = {c: {**m, "algorithm": algorithm} for c, m in zip(capacities, metrics)}
    pairs = [(capacity, policy) for capacity in capacities
             for policy in [*policies, *([OPTIMUM] if optimum else [])]]
    if capacities and policies and capacities[0] > 0:  # a fresh install compiles the loops side by side
        precompile(workload, [p for p in policies if p.name not in one_pass and (scratchpad or not p.needs_scores)],
                   capacity_bytes_of(capacities[0]))
    algorithm = "simulation" if scratchpad else "simulation (cache)"

    def run(pair):
        capacity, policy = pair
        if is_optimum(policy):
            if capacity not in solved:
                solved[capacity] = optimal(workload, capacity, cost, time_limit_s=time_limit_s, progress=False)
            return [{**row, "capacity_mb": capacity} for row in solved[capacity].table_rows()], None, None
        if policy.name in one_pass:
            return [{"policy": policy.name, "capacity_mb": capacity, **one_pass[policy.name][capacity]}], None, None
        keep = bool(per_access) if isinstance(per_access, (bool, np.bool_, int)) else policy.name in per_access
        try:
            result = simulate(workload, policy, capacity, cost, per_access=keep, buffer=buffer)
        except BufferModelError as error:
            if not skip_unsupported:
                raise
            return [], None, (policy.name, str(error))
        return ([{"policy": result.policy, "capacity_mb": capacity, **result.metrics, "algorithm": algorithm}],
                result, None)

    bar = progress if hasattr(progress, "update") else None
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        runs = pool.map(run, pairs)
        if progress and bar is None:
            from tqdm.auto import tqdm

            runs = tqdm(runs, total=len(pairs), desc="capacity sweep", unit="run")
        out = Contenders(pd.DataFrame())
        rows = []
        for (capacity, _), (found, result, skipped) in zip(pairs, runs):
            rows.extend(found)
            if result is not None:
                out.results[result.policy, capacity] = result
            if skipped is not None:
                out.skipped[skipped[0]] = skipped[1]
            if bar is not None:
                bar.update(1)
    out.table = pd.DataFrame(rows)
    out.optima = {c: solved[c] for c in capacities} if optimum else {}
    return out


SWEEP_METHODS = ("auto", "one-pass", "simulation")
