"""``lab.predict_compile``: what a graph compiler that sees the whole trace in advance can reach.

This is our reading of the seed's ``/predict-compile``: a compiler that knows
every future access can follow the optimum's schedule (``lab.optimal``: the
least DRAM traffic, bracketed), so that schedule, the policies' traffic next
to it, and the buffer size it needs are the prediction. Belady (MIN) is one of
the policies compared: with tensors of different sizes it is not the optimum.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from lab.analysis.sweep import evaluate_contenders, policy_list, wants_optimum, with_scores
from lab.bounds.capacities import working_set_mb
from lab.bounds.optimal import (DEFAULT_TIME_LIMIT_S, OptimalResult, check_flow_size, intervals_of, lower_bound_mb,
                                schedule_traffic)
from lab.checks import check_bool, check_positive_mb
from lab.sim.cost import resolve_cost
from lab.sim.model import PLAN_BUFFER, SimulationModel, resolve_buffer
from lab.sim.policy import get_policy
from lab.sim.simulate import SimulationResult, simulate
from lab.trace.schema import column_or
from lab.trace.workload import encode_trace
from lab.trace.workload import Workload
from lab.units import BYTES_PER_MB, MAX_SIZE_MB, bytes_to_mb

TARGETS = (0.9, 0.99)
RELATIVE_PRECISION = 1e-3  # the recommended capacities are refined to 0.1 % of their value
SEARCH_STEPS = 18  # about the evaluations per recommended capacity: a 7-point scan, then bisection to 0.1 %
# predict_compile shows a progress bar by default on traces longer than these (measured: ~2 s of work on 2 cores;
# 265,000 accesses took 0.5 s without the optimum, 8,836 took 5.5 s with it: its ~30 flows grow faster than linearly)
PROGRESS_ACCESSES = 400_000
PROGRESS_OPTIMUM_ACCESSES = 5_000
PLANNERS = {True: "the optimum (lab.optimal: its whole-tensor schedule; sizes from the byte-granular optimum)",
            False: "Belady (MIN) with bypass: an achievable schedule, not the optimum (skipped)"}


@dataclass(frozen=True)
class CompilePrediction:
    """The optimum's schedule at ``capacity_mb`` and what it is worth.

    ``plan``: one row per access of the optimum's achievable whole-tensor
    schedule (``optimum``'s upper end): access, tensor_id, size_mb, action
    (``hit`` = read on chip, ``write`` = produced on chip (traces with an
    ``access`` column), ``load`` = read from DRAM and kept, ``stream`` = read
    from DRAM and not kept: it bypasses the buffer), ``evict`` (always empty:
    the schedule never evicts, it decides at each access whether to keep the
    tensor until its next use), ``dropped`` (the tensor leaves the buffer
    after this access: not kept until its next use, or never used again) and
    ``resident_mb`` after the access.
    ``comparison``: one row per policy (the online ones and Belady) and the
    optimum (row ``OPT`` when exact, else ``OPT (lower bound)`` and
    ``OPT (achievable)``, with ``opt_lower_mb`` and ``opt_upper_mb``), with
    the metrics and ``gap_closed_pct``: the share of LRU's excess DRAM traffic
    over the optimum's lower bound that the row removes (LRU 0 %, the bound
    100 %; NaN when LRU is already optimal).
    ``recommended_capacity_mb``: {0.9: MB, 0.99: MB}, the smallest capacity
    at which the optimum saves that fraction of the DRAM traffic that a
    buffer holding the whole working set saves (``traffic_mb``: the
    optimum's traffic with no buffer and with the whole working set), the
    optimum being the byte-granular one here (a flow per step of the search:
    a lower bound for whole tensors, so the sizes are the least that could
    do it); None when no buffer saves anything.
    ``best_hit_rate``: % of accesses served on chip by the optimum's
    schedule with the whole working set on chip.
    ``model``: the buffer model, cost preset and capacity of the comparison's
    policy rows (``results``: {policy: SimulationResult}, each with its
    parameters and ``note``). The optimum, the plan, ``belady`` (the planner
    without the optimum) and the recommended capacities are always the
    whole-tensor schedules of a software-managed buffer (``PLAN_BUFFER``, the
    scratchpad): what a compiler plans; with ``buffer="cache"`` the policy
    rows are the hardware cache's, set against that plan; ``skipped``:
    {policy: why} for the policies that cannot run under that buffer model
    (the scored ML policy under the cache, whose accesses are lines).
    """

    capacity_mb: float
    plan: pd.DataFrame
    comparison: pd.DataFrame
    recommended_capacity_mb: dict
    best_hit_rate: float
    traffic_mb: dict
    working_set_mb: float
    optimum: Optional[OptimalResult]
    belady: SimulationResult
    planner: str = PLANNERS[True]
    model: Optional[SimulationModel] = None
    results: dict = field(default_factory=dict, repr=False)
    skipped: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready summary: the model (buffer model, cost preset, capacity; ``plan_buffer``: the plan's and the
        optimum's buffer model), capacity, the optimum's bracket, recommended capacities, per-policy comparison
        (each policy with its ``params`` and ``note``, see ``SimulationResult``)."""
        policies = self.comparison.reset_index().to_dict(orient="records")
        for row in policies:
            result = self.results.get(row["policy"])
            row["params"] = result.params if result is not None else {}
            row["note"] = result.note if result is not None else ""
        return {
            "model": {**(self.model.to_dict() if self.model is not None else {}), "plan_buffer": PLAN_BUFFER},
            "capacity_mb": self.capacity_mb,
            "working_set_mb": self.working_set_mb,
            "planner": self.planner,
            "optimum_mb": ({"lower": self.optimum.lower_mb, "upper": self.optimum.upper_mb,
                            "exact": self.optimum.exact, "status": self.optimum.status}
                           if self.optimum is not None else None),
            "best_hit_rate": self.best_hit_rate,
            "traffic_mb": self.traffic_mb,
            "recommended_capacity_mb": {f"{int(q * 100)}%": v for q, v in self.recommended_capacity_mb.items()},
            "policies": policies,
            "skipped": dict(self.skipped),
        }


def residency_plan(result: SimulationResult) -> pd.DataFrame:
    """Per-access actions of a simulation: hit / load / stream, the tensors evicted, resident MB after."""
    enc = result.workload
    action = np.select(
        [result.is_persist, result.on_chip & result.is_write, result.hit, result.inserted],
        ["persist", "write", "hit", "load"],
        "stream",
    )
    evict = np.full(enc.n_accesses, "", dtype=object)
    if result.victim_access.size:
        names = enc.tensor_ids[result.victim_code].astype(str)
        starts = np.flatnonzero(np.r_[True, np.diff(result.victim_access) != 0])
        for access, group in zip(result.victim_access[starts], np.split(names, starts[1:])):
            evict[access] = ", ".join(group)
    return pd.DataFrame({
        "access": np.arange(enc.n_accesses),
        "tensor_id": enc.tensor_ids[enc.codes],
        "size_mb": bytes_to_mb(enc.access_bytes),
        "action": action,
        "evict": evict,
        "dropped": result.dropped,
        "resident_mb": bytes_to_mb(result.resident_bytes),
    })


def optimum_plan(workload: Workload, result: OptimalResult) -> pd.DataFrame:
    """Per-access actions of the optimum's achievable whole-tensor schedule (see ``CompilePrediction.plan``)."""
    n = workload.n_accesses
    intervals = result.plan
    kept = intervals["kept"].to_numpy()
    start = intervals["start"].to_numpy()
    end = intervals["end"].to_numpy()
    size = workload.access_bytes[start]
    reached_on_chip = np.zeros(n, np.bool_)
    reached_on_chip[end[kept]] = True
    kept_after = np.zeros(n, np.bool_)
    kept_after[start[kept]] = True
    writes = column_or(workload, "is_write", False, np.bool_)
    marks = column_or(workload, "is_persist", False, np.bool_)
    action = np.select([marks, writes, reached_on_chip, kept_after], ["persist", "write", "hit", "load"], "stream")
    held = np.zeros(n + 1, np.int64)
    np.add.at(held, start[kept], size[kept])
    np.subtract.at(held, end[kept], size[kept])
    return pd.DataFrame({
        "access": np.arange(n),
        "tensor_id": workload.tensor_ids[workload.codes],
        "size_mb": bytes_to_mb(workload.access_bytes),
        "action": action,
        "evict": np.full(n, "", dtype=object),
        "dropped": ~kept_after,
        "resident_mb": bytes_to_mb(np.cumsum(held)[:n]),
    })


def no_buffer_traffic_mb(trace) -> float:
    """DRAM traffic (MB) with no buffer at all: every read from DRAM, and every write whose data is needed again
    (read later, or persisted: a ``persist`` mark of a capture) written to DRAM once. Less than the bytes a
    capture's rows add up to: its persist marks move no data themselves (their tensor's write is the traffic),
    and data written and never read again nor persisted is dropped. Takes a trace or Workload."""
    workload = encode_trace(trace)
    intervals = workload.memo("intervals", lambda: intervals_of(workload))
    return float(bytes_to_mb(sum(schedule_traffic(workload, intervals, np.zeros(len(intervals.start), bool))[:2])))


def smallest_capacity_mb(traffic_mb, target_mb: float, high_bytes: int, progress=None) -> float:
    """Smallest capacity (MB) at which ``traffic_mb(capacity_bytes)`` (DRAM traffic in MB, non-increasing in the
    capacity) is at most ``target_mb``, to 0.1 % of the capacity: a coarse log-spaced scan from
    ``high_bytes`` down, then bisection. ``traffic_mb`` is called with integer bytes and may be memoized by the
    caller (the scans of two targets then share their points); ``progress`` (a tqdm bar or None) is advanced
    once per call."""
    def reaches(capacity_bytes: int) -> bool:
        if progress is not None:
            progress.update(1)
        return traffic_mb(capacity_bytes) <= target_mb + 1e-12

    grid = np.unique(np.geomspace(1, high_bytes, 8).astype(np.int64))
    high, low = int(grid[-1]), 0
    for capacity in grid[::-1][1:]:  # from the top: the targets lie near the working set
        if not reaches(int(capacity)):
            low = int(capacity)
            break
        high = int(capacity)
    while high - low > max(1, int(high * RELATIVE_PRECISION)):
        mid = (low + high) // 2
        if reaches(mid):
            high = mid
        else:
            low = mid
    return float(bytes_to_mb(high))


def _check_predictable(workload: Workload) -> None:
    """ValueError naming the trace when predict_compile cannot size a buffer for it: an empty trace, or a working
    set larger than the largest buffer lab simulates (MAX_SIZE_MB), which its "whole working set on chip"
    reference needs."""
    if workload.n_accesses == 0:
        raise ValueError("trace is empty: predict_compile needs at least one access to plan")
    whole_mb = float(bytes_to_mb(workload.tensor_bytes.sum()))
    if whole_mb > MAX_SIZE_MB:
        raise ValueError(f"trace's working set is {whole_mb:.4g} MB, more than the largest buffer lab simulates "
                         f"({MAX_SIZE_MB:g} MB): predict_compile sizes buffers up to the whole working set; plan a "
                         "window of the trace, or one with smaller tensors")


def predict_compile(trace: pd.DataFrame, capacity_mb: float, cost=None,
                    policies: Optional[Iterable[str]] = None, scorer: str = "heuristic", optimum="auto",
                    progress: Optional[bool] = None, buffer: Optional[str] = None) -> CompilePrediction:
    """Predict what a whole-trace (compile-time) buffer plan reaches at ``capacity_mb`` MB.

    Takes a trace, the buffer capacity in MB, a cost model or preset, the
    online policies to compare (default: every registered policy that does not
    read the future; ML scores the trace with ``scorer`` when it has no
    ``eviction_score``), ``optimum`` (True, False or ``"auto"``: the optimum's
    flow on traces of at most ``AUTO_OPTIMUM_ACCESSES`` accesses, with a
    warning when skipped) and ``progress`` (a tqdm bar; default: on traces of
    over ``PROGRESS_ACCESSES`` accesses, or ``PROGRESS_OPTIMUM_ACCESSES`` with
    the optimum: about 2 s of work). Returns a CompilePrediction (see its
    docstring): the optimum's schedule, its DRAM traffic and latency next to the
    online policies and Belady (MIN), and the recommended buffer sizes for 90 %
    and 99 % of the traffic a buffer can save. Without the optimum, the plan and
    the recommended sizes are Belady's (``planner`` says which): an achievable
    schedule, and sizes that are enough, not necessarily the least. Time: one
    simulation per policy and about 30 simulations (or flows, with the optimum)
    for the recommended sizes, linear in the trace's length. Our reading of the
    seed's ``/predict-compile``.

    ``buffer``: the buffer model of the policies' rows, as ``lab.simulate``'s
    (None: the cost preset's, the hardware cache for a GPU preset); the
    optimum, the plan and the recommended sizes are whole-tensor schedules of a
    software-managed buffer whatever it is (see ``CompilePrediction``).
    """
    cost = resolve_cost(cost)
    buffer = resolve_buffer(buffer, cost)
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    steps = get_policy("Belady")  # the plan without the optimum follows its steps
    chosen = [*[p for p in policy_list(policies) if not p.offline], steps]
    workload = encode_trace(with_scores(trace, chosen, scorer))
    _check_predictable(workload)
    solve = wants_optimum(optimum, workload)
    if solve:
        check_flow_size(workload)
    if progress is None:
        progress = workload.n_accesses > (PROGRESS_OPTIMUM_ACCESSES if solve else PROGRESS_ACCESSES)
    check_bool("progress", progress)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chosen) + 2 + 2 * SEARCH_STEPS, desc="predict_compile", unit="step")
    try:
        contenders = evaluate_contenders(workload, chosen, [capacity_mb], cost, optimum=solve, buffer=buffer,
                                         per_access={steps.name} if buffer == PLAN_BUFFER else False,
                                         time_limit_s=DEFAULT_TIME_LIMIT_S, threads=os.cpu_count() or 1,
                                         progress=bar if bar is not None else False, skip_unsupported=True)
        results, skipped = contenders.at(capacity_mb), contenders.skipped
        belady = (results[steps.name] if buffer == PLAN_BUFFER
                  else simulate(workload, steps, capacity_mb, cost, buffer=PLAN_BUFFER))
        whole = int(workload.tensor_bytes.sum())
        with_all = simulate(workload, "Belady", whole / BYTES_PER_MB, per_access=False,
                            buffer=PLAN_BUFFER)  # everything fits
        with_none = no_buffer_traffic_mb(workload)
        if solve:
            best = contenders.optima[capacity_mb]
            plan, planner = optimum_plan(workload, best), PLANNERS[True]

            def traffic(capacity_bytes: int) -> float:
                return lower_bound_mb(workload, capacity_bytes / BYTES_PER_MB)
        else:
            best = None
            plan, planner = residency_plan(belady), PLANNERS[False]

            def traffic(capacity_bytes: int) -> float:
                return simulate(workload, "Belady", capacity_bytes / BYTES_PER_MB, per_access=False,
                                buffer=PLAN_BUFFER).metrics["dram_traffic_mb"]
        if bar is not None:
            bar.update(1)
        whole_mb = with_all.metrics["dram_traffic_mb"]
        saved = with_none - whole_mb
        memo = functools.lru_cache(maxsize=None)(traffic)

        def recommend(q: float) -> Optional[float]:
            return smallest_capacity_mb(memo, with_none - q * saved, whole, bar) if saved > 0 else None

        with ThreadPoolExecutor(max_workers=len(TARGETS)) as pool:  # one search per target, side by side
            recommended = dict(zip(TARGETS, pool.map(recommend, TARGETS)))
    finally:
        if bar is not None:
            bar.close()
    return CompilePrediction(
        capacity_mb=capacity_mb,
        plan=plan,
        comparison=contenders.comparison(capacity_mb),
        recommended_capacity_mb=recommended,
        best_hit_rate=with_all.metrics["cache_hit_rate"],
        traffic_mb={"no_buffer": with_none, "whole_working_set": whole_mb},
        working_set_mb=working_set_mb(workload),
        optimum=best,
        belady=belady,
        planner=planner,
        model=results["Belady"].model.without_policy(),
        results=results,
        skipped=skipped,
    )
