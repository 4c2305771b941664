"""The trace format: validation and integer coding of a trace DataFrame.

A trace is a pandas DataFrame with one row per tensor access, in access order.
Required columns: ``tensor_id`` (str or int) and ``size_mb`` (float > 0, MB =
MiB = 2**20 bytes). Optional columns: ``reuse_distance``, ``stride``, ``op``,
``model_type``, ``eviction_score``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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
    tensor_ids: np.ndarray  # original ids, one per tensor
    tensor_bytes: np.ndarray  # int64 bytes, one per tensor

    @property
    def n_accesses(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_tensors(self) -> int:
        return int(self.tensor_bytes.shape[0])

    @property
    def access_bytes(self) -> np.ndarray:
        """Bytes of the tensor touched by each access (int64, one per access)."""
        return self.tensor_bytes[self.codes]


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
    values = pd.to_numeric(trace[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"column {column!r} must hold numbers (no NaN); "
            f"{int(bad.sum())} bad value(s), first at row {row}: {trace[column].iloc[row]!r}"
        )
    return values


def encode_trace(trace: pd.DataFrame) -> EncodedTrace:
    """Validate a trace and code its tensor ids as integers.

    Takes a trace DataFrame (see module docstring). Returns an EncodedTrace.
    Raises ValueError when a required column is missing, a ``tensor_id`` is
    missing, a ``size_mb`` is NaN, infinite, zero, negative or above
    MAX_SIZE_MB, or one tensor id appears with two different sizes.
    """
    require_columns(trace, REQUIRED_COLUMNS)
    ids = trace["tensor_id"]
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise ValueError(f"column 'tensor_id' has missing values (first at row {row}); every access needs a tensor id")
    size_mb = numeric_column(trace, "size_mb")
    bad = ~np.isfinite(size_mb) | (size_mb <= 0) | (size_mb > MAX_SIZE_MB)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"column 'size_mb' must be finite and in (0, {MAX_SIZE_MB:g}] MB; "
            f"{int(bad.sum())} bad value(s), first at row {row}: {float(size_mb[row])!r}"
        )
    codes, tensor_ids = pd.factorize(ids, sort=False)
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    access_bytes = mb_to_bytes(size_mb)
    tensor_bytes = np.zeros(len(tensor_ids), dtype=np.int64)
    tensor_bytes[codes] = access_bytes  # last size seen per tensor
    mismatch = tensor_bytes[codes] != access_bytes
    if mismatch.any():
        row = int(np.flatnonzero(mismatch)[0])
        tid = ids.iloc[row]
        sizes = sorted(set(size_mb[codes == codes[row]].tolist()))
        raise ValueError(
            f"tensor_id {tid!r} appears with different sizes {sizes[:5]} MB (first mismatch at row {row}); "
            "a tensor's size must be the same on every access"
        )
    return EncodedTrace(codes=codes, tensor_ids=np.asarray(tensor_ids), tensor_bytes=tensor_bytes)
