"""The capacities a sweep or a curve runs over: the working set, the smallest tensor that matters, log-spaced
defaults between them, and the check of a list of capacities (MB, MiB)."""

from __future__ import annotations

import numpy as np

from lab.checks import check_int, check_positive_mb
from lab.trace.workload import encode_trace
from lab.units import bytes_to_mb


def working_set_mb(trace) -> float:
    """Total size of the distinct tensors of a trace (DataFrame or Workload), in MB: the capacity that holds
    them all."""
    return float(bytes_to_mb(encode_trace(trace).tensor_bytes.sum()))


NEGLIGIBLE_SHARE = 0.01  # tensors smaller than the sweep's start carry at most this share of the bytes accessed


def smallest_tensor_that_matters(trace) -> int:
    """Bytes of the smallest tensor that matters: tensors smaller than it together carry at most
    NEGLIGIBLE_SHARE of the bytes the trace accesses (scalars, biases and norms of a few KB do not)."""
    enc = encode_trace(trace)
    if enc.n_tensors == 0:
        return 0
    accessed = np.bincount(enc.codes, weights=enc.access_bytes.astype(np.float64), minlength=enc.n_tensors)
    order = np.argsort(enc.tensor_bytes, kind="stable")
    total = accessed.sum()
    if total <= 0:
        return int(enc.tensor_bytes.min())
    share = np.cumsum(accessed[order]) / total
    first = min(int(np.searchsorted(share, NEGLIGIBLE_SHARE, side="right")), enc.n_tensors - 1)
    return int(enc.tensor_bytes[order][first])


def default_capacities_mb(trace, points: int = 24) -> np.ndarray:
    """``points`` log-spaced capacities (MB) that follow the trace: from its smallest tensor that matters
    (``smallest_tensor_that_matters``: smaller tensors carry at most 1 % of the bytes accessed) to its whole
    working set."""
    points = check_int("points", points)
    enc = encode_trace(trace)
    if enc.n_tensors == 0:
        return np.array([1.0])
    low = max(bytes_to_mb(smallest_tensor_that_matters(enc)), bytes_to_mb(enc.tensor_bytes.min()))
    high = bytes_to_mb(enc.tensor_bytes.sum())
    return np.unique(np.geomspace(low, max(high, low), points))


def capacity_list(capacities_mb) -> list[float]:
    """``capacities_mb`` (an iterable of capacities in MB) as a list of floats, each a finite number > 0;
    TypeError for a string or a single number, ValueError for an empty list or a bad capacity."""
    if isinstance(capacities_mb, (str, bytes)) or not hasattr(capacities_mb, "__iter__"):
        raise TypeError(f"capacities_mb must be a list of capacities in MB, got {capacities_mb!r}")
    capacities = [check_positive_mb("capacities_mb", c) for c in capacities_mb]
    if not capacities:
        raise ValueError("capacities_mb must hold at least one capacity")
    return capacities

