"""``lab.predict_compile``: what a graph compiler that sees the whole trace in advance can reach.

This is our reading of the seed's ``/predict-compile``: a compiler that knows
every future access can follow Belady's residency plan, so the plan, its cost
next to the online policies, and the buffer size it needs are the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from lab.sim.simulate import SimulationResult, simulate
from lab.analysis.sweep import metrics_table, policy_list, run_policies, working_set_mb
from lab.trace.workload import encode_trace
from lab.checks import check_positive_mb
from lab.units import BYTES_PER_MB, bytes_to_mb

TARGETS = (0.9, 0.99)


@dataclass(frozen=True)
class CompilePrediction:
    """The optimal plan at ``capacity_mb`` and what it is worth.

    ``plan``: one row per access (access, tensor_id, size_mb, action: ``hit``
    = read on chip, ``write`` = produced on chip (traces with an ``access``
    column), ``load`` = read from DRAM and kept, ``stream`` = moved to or
    from DRAM, larger than the buffer; ``evict``: the tensors evicted to make
    room, comma-separated; ``dropped``: the tensor is dead after this access
    and leaves the buffer; ``resident_mb`` after the access).
    ``comparison``: one row per policy (the online ones and Belady) with its
    metrics and ``gap_closed_pct``: the share of LRU's excess misses over
    Belady that the policy removes (LRU 0 %, Belady 100 %; NaN when LRU is
    already optimal); ``gap_closed_dram_pct`` the same in DRAM bytes (Belady
    minimizes misses, not bytes, when sizes differ, so this one can pass 100).
    ``recommended_capacity_mb``: {0.9: MB, 0.99: MB}, the smallest capacity at
    which the optimal plan reaches that fraction of its best hit rate
    (``best_hit_rate``, %, reached when the whole working set fits); None when
    the trace has no reuse, so no buffer helps.
    """

    capacity_mb: float
    plan: pd.DataFrame
    comparison: pd.DataFrame
    recommended_capacity_mb: dict
    best_hit_rate: float
    working_set_mb: float
    optimal: SimulationResult

    def summary(self) -> dict:
        """JSON-ready summary: capacity, best hit rate, recommended capacities, per-policy comparison."""
        return {
            "capacity_mb": self.capacity_mb,
            "working_set_mb": self.working_set_mb,
            "best_hit_rate": self.best_hit_rate,
            "recommended_capacity_mb": {f"{int(q * 100)}%": v for q, v in self.recommended_capacity_mb.items()},
            "policies": self.comparison.reset_index().to_dict(orient="records"),
        }


def residency_plan(result: SimulationResult) -> pd.DataFrame:
    """Per-access actions of a simulation: hit / load / stream, the tensors evicted, resident MB after."""
    enc = result.workload
    action = np.select(
        [result.hit & result.is_write, result.hit, result.inserted],
        ["write", "hit", "load"],
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


def _gap_closed(values: pd.Series, lru: float, best: float) -> pd.Series:
    return 100.0 * (lru - values) / (lru - best) if lru != best else values * np.nan


def _hit_rate(trace, capacity_bytes: int) -> float:
    return simulate(trace, "Belady", capacity_bytes / BYTES_PER_MB).metrics["cache_hit_rate"]


def smallest_capacity_mb(trace: pd.DataFrame, target_hit_rate: float, high_bytes: int) -> float:
    """Smallest capacity (MB) at which Belady reaches ``target_hit_rate`` (%): a log-spaced scan over
    (0, ``high_bytes``], refined by bisection to 0.1 % of the capacity."""
    grid = np.unique(np.geomspace(1, high_bytes, 24).astype(np.int64))
    passing = next(int(c) for c in grid if _hit_rate(trace, int(c)) >= target_hit_rate)
    below = grid[grid < passing]
    low, high = (int(below[-1]) if below.size else 0), passing
    while high - low > max(1, high // 1000):
        mid = (low + high) // 2
        if _hit_rate(trace, mid) >= target_hit_rate:
            high = mid
        else:
            low = mid
    return float(bytes_to_mb(high))


def predict_compile(trace: pd.DataFrame, capacity_mb: float, cost=None,
                    policies: Optional[Iterable[str]] = None, scorer: str = "heuristic") -> CompilePrediction:
    """Predict what a whole-trace (compile-time) buffer plan reaches at ``capacity_mb`` MB.

    Takes a trace, the buffer capacity in MB, a cost model or preset, the
    online policies to compare (default: every registered policy that does not
    read the future; ML scores the trace with ``scorer`` when it
    has no ``eviction_score``). Returns a CompilePrediction (see its
    docstring): the Belady plan, its DRAM traffic and latency next to the
    online policies, and the recommended buffer sizes for 90 % and 99 % of
    the best reachable hit rate. Our reading of the seed's ``/predict-compile``.
    """
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    enc = encode_trace(trace)
    online = [p for p in policy_list(policies) if not p.offline]
    results = run_policies(trace, [*online, "Belady"], capacity_mb, cost, scorer)
    table = metrics_table(results)
    if "LRU" in table.index:
        lru, opt = table.loc["LRU"], table.loc["Belady"]
        table["gap_closed_pct"] = _gap_closed(table["dram_accesses"], lru["dram_accesses"], opt["dram_accesses"])
        table["gap_closed_dram_pct"] = _gap_closed(
            table["bytes_from_dram"], lru["bytes_from_dram"], opt["bytes_from_dram"])
    whole = int(enc.tensor_bytes.sum())
    best = _hit_rate(trace, whole) if enc.n_accesses else 0.0
    recommended = {q: (smallest_capacity_mb(trace, q * best, whole) if best > 0 else None) for q in TARGETS}
    return CompilePrediction(
        capacity_mb=capacity_mb,
        plan=residency_plan(results["Belady"]),
        comparison=table,
        recommended_capacity_mb=recommended,
        best_hit_rate=best,
        working_set_mb=working_set_mb(trace),
        optimal=results["Belady"],
    )
