"""Leave-one-model-out evaluation of the learned scorer against LRU, the classical policies, the heuristic and
the optimum (``lab.evaluate_scorers``)."""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import pandas as pd

from lab.checks import check_number, check_positive_mb
from lab.analysis.contenders import best_online_policy, gap_closed_pct
from lab.analysis.sweep import SWEEP_TIME_LIMIT_S
from lab.bounds.optimal import optimal
from lab.learn.learned import LearnedScorer
from lab.learn.scoring import check_scores, heuristic_scores
from lab.trace.workload import encode_trace
from lab.units import bytes_to_mb


# The ML policy compares learned scores rounded to 0.1: on forward passes at batch 1 (LRU within 0.2 % of the
# optimum) exact scores once moved 2.5 % more than LRU, rounded ones 0.2 %; on training steps the mean gap
# closed went from 59.4 % to 58.4 % (benchmarks/bench_learned.py, 2026-11-29). One value for every model and case.
LEARNED_RESOLUTION = 0.1
SCORED_POLICY = "ML"  # the policy the scorers drive: it evicts by the trace's eviction_score (needs_scores)


def classical_policies() -> list[str]:
    """The online policies other than ML (no future knowledge, no scores): the field the learned scorer meets."""
    from lab.sim.policy import POLICIES

    return [name for name in POLICIES.names() if not POLICIES.get(name).offline and not POLICIES.get(name).needs_scores]


def _dram(trace_or_workload, policy: str, capacity_mb: float) -> float:
    from lab.sim.simulate import simulate

    return float(simulate(trace_or_workload, policy, capacity_mb, per_access=False).metrics["dram_traffic_mb"])


def score_traffic(trace: pd.DataFrame, capacity_mb: float, scorers: dict, policies=None) -> dict:
    """DRAM traffic (MB) on ``trace`` at ``capacity_mb``: of each classical policy (``policies``, default
    ``classical_policies()``), of the ML policy with each scorer's scores (``scorers``: {name: scores} for the
    plain ML policy, or {name: (scores, policy)} with a policy such as ``lab.get_policy("ML", bypass=True)``),
    of Belady's MIN (``Belady_mb``: whole tensors, no bypass, the future known; ``Belady_bypass_mb`` with
    bypass) and the optimum's bracket (``opt_lower_mb``, ``opt_upper_mb``: see ``lab.optimal``)."""
    from lab.sim.policy import get_policy

    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    workload = encode_trace(trace)
    out = {f"{p}_mb": _dram(workload, p, capacity_mb) for p in (policies or classical_policies())}
    for name, entry in scorers.items():
        scores, policy = entry if isinstance(entry, tuple) else (entry, SCORED_POLICY)
        scores = check_scores(scores, workload.n_accesses, f"scorer {name!r}")
        scored = encode_trace(trace.assign(eviction_score=scores))
        out[f"{name}_mb"] = _dram(scored, policy, capacity_mb)
    out["Belady_mb"] = _dram(workload, "Belady", capacity_mb)
    out["Belady_bypass_mb"] = _dram(workload, get_policy("Belady", bypass=True), capacity_mb)
    bracket = optimal(workload, capacity_mb, time_limit_s=SWEEP_TIME_LIMIT_S, progress=False)
    out["opt_lower_mb"], out["opt_upper_mb"] = bracket.lower_mb, bracket.upper_mb
    return out


