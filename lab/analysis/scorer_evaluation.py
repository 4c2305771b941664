"""Leave-one-model-out evaluation of the learned scorer against LRU, the classical policies, the heuristic and
the optimum (``lab.evaluate_scorers``); and the optimum's plan as the learned scorer's labels (the analysis
layer lends ``lab.optimal`` to ``lab.learn.features``, which sits below it)."""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import pandas as pd

from lab.checks import check_number, check_positive_mb
from lab.analysis.optimal import optimal
from lab.learn.features import register_plan_source
from lab.learn.learned import LearnedScorer
from lab.learn.scoring import heuristic_scores
from lab.trace.workload import encode_trace
from lab.units import bytes_to_mb


def _optimum_plan(workload, capacity_mb: float) -> pd.DataFrame:
    return optimal(workload, capacity_mb).plan


register_plan_source(_optimum_plan)


def classical_policies() -> list[str]:
    """The online policies other than ML (no future knowledge, no scores): the field the learned scorer meets."""
    from lab.sim.policy import POLICIES

    return [name for name in POLICIES.names() if not POLICIES.get(name).offline and name != "ML"]


def gap_closed_pct(lru_mb: float, x_mb: float, opt_mb: float) -> float:
    """The share of the LRU -> optimum traffic gap that traffic ``x_mb`` closes: 100 (LRU - x) / (LRU - OPT), in
    %; NaN when LRU already reaches the optimum. Negative when worse than LRU."""
    gap = lru_mb - opt_mb
    return 100.0 * (lru_mb - x_mb) / gap if gap > 1e-9 * max(lru_mb, 1.0) else float("nan")


def _dram(trace_or_workload, policy: str, capacity_mb: float) -> float:
    from lab.sim.simulate import simulate

    return float(simulate(trace_or_workload, policy, capacity_mb, per_access=False).metrics["dram_traffic_mb"])


def score_traffic(trace: pd.DataFrame, capacity_mb: float, scorers: dict, policies=None) -> dict:
    """DRAM traffic (MB) on ``trace`` at ``capacity_mb``: of each classical policy (``policies``, default
    ``classical_policies()``), of the ML policy with each scorer's scores (``scorers``: {name: trace ->
    scores}), of Belady's MIN (``Belady_mb``: whole tensors, no bypass, the future known) and the optimum's
    bracket (``opt_lower_mb``, ``opt_upper_mb``: see ``lab.optimal``)."""
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    workload = encode_trace(trace)
    out = {f"{p}_mb": _dram(workload, p, capacity_mb) for p in (policies or classical_policies())}
    for name, scores in scorers.items():
        scored = trace.assign(eviction_score=np.asarray(scores, dtype=np.float64))
        out[f"{name}_mb"] = _dram(scored, "ML", capacity_mb)
    out["Belady_mb"] = _dram(workload, "Belady", capacity_mb)
    bracket = optimal(workload, capacity_mb)
    out["opt_lower_mb"], out["opt_upper_mb"] = bracket.lower_mb, bracket.upper_mb
    return out


def leave_one_model_out(traces: dict, capacity_fraction=(0.02, 0.05, 0.1), train_capacity_fraction=None,
                        seed: int = 0, policies=None, **params) -> pd.DataFrame:
    """Leave-one-model-out: for each model in ``traces`` ({model name: trace, or a list of traces}), fit a
    ``LearnedScorer(seed=seed, **params)`` on the other models' traces and test it on the held-out model's.

    Capacities are shares of each test trace's working set (``capacity_fraction``, in (0, 1]); training labels
    use ``train_capacity_fraction`` (default: the same shares). Returns a DataFrame, one row per held-out
    trace and capacity: ``model``, ``trace`` (index in the model's list), ``capacity_mb``,
    ``capacity_fraction``, DRAM traffic in MB of ``lru_mb``, the best classical online policy
    (``best_classical``, ``best_classical_mb``), the ML policy with the ``heuristic_mb`` and ``learned_mb``
    scores, Belady's MIN ``belady_mb`` (a reference that knows the future), the optimum's bracket
    ``opt_lower_mb`` and ``opt_upper_mb``; the gap closed (``*_gap_closed_pct``, see ``gap_closed_pct``,
    towards ``opt_lower_mb``) of the best classical, the heuristic, the learned scorer and Belady; ``learned_vs_lru_pct``
    (100 (learned - LRU) / LRU: > 0 is worse than LRU); ``fit_s`` (training seconds) and ``predict_s``.
    """
    if not isinstance(traces, dict) or len(traces) < 2:
        raise ValueError("traces must be a dict {model name: trace or list of traces} with at least 2 models")
    groups = {name: [t] if isinstance(t, pd.DataFrame) else list(t) for name, t in traces.items()}
    shares = [capacity_fraction] if np.isscalar(capacity_fraction) else list(capacity_fraction)
    shares = [check_number("capacity_fraction", f, 0, 1) for f in shares]
    if not shares or min(shares) <= 0:
        raise ValueError(f"capacity_fraction must hold numbers in (0, 1], got {capacity_fraction!r}")
    train_shares = shares if train_capacity_fraction is None else train_capacity_fraction
    policies = policies or classical_policies()
    rows = []
    for held_out, tests in groups.items():
        train = [t for name, group in groups.items() if name != held_out for t in group]
        scorer = LearnedScorer(seed=seed, **params).fit(train, capacity_fraction=train_shares)
        for k, trace in enumerate(tests):
            start = time.perf_counter()
            learned = scorer.predict(trace)
            predict_s = time.perf_counter() - start
            heuristic = heuristic_scores(trace, encode_trace(trace))
            working = float(bytes_to_mb(encode_trace(trace).tensor_bytes.sum()))
            for share in shares:
                capacity = working * share
                traffic = score_traffic(trace, capacity, {"heuristic": heuristic, "learned": learned}, policies)
                classical = {p: traffic[f"{p}_mb"] for p in policies}
                best = min(classical, key=classical.get)
                lru, opt = traffic["LRU_mb"], traffic["opt_lower_mb"]
                rows.append({
                    "model": held_out, "trace": k, "accesses": len(trace), "capacity_fraction": share,
                    "capacity_mb": capacity, "lru_mb": lru, "best_classical": best,
                    "best_classical_mb": classical[best], "heuristic_mb": traffic["heuristic_mb"],
                    "learned_mb": traffic["learned_mb"], "belady_mb": traffic["Belady_mb"], "opt_lower_mb": opt,
                    "opt_upper_mb": traffic["opt_upper_mb"],
                    "best_classical_gap_closed_pct": gap_closed_pct(lru, classical[best], opt),
                    "heuristic_gap_closed_pct": gap_closed_pct(lru, traffic["heuristic_mb"], opt),
                    "learned_gap_closed_pct": gap_closed_pct(lru, traffic["learned_mb"], opt),
                    "belady_gap_closed_pct": gap_closed_pct(lru, traffic["Belady_mb"], opt),
                    "learned_vs_lru_pct": 100.0 * (traffic["learned_mb"] - lru) / lru if lru > 0 else 0.0,
                    "fit_s": scorer.fit_seconds_, "predict_s": predict_s,
                })
    return pd.DataFrame(rows)


def evaluate_scorers(traces: dict, capacity_fraction=(0.02, 0.05, 0.1), seed: int = 0,
                     train_capacity_fraction: Optional[list] = None, **params) -> pd.DataFrame:
    """``leave_one_model_out``: the learned scorer against LRU, the best classical policy, the heuristic and
    the optimum, per held-out model and capacity (see there)."""
    return leave_one_model_out(traces, capacity_fraction, train_capacity_fraction, seed, **params)
