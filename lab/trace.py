"""The trace format: validation and integer coding of a trace DataFrame.

A trace is a pandas DataFrame with one row per tensor access, in access order.
Required columns: ``tensor_id`` (str or int) and ``size_mb`` (float > 0, MB =
MiB = 2**20 bytes). Optional columns: ``reuse_distance``, ``stride``, ``op``,
``model_type``, ``eviction_score``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from lab.kernels import NEVER, previous_access_positions
from lab.units import MAX_SIZE_MB, mb_to_bytes

REQUIRED_COLUMNS = ("tensor_id", "size_mb")
OPTIONAL_COLUMNS = ("reuse_distance", "stride", "op", "model_type", "eviction_score")


@dataclass(frozen=True)
class EncodedTrace:
    """A validated trace as integer-coded numpy arrays, ready for the compiled kernels.

    ``codes[i]`` is the tensor accessed at access ``i`` (0..n_tensors-1, in
    order of first access); ``tensor_ids[c]`` is the original id of code ``c``;
    ``tensor_bytes[c]`` its size in bytes.
    """

    codes: np.ndarray  # int64, one per access
    tensor_bytes: np.ndarray  # int64 bytes, one per tensor
    access_bytes: np.ndarray  # int64 bytes of the tensor touched by each access
    id_values: object  # the distinct ids, or a categorical's categories when ``id_positions`` is set
    id_positions: Optional[np.ndarray] = None  # the category of each tensor, for categorical ids

    @functools.cached_property
    def tensor_ids(self) -> np.ndarray:
        """The original id of each tensor code, as a numpy array (built on first use: most runs never need it)."""
        values = np.asarray(self.id_values)
        return values if self.id_positions is None else values[self.id_positions]

    @property
    def n_accesses(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_tensors(self) -> int:
        return int(self.tensor_bytes.shape[0])


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


def _factorize_ids(ids: pd.Series):
    """Codes in order of first access (-1 for a missing id), the distinct ids, and for categorical ids
    the category of each distinct id (then the second value holds the categories)."""
    if isinstance(ids.dtype, pd.CategoricalDtype):  # already coded: factorize the small integer codes
        categorical = ids.array
        codes, used = pd.factorize(categorical.codes, sort=False)
        return (categorical.codes, None, None) if (used < 0).any() else (codes, categorical.categories, used)
    codes, uniques = pd.factorize(ids, sort=False)
    return codes, uniques, None


def encode_trace(trace: pd.DataFrame) -> EncodedTrace:
    """Validate a trace and code its tensor ids as integers.

    Takes a trace DataFrame (see module docstring). Returns an EncodedTrace.
    Raises ValueError when a required column is missing, a ``tensor_id`` is
    missing, a ``size_mb`` is NaN, infinite, zero, negative or above
    MAX_SIZE_MB, or one tensor id appears with two different sizes.
    """
    require_columns(trace, REQUIRED_COLUMNS)
    codes, id_values, id_positions = _factorize_ids(trace["tensor_id"])
    if codes.size and codes.min() < 0:
        row = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(f"column 'tensor_id' has missing values (first at row {row}); every access needs a tensor id")
    size_mb = numeric_column(trace, "size_mb")
    bad = ~np.isfinite(size_mb) | (size_mb <= 0) | (size_mb > MAX_SIZE_MB)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"column 'size_mb' must be finite and in (0, {MAX_SIZE_MB:g}] MB; "
            f"{int(bad.sum())} bad value(s), first at row {row}: {float(size_mb[row])!r}"
        )
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    access_bytes = mb_to_bytes(size_mb)
    n_tensors = int(codes.max()) + 1 if codes.size else 0
    tensor_bytes = np.zeros(n_tensors, dtype=np.int64)
    tensor_bytes[codes] = access_bytes  # last size seen per tensor
    mismatch = tensor_bytes[codes] != access_bytes
    if mismatch.any():
        row = int(np.flatnonzero(mismatch)[0])
        tid = trace["tensor_id"].iloc[row]
        sizes = sorted(set(size_mb[codes == codes[row]].tolist()))
        raise ValueError(
            f"tensor_id {tid!r} appears with different sizes {sizes[:5]} MB (first mismatch at row {row}); "
            "a tensor's size must be the same on every access"
        )
    return EncodedTrace(codes=codes, tensor_bytes=tensor_bytes, access_bytes=access_bytes, id_values=id_values,
                        id_positions=id_positions)


def reuse_distances(tensor_ids) -> np.ndarray:
    """Reuse distance of each access: the number of other accesses since the same tensor's previous access.

    Takes a sequence of tensor ids in access order. Returns float64, one per
    access; a first access has no reuse distance and gets NaN (missing, not 0),
    and an immediate re-access gets 0.
    """
    codes, uniques = pd.factorize(pd.Series(tensor_ids), sort=False)
    return reuse_distances_from_codes(np.ascontiguousarray(codes, dtype=np.int64), len(uniques))


def reuse_distances_from_codes(codes: np.ndarray, n_tensors: int) -> np.ndarray:
    """``reuse_distances`` of integer tensor codes (int64, 0..n_tensors-1): float64, NaN on first accesses."""
    prev = previous_access_positions(codes, n_tensors)
    distance = (np.arange(codes.shape[0]) - prev - 1).astype(np.float64)
    distance[prev == NEVER] = np.nan
    return distance


def summarize(trace: pd.DataFrame) -> pd.Series:
    """Headline numbers of a trace: accesses, distinct tensors, working set (MB: all distinct tensors),
    traffic (MB: every access's size summed), largest tensor (MB) and share of accesses that are reuses (%)."""
    enc = encode_trace(trace)
    n = enc.n_accesses
    return pd.Series({
        "accesses": n,
        "tensors": enc.n_tensors,
        "working_set_mb": float(enc.tensor_bytes.sum()) / 2**20,
        "traffic_mb": float(enc.access_bytes.sum()) / 2**20,
        "largest_tensor_mb": float(enc.tensor_bytes.max()) / 2**20 if n else 0.0,
        "reuse_share_pct": 100.0 * (n - enc.n_tensors) / n if n else 0.0,
    }, dtype=object)


def summarize_all(traces: dict) -> pd.DataFrame:
    """``summarize`` of several traces, one row per name: {name: trace} -> DataFrame."""
    return pd.DataFrame({name: summarize(trace) for name, trace in traces.items()}).T