def leave_one_model_out(traces: dict, capacity_fraction=(0.02, 0.05, 0.1), train_capacity_fraction=None,
                        seed: int = 0, policies=None, scorers: Optional[dict] = None, return_scorers: bool = False,
                        **params):
    """Leave-one-model-out: for each model in ``traces`` ({model name: trace, or a list of traces}), fit a
    ``LearnedScorer(seed=seed, **params)`` on the other models' traces and test it on the held-out model's.

    Capacities are shares of each test trace's working set (``capacity_fraction``, in (0, 1]); training labels
    use ``train_capacity_fraction`` (default: the same shares). The learned scores drive the ML policy with
    bypass (``lab.get_policy("ML", bypass=True, resolution=0.1)``: a missed tensor scoring above every
    resident one is not inserted, as the optimum it imitates may do; scores are compared rounded to
    LEARNED_RESOLUTION, closer ones tie and go to LRU); ``learned_no_bypass_mb`` is the plain ML policy with
    the same scores. ``scorers`` ({name: fn(trace) -> scores}, e.g. the LLM scorer) adds other scorers, run
    with the plain ML policy as the heuristic is.

    Returns a DataFrame, one row per held-out trace and capacity: ``model``, ``trace`` (index in the model's
    list), ``accesses``, ``capacity_fraction``, ``capacity_mb``, DRAM traffic in MB of ``lru_mb``, the best
    classical online policy (``best_classical``, ``best_classical_mb``), the ML policy with the
    ``heuristic_mb`` scores, ``learned_mb``, ``learned_no_bypass_mb``, ``<name>_mb`` per extra scorer,
    Belady's MIN ``belady_mb`` and ``belady_bypass_mb`` (references that know the future), the optimum's
    bracket ``opt_lower_mb`` and ``opt_upper_mb``; the gap closed (``*_gap_closed_pct``, see
    ``gap_closed_pct``, towards ``opt_lower_mb``) of each; ``learned_vs_lru_pct`` (100 (learned - LRU) /
    LRU: > 0 is worse than LRU); ``fit_s`` (training seconds) and ``predict_s``. With ``return_scorers``,
    returns (table, {held-out model: its fitted LearnedScorer}).
    """
    from lab.sim.policy import get_policy

    if not isinstance(traces, dict) or len(traces) < 2:
        raise ValueError("traces must be a dict {model name: trace or list of traces} with at least 2 models")
    if scorers is not None and (not isinstance(scorers, dict) or not all(callable(f) for f in scorers.values())):
        raise ValueError("scorers must be a dict {name: fn(trace) -> scores}")
    groups = {name: [t] if isinstance(t, pd.DataFrame) else list(t) for name, t in traces.items()}
    shares = [capacity_fraction] if np.isscalar(capacity_fraction) else list(capacity_fraction)
    shares = [check_number("capacity_fraction", f, 0, 1) for f in shares]
    if not shares or min(shares) <= 0:
        raise ValueError(f"capacity_fraction must hold numbers in (0, 1], got {capacity_fraction!r}")
    train_shares = shares if train_capacity_fraction is None else train_capacity_fraction
    policies = policies or classical_policies()
    bypass = get_policy(SCORED_POLICY, bypass=True, resolution=LEARNED_RESOLUTION)
    extra = dict(scorers or {})
    rows, fitted = [], {}
    for held_out, tests in groups.items():
        train = [t for name, group in groups.items() if name != held_out for t in group]
        scorer = LearnedScorer(seed=seed, **params).fit(train, capacity_fraction=train_shares)
        fitted[held_out] = scorer
        for k, trace in enumerate(tests):
            start = time.perf_counter()
            learned = scorer.predict(trace)
            predict_s = time.perf_counter() - start
            workload = encode_trace(trace)
            by = {"heuristic": heuristic_scores(trace, workload), "learned": (learned, bypass),
                  "learned_no_bypass": learned}
            by.update({name: check_scores(fn(trace), len(trace), f"scorer {name!r}") for name, fn in extra.items()})
            working = float(bytes_to_mb(workload.tensor_bytes.sum()))
            for share in shares:
                capacity = working * share
                traffic = score_traffic(trace, capacity, by, policies)
                classical = {p: traffic[f"{p}_mb"] for p in policies}
                best = best_online_policy(pd.Series(classical), tolerance_pct=0, offline=True)[0]
                lru, opt = traffic["LRU_mb"], traffic["opt_lower_mb"]
                row = {"model": held_out, "trace": k, "accesses": len(trace), "capacity_fraction": share,
                       "capacity_mb": capacity, "lru_mb": lru, "best_classical": best,
                       "best_classical_mb": classical[best]}
                row.update({f"{name}_mb": traffic[f"{name}_mb"] for name in by})
                row.update({"belady_mb": traffic["Belady_mb"], "belady_bypass_mb": traffic["Belady_bypass_mb"],
                            "opt_lower_mb": opt, "opt_upper_mb": traffic["opt_upper_mb"]})
                for name in ("best_classical", *by, "belady", "belady_bypass"):
                    row[f"{name}_gap_closed_pct"] = gap_closed_pct(lru, row[f"{name}_mb"], opt)
                row["learned_vs_lru_pct"] = 100.0 * (row["learned_mb"] - lru) / lru if lru > 0 else 0.0
                row["fit_s"], row["predict_s"] = scorer.fit_seconds_, predict_s
                rows.append(row)
    table = pd.DataFrame(rows)
    return (table, fitted) if return_scorers else table


def evaluate_scorers(traces: dict, capacity_fraction=(0.02, 0.05, 0.1), seed: int = 0,
                     train_capacity_fraction: Optional[list] = None, **params):
    """``leave_one_model_out``: the learned scorer against LRU, the best classical policy, the heuristic and
    the optimum, per held-out model and capacity (see there)."""
    return leave_one_model_out(traces, capacity_fraction, train_capacity_fraction, seed, **params)


# The contenders of a leave-one-model-out table, in display order: its column prefix -> the name shown.
CONTENDERS = {"best_classical": "best classical", "heuristic": "heuristic", "learned": "learned",
              "learned_no_bypass": "learned, no bypass", "llm": "LLM", "belady": "Belady",
              "belady_bypass": "Belady, bypass"}
ONLINE = ("best_classical", "heuristic", "learned", "learned_no_bypass", "llm")  # know only the past


