"""Headline numbers of traces."""

from __future__ import annotations

import pandas as pd

from lab.trace.workload import encode_trace
from lab.units import bytes_to_mb


def summarize(trace) -> pd.Series:
    """Headline numbers of a trace (DataFrame or Workload): accesses, distinct tensors, working set (MB: all
    distinct tensors), traffic (MB: every access's size summed), largest tensor (MB) and share of accesses
    that are reuses (%)."""
    enc = encode_trace(trace)
    n = enc.n_accesses
    return pd.Series({
        "accesses": n,
        "tensors": enc.n_tensors,
        "working_set_mb": float(bytes_to_mb(enc.tensor_bytes.sum())),
        "traffic_mb": float(bytes_to_mb(enc.access_bytes.sum())),
        "largest_tensor_mb": float(bytes_to_mb(enc.tensor_bytes.max())) if n else 0.0,
        "reuse_share_pct": 100.0 * (n - enc.n_tensors) / n if n else 0.0,
    }, dtype=object)


def summarize_all(traces: dict) -> pd.DataFrame:
    """``summarize`` of several traces, one row per name: {name: trace} -> DataFrame."""
    return pd.DataFrame({name: summarize(trace) for name, trace in traces.items()}).T
