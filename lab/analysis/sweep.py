"""Several simulations at once: every policy at one capacity, and hit rate against capacity."""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import pandas as pd

from lab.sim.policy import get_policy, policy_names
from lab.learn.scoring import score
from lab.sim.simulate import SimulationResult, simulate
from lab.trace.workload import encode_trace
from lab.checks import check_positive_mb
from lab.units import bytes_to_mb


def with_scores(trace: pd.DataFrame, policies, scorer: str = "heuristic") -> pd.DataFrame:
    """``trace`` itself when it has ``eviction_score`` or no policy needs one (ML); else scored by ``scorer``."""
    needs = any(get_policy(p).name == "ML" for p in policies)
    return score(trace, scorer) if needs and "eviction_score" not in trace.columns else trace


def run_policies(trace: pd.DataFrame, policies: Optional[Iterable] = None, capacity_mb: float = 64.0,
                 cost=None, scorer: str = "heuristic") -> dict[str, SimulationResult]:
    """Simulate each policy (default: every registered one) at ``capacity_mb``; returns {policy name: result}.

    A trace without ``eviction_score`` is scored with ``scorer`` for the ML policy.
    """
    policies = list(policies) if policies is not None else policy_names()
    trace = with_scores(trace, policies, scorer)
    results = {}
    for p in policies:
        result = simulate(trace, p, capacity_mb, cost)
        results[result.policy] = result
    return results


def metrics_table(results: dict[str, SimulationResult]) -> pd.DataFrame:
    """The metrics of several results, one row per policy (index ``policy``)."""
    return pd.DataFrame([{"policy": name, **r.metrics} for name, r in results.items()]).set_index("policy")


def compare_policies(trace: pd.DataFrame, policies: Optional[Iterable] = None, capacity_mb: float = 64.0,
                     cost=None, scorer: str = "heuristic") -> pd.DataFrame:
    """Metrics of each policy at one capacity: a DataFrame with one row per policy (see ``SimulationResult``)."""
    return metrics_table(run_policies(trace, policies, capacity_mb, cost, scorer))


def working_set_mb(trace: pd.DataFrame) -> float:
    """Total size of the distinct tensors of a trace, in MB: the capacity that holds them all."""
    return float(bytes_to_mb(encode_trace(trace).tensor_bytes.sum()))


def default_capacities_mb(trace: pd.DataFrame, points: int = 24) -> np.ndarray:
    """``points`` log-spaced capacities (MB) from the smallest tensor to the whole working set."""
    enc = encode_trace(trace)
    if enc.n_tensors == 0:
        return np.array([1.0])
    low, high = bytes_to_mb(enc.tensor_bytes.min()), bytes_to_mb(enc.tensor_bytes.sum())
    return np.unique(np.geomspace(low, max(high, low), points))


def sweep_capacity(trace: pd.DataFrame, policies: Optional[Iterable] = None,
                   capacities_mb: Optional[Iterable[float]] = None, cost=None,
                   scorer: str = "heuristic", progress: bool = False) -> pd.DataFrame:
    """Hit rate, DRAM traffic and latency against capacity for each policy.

    Takes a trace, policies (default: all), capacities in MB (default:
    ``default_capacities_mb``), a cost model or preset, and ``progress``
    (show a tqdm bar: a notebook widget in Jupyter, text elsewhere). Returns
    a long DataFrame: policy, capacity_mb and every metric, one row per pair.
    """
    policies = list(policies) if policies is not None else policy_names()
    capacities = default_capacities_mb(trace) if capacities_mb is None else [
        check_positive_mb("capacities_mb", c) for c in capacities_mb]
    trace = with_scores(trace, policies, scorer)
    rows = []
    if progress:
        from tqdm.auto import tqdm

        capacities = tqdm(capacities, desc="capacity sweep", unit="capacity")
    for capacity in capacities:
        for name, result in run_policies(trace, policies, capacity, cost, scorer).items():
            rows.append({"policy": name, "capacity_mb": float(capacity), **result.metrics})
    return pd.DataFrame(rows)