def traffic_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per held-out trace and capacity (a ``leave_one_model_out`` table): DRAM traffic (MB) of LRU, the best
    classical policy (and its name), each scorer present, Belady and the optimum's lower bound, then the gap
    each closes (%) and ``learned_worse_than_lru`` (True where the learned scorer moves more than LRU)."""
    present = [name for name in CONTENDERS if f"{name}_mb" in table.columns]
    out = table[["model", "capacity_fraction", "capacity_mb", "lru_mb", "best_classical"]].copy()
    for name in present:
        out[f"{name}_mb"] = table[f"{name}_mb"]
    out["opt_lower_mb"] = table["opt_lower_mb"]
    for name in present:
        out[f"{name}_gap_closed_pct"] = table[f"{name}_gap_closed_pct"]
    out["learned_worse_than_lru"] = table["learned_mb"] > table["lru_mb"] * (1 + 1e-9)
    return out.reset_index(drop=True)


def gap_summary(table: pd.DataFrame, min_gap_pct: float = 1.0) -> pd.DataFrame:
    """One row per contender of a ``leave_one_model_out`` table: the mean share of the LRU -> optimum gap it
    closes (``mean_gap_closed_pct``) and the lowest (``worst_gap_closed_pct``) over the held-out traces whose
    gap is at least ``min_gap_pct`` % of LRU's traffic (``traces_with_a_gap`` of them: where LRU is already
    within a hair of the optimum a share of the gap says nothing, one MB more reads as -1000 %); over every
    trace, its worst traffic against LRU (``worst_vs_lru_pct``, > 0 is worse) and on how many it moves more
    than LRU (``traces_worse_than_lru``, of ``traces``); ``online``: whether it knows only the past (Belady
    knows the future)."""
    min_gap_pct = check_number("min_gap_pct", min_gap_pct, 0, 100)
    room = (table["lru_mb"] - table["opt_lower_mb"]) >= min_gap_pct / 100.0 * table["lru_mb"]
    rows = []
    for name, shown in CONTENDERS.items():
        if f"{name}_mb" not in table.columns:
            continue
        gap = table.loc[room, f"{name}_gap_closed_pct"]
        versus = 100.0 * (table[f"{name}_mb"] - table["lru_mb"]) / table["lru_mb"]
        rows.append({"contender": shown, "online": name in ONLINE, "mean_gap_closed_pct": gap.mean(),
                     "worst_gap_closed_pct": gap.min(), "traces_with_a_gap": int(room.sum()),
                     "worst_vs_lru_pct": versus.max(),
                     "traces_worse_than_lru": int((table[f"{name}_mb"] > table["lru_mb"] * (1 + 1e-9)).sum()),
                     "traces": len(table)})
    return pd.DataFrame(rows)


def gap_answer(table: pd.DataFrame, min_gap_pct: float = 1.0) -> pd.DataFrame:
    """``gap_summary`` as a report's answer reads it: one row per contender, columns in words with units
    (``contender``, ``knows`` the past only or the future, the LRU -> optimum gap closed: mean and worst trace
    (%) over the ``traces with a gap`` of at least ``min_gap_pct`` % of LRU's traffic; over every trace, the
    worst traffic against LRU (%, > 0 is worse) and how many traces move more than LRU, of ``traces``)."""
    summary = gap_summary(table, min_gap_pct)
    return pd.DataFrame({
        "contender": summary["contender"],
        "knows": summary["online"].map({True: "the past only", False: "the future"}),
        "LRU → optimum gap closed, mean (%)": summary["mean_gap_closed_pct"],
        "gap closed, worst trace (%)": summary["worst_gap_closed_pct"],
        f"traces with a gap of at least {min_gap_pct:g} % of LRU": summary["traces_with_a_gap"],
        "traffic against LRU, worst trace (%)": summary["worst_vs_lru_pct"],
        "traces moving more than LRU": summary["traces_worse_than_lru"],
        "traces": summary["traces"],
    })


def llm_status() -> tuple[bool, str]:
    """Whether the LLM scorer has a model on disk (``lab.learn.llm.configure`` or ``$LAB_LLM_MODEL``), and a
    sentence saying which, or how to configure one. Loads nothing."""
    from lab.learn import llm

    scorer = llm.configured_scorer()
    try:
        path = scorer.path
    except (ValueError, TypeError):
        return False, (f"The LLM scorer is not configured: no local copy of {scorer.model!r} is on disk (lab never "
                       f"downloads models). Set {llm.MODEL_ENV}=/path/to/Mistral-7B-Instruct-v0.2 (a folder "
                       "saved by transformers), or call lab.learn.llm.configure(model=...), and run this report "
                       "again to add its column.")
    return True, f"The LLM scorer uses {str(path)!r} ({scorer.quantization or 'unquantized'})."
