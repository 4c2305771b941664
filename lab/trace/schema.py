"""The trace format: a pandas DataFrame with one row per tensor access, in access order.

Required columns: ``tensor_id`` (str or int) and ``size_mb`` (float > 0, MB =
MiB = 2**20 bytes). Optional: ``access`` (``read``/``write``: the simulator
then follows data flow; ``persist``: the tensor's data must reach DRAM after the
trace), ``reuse_distance``, ``stride``, ``op``,
``model_type``, ``eviction_score``, and the per-op columns of a capture
(``OP_COLUMNS``, read through ``lab.trace.ops``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("tensor_id", "size_mb")
ACCESS_KINDS = ("read", "write", "persist")
TRACE_PHASES = ("forward", "backward", "optimizer")  # the values of a training trace's ``phase`` column, in order

# Optional per-op columns (a capture's; issue 26): name -> numpy dtype. Each value belongs to the op and is
# repeated on every row of it, so dropping rows never corrupts a sum over ops (``lab.trace.ops.op_table`` reads
# the first row of each op).
#   op_index    a counter over recorded kernel-level ops, 0-based in trace order; -1 on rows of no op (persist rows)
#   flops       floating-point operations the op executes
#   launches    kernels the op launches (default 1)
#   host_calls  aten calls the host dispatched since the previous recorded op, the op's own included
#   grad_mode   autograd was recording (a training forward) or the op ran in the backward
OP_COLUMNS = {"op_index": "int64", "flops": "float64", "launches": "int16", "host_calls": "int32",
              "grad_mode": "bool"}
OP_COLUMN_DEFAULTS = {"flops": 0.0, "launches": 1, "host_calls": 1, "grad_mode": False}  # when a trace lacks one


def require_columns(trace: pd.DataFrame, columns, hint: str = "") -> None:
    """Raise ValueError naming every column of ``columns`` missing from ``trace``."""
    if not isinstance(trace, pd.DataFrame):
        raise ValueError(f"trace must be a pandas DataFrame, got {type(trace).__name__}")
    missing = [c for c in columns if c not in trace.columns]
    if missing:
        raise ValueError(
            f"trace is missing column(s) {missing}; required: {list(columns)}, "
            f"present: {list(map(str, trace.columns))}" + (f". {hint}" if hint else "")
        )


def numeric_column(trace: pd.DataFrame, column: str) -> np.ndarray:
    """Return ``trace[column]`` as a float64 array, raising ValueError naming the column on non-numbers or NaN."""
    series = trace[column]
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_complex_dtype(series.dtype) or (
            series.dtype == object and len(series)
            and pd.api.types.infer_dtype(series, skipna=True) in ("boolean", "complex", "mixed")):
        raise ValueError(f"column {column!r} must hold real numbers, got {pd.api.types.infer_dtype(series)} values "
                         f"(e.g. {series.iloc[0]!r})")
    if pd.api.types.is_float_dtype(series.dtype) or pd.api.types.is_integer_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"column {column!r} must hold numbers (no NaN); "
            f"{int(bad.sum())} bad value(s), first at row {row}: {trace[column].iloc[row]!r}"
        )
    return values


def persist_flags(trace: pd.DataFrame) -> np.ndarray:
    """``access == "persist"`` per row (bool) when the trace has such rows, else an empty array. A persist row
    says that its tensor's data must be in DRAM after the trace (a model output, updated state): it moves no
    data itself, but a buffer holding the tensor dirty must write it back."""
    if "access" not in trace.columns:
        return np.empty(0, np.bool_)
    flags = (trace["access"] == "persist").to_numpy(dtype=np.bool_, na_value=False)
    return flags if flags.any() else np.empty(0, np.bool_)


def write_flags(trace: pd.DataFrame) -> np.ndarray:
    """``access == "write"`` per row (bool) for a trace with an ``access`` column, else an empty array.

    Raises ValueError naming the first row whose access is neither read nor write.
    """
    if "access" not in trace.columns:
        return np.empty(0, np.bool_)
    access = trace["access"]
    is_write = (access == "write").to_numpy(dtype=np.bool_, na_value=False)
    bad = ~is_write & ~access.isin(("read", "persist")).to_numpy(dtype=np.bool_, na_value=True)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"column 'access' must be one of {list(ACCESS_KINDS)}; row {row} is {access.iloc[row]!r}")
    return is_write


def column_or(source, name: str, default, dtype=None) -> np.ndarray:
    """One value per row of ``source``'s column ``name`` as an array (``dtype``: numpy's, None: the column's),
    or ``default`` for every row when ``source`` lacks it: the one reading of an optional column.

    ``source``: a trace DataFrame (e.g. ``column_or(trace, "access", "read", object) == "write"``), or an
    encoded Workload, whose per-access arrays (``is_write``, ``is_persist``) are empty when the trace has none
    (``column_or(workload, "is_write", False, np.bool_)``: all False for a trace that only reads).
    """
    if isinstance(source, pd.DataFrame):
        if name in source.columns:
            return source[name].to_numpy() if dtype is None else source[name].to_numpy(dtype=dtype)
        return np.full(len(source), default, dtype=object if dtype is None else dtype)
    values, n = getattr(source, name), source.n_accesses
    return values if n > 0 and values.shape[0] == n else np.full(n, default, dtype=dtype)
