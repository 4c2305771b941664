"""Tables a paper draws from a study's dataset (``lab.load_study``): the gap of each policy to the optimum,
and the best policy at each (model, capacity)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lab.study.spec import OPTIMUM

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
    bound = pad[pad["policy"] == OPTIMUM][WORKLOAD + ["opt_lower_mb"]]
    rows = pad[pad["policy"] != OPTIMUM].drop(columns="opt_lower_mb").merge(bound, on=WORKLOAD, how="left")
    lower = rows["opt_lower_mb"].where(rows["opt_lower_mb"] > 0)
    return rows.assign(gap_pct=100.0 * (rows["dram_traffic_mb"] - lower) / lower)


def best_policy(frame: pd.DataFrame, metric: str = "dram_traffic_mb", buffer: str = "scratchpad") -> pd.DataFrame:
    """The policy with the least ``metric`` (default DRAM traffic, MB) at each workload and capacity under
    ``buffer``, the optimum left out: one row per (model, batch_size, seq_length, phase, weight_dtype,
    capacity_mb) with ``policy`` and ``metric``'s value; ties go to the first policy by name."""
    _check(frame, WORKLOAD + ["buffer", "policy", metric])
    rows = frame[(frame["buffer"] == buffer) & (frame["policy"] != OPTIMUM)].dropna(subset=[metric])
    rows = rows.sort_values(WORKLOAD + [metric, "policy"], kind="stable")
    return rows.groupby(WORKLOAD, sort=True, as_index=False).first()[WORKLOAD + ["policy", metric]]
