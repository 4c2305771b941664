"""The rules every table of contenders (policies and the optimum) follows, each defined once: which rows are
the optimum's (``OPT``), when the optimum is computed (``optimum="auto"``), which policy is best, and how far a
policy is from the optimum (% above it, share of LRU's gap closed).

Sweeps and comparisons (``lab.analysis.sweep``), studies (``lab.study``), the explorer (``lab.ui.widgets``),
compile prediction, the reports and the command line read these, never a copy of them.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import pandas as pd

from lab.bounds.optimal import OPTIMUM, OPTIMUM_ACHIEVABLE, OPTIMUM_LOWER, OPTIMUM_ROWS
from lab.checks import check_number
from lab.units import percent_above

__all__ = ["AUTO_OPTIMUM_ACCESSES", "OPTIMUM", "OPTIMUM_ACHIEVABLE", "OPTIMUM_LOWER", "OPTIMUM_ROWS", "PLANNER",
           "PLANNER_LOWER", "PLANNER_ROWS", "TIE_PCT", "above_optimum_pct", "auto_skips_optimum", "best_online_policy",
           "gap_closed_pct", "is_offline", "is_optimum", "is_planner", "online_policies", "wants_optimum"]

AUTO_OPTIMUM_ACCESSES = 100_000  # optimum="auto" solves the flow up to this size: seconds per capacity
TIE_PCT = 0.1  # policies within this % of the least DRAM traffic tie for best: a smaller lead is no answer
# the planner's rows (lab.plan, ``lab.analysis.sweep.planner_rows``), named as the optimum's are: its schedule, and
# the bound no schedule of its model beats
PLANNER = "PLAN"
PLANNER_LOWER = f"{PLANNER} (lower bound)"
PLANNER_ROWS = (PLANNER, PLANNER_LOWER)


def is_optimum(name) -> bool:
    """Whether a table's row ``name`` is one of the optimum's (``OPT``, ``OPT (lower bound)``,
    ``OPT (achievable)``), not a policy."""
    return isinstance(name, str) and name in OPTIMUM_ROWS


def is_planner(name) -> bool:
    """Whether a table's row ``name`` is one of the planner's (``PLAN``, ``PLAN (lower bound)``), not a policy."""
    return isinstance(name, str) and name in PLANNER_ROWS


def auto_skips_optimum(optimum, n_accesses: int, max_accesses: Optional[int] = None) -> bool:
    """The ``optimum="auto"`` rule: whether ``optimum`` (True, False or ``"auto"``) leaves the optimum out of a
    trace of ``n_accesses`` accesses for its length: with ``"auto"``, on more than ``max_accesses`` (None:
    AUTO_OPTIMUM_ACCESSES, read at the call: its flow takes minutes per capacity)."""
    limit = AUTO_OPTIMUM_ACCESSES if max_accesses is None else max_accesses
    return isinstance(optimum, str) and optimum == "auto" and int(n_accesses) > limit


def wants_optimum(optimum, workload, scratchpad: bool = True) -> bool:
    """Whether a sweep or comparison adds the optimum's rows: ``optimum`` True or False, or ``"auto"`` (on
    traces of at most AUTO_OPTIMUM_ACCESSES accesses, ``auto_skips_optimum``; a warning says when it is skipped).
    The optimum is a schedule of the scratchpad: not set beside a run of another buffer model (``scratchpad``
    False), left out with ``"auto"`` and refused with True."""
    auto = isinstance(optimum, str) and optimum == "auto"
    if not auto and not isinstance(optimum, (bool, np.bool_)):
        raise TypeError(f"optimum must be True, False or 'auto', got {optimum!r}")
    if not scratchpad:
        if not auto and optimum:
            raise ValueError("optimum=True: the optimum (lab.optimal) is a schedule of the scratchpad, not of the "
                             "hardware cache's lines; use buffer='scratchpad' or optimum='auto'/False")
        return False
    if auto:
        if not auto_skips_optimum(optimum, workload.n_accesses):
            return True
        warnings.warn(f"optimum='auto' skips the optimum on a trace of {workload.n_accesses:,} accesses (more "
                      f"than {AUTO_OPTIMUM_ACCESSES:,}: its flow takes minutes per capacity); pass optimum=True "
                      "to compute it anyway", stacklevel=3)
        return False
    return bool(optimum)


def is_offline(name) -> bool:
    """Whether the policy named ``name`` reads the future of the trace (its class's ``offline``: Belady and kin,
    which no online policy can follow); a name that is no registered policy counts as online."""
    from lab.sim.policy import get_policy

    try:
        return bool(get_policy(name).offline)
    except (KeyError, ValueError, TypeError):
        return False


def online_policies(table):
    """The rows of ``table`` (a DataFrame or Series indexed by policy) that are online policies: neither the
    optimum's nor the planner's rows (``is_optimum``, ``is_planner``) nor policies that read the future
    (``is_offline``)."""
    return table[[not is_optimum(p) and not is_planner(p) and not is_offline(p) for p in table.index]]


def best_online_policy(table, metric: str = "dram_traffic_mb", tolerance_pct: float = TIE_PCT,
                       offline: bool = False) -> list[str]:
    """The best online policy of ``table`` (a DataFrame indexed by policy with column ``metric``, default DRAM
    traffic in MB, or a Series of it): the policies whose ``metric`` is within ``tolerance_pct`` % of the least,
    least first (exact ties in the table's order); one name when one policy leads by more than that, several
    when they tie. Only ``online_policies`` compete: the optimum's and the planner's rows are left out, and so are
    the policies that read the future (class attribute ``offline``: Belady and kin) unless ``offline`` is True or
    no online policy is there (then the best of the offline ones). NaN rows are left out; [] when none is a
    number."""
    tolerance_pct = check_number("tolerance_pct", tolerance_pct, 0, 100)
    if not isinstance(table, (pd.Series, pd.DataFrame)):
        raise TypeError(f"table must be a DataFrame indexed by policy or a Series, got {type(table).__name__}")
    if isinstance(table, pd.DataFrame) and metric not in table.columns:
        raise ValueError(f"metric must be a column of the table ({', '.join(map(str, table.columns))}), "
                         f"got {metric!r}")
    values = table if isinstance(table, pd.Series) else table[metric]
    online = online_policies(values) if not offline else values.iloc[:0]
    values = online if not online.empty else values[[not is_optimum(p) and not is_planner(p) for p in values.index]]
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return []
    least = float(values.min())
    tied = values[values <= least * (1 + tolerance_pct / 100) + 1e-12]
    return [str(p) for p in tied.sort_values(kind="stable").index]


def above_optimum_pct(traffic_mb, optimum_mb):
    """How far ``traffic_mb`` (MB; a number, array or Series) is above the optimum's ``optimum_mb`` (its exact
    value or its lower end), in % of it: 100 (traffic - optimum) / optimum; NaN where the optimum is not > 0."""
    out = np.asarray(percent_above(traffic_mb, optimum_mb))
    if isinstance(traffic_mb, pd.Series):
        return pd.Series(out, index=traffic_mb.index)
    return float(out) if out.ndim == 0 else out


def gap_closed_pct(lru_mb, x_mb, opt_mb):
    """The share of the LRU -> optimum traffic gap that traffic ``x_mb`` closes: 100 (LRU - x) / (LRU - OPT), in
    % (LRU 0 %, the optimum 100 %, negative when worse than LRU); NaN where LRU already reaches the optimum
    (a gap of at most 1e-9 of LRU's traffic, or of 1e-9 MB). Numbers, arrays or Series (MB)."""
    lru = np.asarray(lru_mb, dtype=np.float64)
    x = np.asarray(x_mb, dtype=np.float64)
    gap = lru - np.asarray(opt_mb, dtype=np.float64)
    room = gap > 1e-9 * np.maximum(lru, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(room, 100.0 * (lru - x) / np.where(room, gap, 1.0), np.nan)
    if isinstance(x_mb, pd.Series):
        return pd.Series(out, index=x_mb.index)
    return float(out) if out.ndim == 0 else out
