"""Tables a paper draws from a study's dataset (``lab.load_study``): the gap of each policy to the optimum,
and the best policy at each (model, capacity)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lab.analysis.contenders import above_optimum_pct, best_online_policy, is_optimum

WORKLOAD = ["model", "batch_size", "seq_length", "phase", "weight_dtype", "capacity_mb"]


def _check(frame, needs) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a study's DataFrame (lab.load_study), got {type(frame).__name__}")
    missing = [c for c in needs if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}: pass a study's DataFrame (lab.load_study)")


def gap_to_optimum(frame: pd.DataFrame) -> pd.DataFrame:
    """Each scratchpad policy's DRAM traffic against the optimum at the same workload and capacity: the rows
    of ``frame`` (``lab.load_study``) for buffer ``scratchpad`` and a policy, with ``opt_lower_mb`` (the
    optimum's lower bound, MB) and ``gap_pct``, 100 (traffic - bound) / bound (NaN where the bound is 0 or
    was not computed)."""
    _check(frame, WORKLOAD + ["buffer", "policy", "dram_traffic_mb"])
    pad = frame[frame["buffer"] == "scratchpad"]
    if "opt_lower_mb" not in pad.columns:
        pad = pad.assign(opt_lower_mb=np.nan)
    optimum = pad["policy"].map(is_optimum)
    bound = pad[optimum][WORKLOAD + ["opt_lower_mb"]]
    rows = pad[~optimum].drop(columns="opt_lower_mb").merge(bound, on=WORKLOAD, how="left")
    return rows.assign(gap_pct=above_optimum_pct(rows["dram_traffic_mb"], rows["opt_lower_mb"]))


def best_policy(frame: pd.DataFrame, metric: str = "dram_traffic_mb", buffer: str = "scratchpad") -> pd.DataFrame:
    """The policy with the least ``metric`` (default DRAM traffic, MB) at each workload and capacity under
    ``buffer``, the optimum left out: one row per (model, batch_size, seq_length, phase, weight_dtype,
    capacity_mb) with ``policy`` and ``metric``'s value; ties go to the first policy by name."""
    _check(frame, WORKLOAD + ["buffer", "policy", metric])
    rows = frame[(frame["buffer"] == buffer) & ~frame["policy"].map(is_optimum)].dropna(subset=[metric])
    rows = rows.sort_values(WORKLOAD + ["policy"], kind="stable").reset_index(drop=True)
    best = []
    for _, group in rows.groupby(WORKLOAD, sort=True):  # offline policies (Belady) compete too: the best policy
        name = best_online_policy(group.set_index("policy")[metric], tolerance_pct=0, offline=True)[0]
        best.append(group.loc[group["policy"] == name, metric].idxmin())
    return rows.loc[best, WORKLOAD + ["policy", metric]].reset_index(drop=True)


def one_slice(frame: pd.DataFrame, batch_size=None, seq_length=None, weight_dtype=None) -> pd.DataFrame:
    """The rows of ``frame`` at one batch size, sequence length and weight dtype (each None: the study's
    smallest batch size and sequence length, its first weight dtype), as the figures of one workload shape
    need. ValueError naming the argument when the study has no such value."""
    _check(frame, ["batch_size", "seq_length", "weight_dtype"])
    chosen = {}
    for name, value, default in (("batch_size", batch_size, frame["batch_size"].min()),
                                 ("seq_length", seq_length, frame["seq_length"].min()),
                                 ("weight_dtype", weight_dtype, frame["weight_dtype"].iloc[0] if len(frame) else None)):
        value = default if value is None else value
        if value not in set(frame[name]):
            raise ValueError(f"{name} must be one of the study's {sorted(set(frame[name]))}, got {value!r}")
        chosen[name] = value
    mask = np.ones(len(frame), dtype=bool)
    for name, value in chosen.items():
        mask &= (frame[name] == value).to_numpy()
    return frame[mask].reset_index(drop=True)


def policy_scoreboard(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per policy over every workload and capacity of a study on the scratchpad: ``median_gap_pct``,
    ``p90_gap_pct`` and ``max_gap_pct`` (its DRAM traffic above the optimum's lower bound, %, see
    ``gap_to_optimum``), ``best_at`` (at how many (workload, capacity) points it moves the least traffic; ties
    count for each tied policy) and ``points``; sorted by median gap."""
    gaps = gap_to_optimum(frame)
    least = gaps.groupby(WORKLOAD)["dram_traffic_mb"].transform("min")
    gaps = gaps.assign(best=np.isclose(gaps["dram_traffic_mb"], least, rtol=1e-12, atol=1e-9))
    table = gaps.groupby("policy").agg(median_gap_pct=("gap_pct", "median"),
                                       p90_gap_pct=("gap_pct", lambda g: g.quantile(0.9)),
                                       max_gap_pct=("gap_pct", "max"), best_at=("best", "sum"),
                                       points=("dram_traffic_mb", "size"))
    table["best_at"] = table["best_at"].astype(int)
    return table.sort_values(["median_gap_pct", "best_at"], ascending=[True, False]).reset_index()
