"""Several simulations at once: every policy at one capacity, and metrics against capacity.

The trace is validated and encoded once (a ``Workload``) for all the runs; a
capacity sweep runs its simulations on threads (the engine releases the GIL).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from lab.checks import check_int, check_positive_mb
from lab.learn.scoring import score
from lab.sim.policy import Policy, get_policy, policy_names
from lab.sim.simulate import SimulationResult, simulate
from lab.trace.workload import Workload, encode_trace
from lab.units import bytes_to_mb


def policy_list(policies) -> list[Policy]:
    """Policy instances for ``policies``: None (every registered policy), one name or Policy, or an iterable of
    them. ValueError for an empty list or an unknown name."""
    if policies is None:
        return [get_policy(name) for name in policy_names()]
    if isinstance(policies, (str, Policy)):
        return [get_policy(policies)]
    try:
        chosen = [get_policy(p) for p in policies]
    except TypeError as error:
        if "iterable" not in str(error):
            raise
        raise TypeError(f"policies must be a policy name, a list of them or None, got {policies!r}") from None
    if not chosen:
        raise ValueError(f"policies must name at least one policy; known: {policy_names()}")
    return chosen


def with_scores(trace, policies, scorer: str = "heuristic"):
    """``trace`` itself when it has ``eviction_score`` or no policy needs one (ML); else scored by ``scorer``."""
    needs = any(p.name == "ML" for p in policy_list(policies))
    if isinstance(trace, Workload):
        if needs and (trace.trace is None or "eviction_score" not in trace.trace.columns):
            return encode_trace(score(trace.trace, scorer))
        return trace
    return score(trace, scorer) if needs and "eviction_score" not in trace.columns else trace


def run_policies(trace, policies=None, capacity_mb: float = 64.0, cost=None, scorer: str = "heuristic",
                 per_access: bool = True) -> dict[str, SimulationResult]:
    """Simulate each policy (default: every registered one) at ``capacity_mb``; returns {policy name: result}.

    Takes a trace DataFrame or Workload. A trace without ``eviction_score`` is
    scored with ``scorer`` for the ML policy. The trace is encoded once.
    """
    chosen = policy_list(policies)
    workload = encode_trace(with_scores(trace, chosen, scorer))
    results = {}
    for policy in chosen:
        result = simulate(workload, policy, capacity_mb, cost, per_access=per_access)
        results[result.policy] = result
    return results


def metrics_table(results: dict[str, SimulationResult]) -> pd.DataFrame:
    """The metrics of several results, one row per policy (index ``policy``)."""
    return pd.DataFrame([{"policy": name, **r.metrics} for name, r in results.items()]).set_index("policy")


def compare_policies(trace, policies=None, capacity_mb: float = 64.0, cost=None,
                     scorer: str = "heuristic") -> pd.DataFrame:
    """Metrics of each policy at one capacity: a DataFrame with one row per policy (see ``SimulationResult``)."""
    return metrics_table(run_policies(trace, policies, capacity_mb, cost, scorer, per_access=False))


def working_set_mb(trace) -> float:
    """Total size of the distinct tensors of a trace (DataFrame or Workload), in MB: the capacity that holds
    them all."""
    return float(bytes_to_mb(encode_trace(trace).tensor_bytes.sum()))


def default_capacities_mb(trace, points: int = 24) -> np.ndarray:
    """``points`` log-spaced capacities (MB) from the smallest tensor to the whole working set."""
    enc = encode_trace(trace)
    if enc.n_tensors == 0:
        return np.array([1.0])
    low, high = bytes_to_mb(enc.tensor_bytes.min()), bytes_to_mb(enc.tensor_bytes.sum())
    return np.unique(np.geomspace(low, max(high, low), points))


def _capacity_list(capacities_mb) -> list[float]:
    if isinstance(capacities_mb, (str, bytes)) or not hasattr(capacities_mb, "__iter__"):
        raise TypeError(f"capacities_mb must be a list of capacities in MB, got {capacities_mb!r}")
    capacities = [check_positive_mb("capacities_mb", c) for c in capacities_mb]
    if not capacities:
        raise ValueError("capacities_mb must hold at least one capacity")
    return capacities


def sweep_capacity(trace, policies=None, capacities_mb: Optional[Iterable[float]] = None, cost=None,
                   scorer: str = "heuristic", progress: bool = False, threads: Optional[int] = None) -> pd.DataFrame:
    """Metrics against capacity for each policy.

    Takes a trace DataFrame or Workload, policies (default: all), capacities
    in MB (default: ``default_capacities_mb``), a cost model or preset,
    ``progress`` (show a tqdm bar: a notebook widget in Jupyter, text
    elsewhere) and ``threads`` (simulations at once; default: one per CPU).
    The trace is encoded once; each simulation runs without the GIL. Returns
    a long DataFrame: policy, capacity_mb and every metric, one row per pair,
    ordered by capacity then policy.
    """
    chosen = policy_list(policies)
    workload = encode_trace(with_scores(trace, chosen, scorer))
    capacities = default_capacities_mb(workload) if capacities_mb is None else _capacity_list(capacities_mb)
    threads = (os.cpu_count() or 1) if threads is None else check_int("threads", threads)
    pairs = [(capacity, policy) for capacity in capacities for policy in chosen]

    def run(pair):
        capacity, policy = pair
        result = simulate(workload, policy, capacity, cost, per_access=False)
        return {"policy": result.policy, "capacity_mb": float(capacity), **result.metrics}

    with ThreadPoolExecutor(max_workers=threads) as pool:
        rows = pool.map(run, pairs)
        if progress:
            from tqdm.auto import tqdm

            rows = tqdm(rows, total=len(pairs), desc="capacity sweep", unit="run")
        return pd.DataFrame(list(rows))
