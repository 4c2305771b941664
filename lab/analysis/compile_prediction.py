"""``lab.predict_compile``: what a graph compiler that sees the whole trace in advance can reach.

This is our reading of the seed's ``/predict-compile``: a compiler that knows
every future access can follow the optimum's schedule (``lab.optimal``: the
least DRAM traffic, bracketed), so that schedule, the policies' traffic next
to it, and the buffer size it needs are the prediction. Belady (MIN) is one of
the policies compared: with tensors of different sizes it is not the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from lab.analysis.optimal import OptimalResult, intervals_of, lower_bound_mb, optimal, schedule_traffic
from lab.analysis.sweep import metrics_table, policy_list, run_policies, working_set_mb
from lab.checks import check_positive_mb
from lab.sim.simulate import SimulationResult
from lab.trace.workload import Workload
from lab.units import BYTES_PER_MB, bytes_to_mb

TARGETS = (0.9, 0.99)
RELATIVE_PRECISION = 1e-3  # the recommended capacities are refined to 0.1 % of their value


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
    optimum (row ``OPT``, with ``opt_lower_mb`` and ``opt_upper_mb``), with
    the metrics and ``gap_closed_pct``: the share of LRU's excess DRAM traffic
    over the optimum's lower bound that the row removes (LRU 0 %, the bound
    100 %; NaN when LRU is already optimal).
    ``recommended_capacity_mb``: {0.9: MB, 0.99: MB}, the smallest capacity
    at which the optimum saves that fraction of the DRAM traffic that a
    buffer holding the whole working set saves (``traffic_mb``: the
    optimum's traffic with no buffer and with the whole working set, by its
    lower bound); None when no buffer saves anything.
    ``best_hit_rate``: % of accesses served on chip by the optimum's
    schedule with the whole working set on chip.
    """

    capacity_mb: float
    plan: pd.DataFrame
    comparison: pd.DataFrame
    recommended_capacity_mb: dict
    best_hit_rate: float
    traffic_mb: dict
    working_set_mb: float
    optimum: OptimalResult
    belady: SimulationResult

    def summary(self) -> dict:
        """JSON-ready summary: capacity, the optimum's bracket, recommended capacities, per-policy comparison."""
        return {
            "capacity_mb": self.capacity_mb,
            "working_set_mb": self.working_set_mb,
            "optimum_mb": {"lower": self.optimum.lower_mb, "upper": self.optimum.upper_mb},
            "best_hit_rate": self.best_hit_rate,
            "traffic_mb": self.traffic_mb,
            "recommended_capacity_mb": {f"{int(q * 100)}%": v for q, v in self.recommended_capacity_mb.items()},
            "policies": self.comparison.reset_index().to_dict(orient="records"),
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
    writes = workload.is_write if workload.has_writes else np.zeros(n, np.bool_)
    marks = workload.is_persist if workload.has_persist else np.zeros(n, np.bool_)
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


def smallest_capacity_mb(workload: Workload, target_mb: float, high_bytes: int) -> float:
    """Smallest capacity (MB) at which the optimum's lower bound on DRAM traffic is at most ``target_mb``: a
    log-spaced scan over (0, ``high_bytes``], refined by bisection to 0.1 % of the capacity. The bound is
    monotone in the capacity (a larger buffer only relaxes the flow's constraint)."""
    def reaches(capacity_bytes: int) -> bool:
        return lower_bound_mb(workload, capacity_bytes / BYTES_PER_MB) <= target_mb + 1e-12

    grid = np.unique(np.geomspace(1, high_bytes, 16).astype(np.int64))
    passing = next(int(c) for c in grid if reaches(int(c)))
    below = grid[grid < passing]
    low, high = (int(below[-1]) if below.size else 0), passing
    while high - low > max(1, int(high * RELATIVE_PRECISION)):
        mid = (low + high) // 2
        if reaches(mid):
            high = mid
        else:
            low = mid
    return float(bytes_to_mb(high))


def predict_compile(trace: pd.DataFrame, capacity_mb: float, cost=None,
                    policies: Optional[Iterable[str]] = None, scorer: str = "heuristic") -> CompilePrediction:
    """Predict what a whole-trace (compile-time) buffer plan reaches at ``capacity_mb`` MB.

    Takes a trace, the buffer capacity in MB, a cost model or preset, the
    online policies to compare (default: every registered policy that does not
    read the future; ML scores the trace with ``scorer`` when it has no
    ``eviction_score``). Returns a CompilePrediction (see its docstring): the
    optimum's schedule, its DRAM traffic and latency next to the online
    policies and Belady (MIN), and the recommended buffer sizes for 90 % and
    99 % of the traffic a buffer can save. Our reading of the seed's
    ``/predict-compile``.
    """
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    online = [p for p in policy_list(policies) if not p.offline]
    results = run_policies(trace, [*online, "Belady"], capacity_mb, cost, scorer)
    workload = results["Belady"].workload
    best = optimal(workload, capacity_mb, cost)
    table = metrics_table(results, {**best.metrics, "opt_lower_mb": best.lower_mb, "opt_upper_mb": best.upper_mb})
    whole = int(workload.tensor_bytes.sum())
    with_all = optimal(workload, whole / BYTES_PER_MB)
    intervals = intervals_of(workload)
    with_none = float(bytes_to_mb(sum(schedule_traffic(workload, intervals, np.zeros(len(intervals.start), bool))[:2])))
    saved = with_none - with_all.lower_mb
    recommended = {q: (smallest_capacity_mb(workload, with_none - q * saved, whole) if saved > 0 else None)
                   for q in TARGETS}
    return CompilePrediction(
        capacity_mb=capacity_mb,
        plan=optimum_plan(workload, best),
        comparison=table,
        recommended_capacity_mb=recommended,
        best_hit_rate=with_all.metrics["cache_hit_rate"],
        traffic_mb={"no_buffer": with_none, "whole_working_set": with_all.lower_mb},
        working_set_mb=working_set_mb(workload),
        optimum=best,
        belady=results["Belady"],
    )

