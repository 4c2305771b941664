"""A trace encoded once into integer-coded arrays: what the simulator, sweeps, bounds and learners run on."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from lab.compiled import kernel_array
from lab.trace.kernels import (NEVER, encode_sizes, factorize_dense, next_access_positions,
                               previous_access_positions)
from lab.trace.schema import REQUIRED_COLUMNS, numeric_column, persist_flags, require_columns, write_flags
from lab.units import MAX_SIZE_MB


@dataclass(frozen=True, eq=False)
class Workload:
    """A validated trace as integer-coded numpy arrays, ready for the compiled kernels.

    ``codes[i]`` is the tensor accessed at access ``i`` (0..n_tensors-1, in
    order of first access); ``tensor_ids[c]`` is the original id of code ``c``;
    ``tensor_bytes[c]`` its size in bytes; ``access_bytes[i]`` the bytes
    access ``i`` touches. ``is_write`` (bool per access) is empty for a trace
    without an ``access`` column; ``is_persist`` (bool per access) is empty
    for a trace without ``persist`` rows. ``next_use`` and ``previous_use`` (the
    position of the same tensor's next or previous access, NEVER = -1 when
    none) are computed on first use. ``trace`` is the DataFrame it was
    encoded from (policies and scorers read extra columns from it).

    Build one with ``encode_trace(trace)``; ``lab.simulate``, sweeps and
    curves accept it in place of the DataFrame, so a trace used many times is
    validated and encoded once.
    """

    codes: np.ndarray  # int64, one per access
    tensor_bytes: np.ndarray  # int64 bytes, one per tensor
    access_bytes: np.ndarray  # int64 bytes of the tensor touched by each access
    is_write: np.ndarray  # bool per access, or empty without an access column
    id_values: object = field(repr=False)  # the distinct ids, or a categorical's categories (see id_positions)
    id_positions: Optional[np.ndarray] = field(default=None, repr=False)  # category of each tensor, categorical ids
    trace: Optional[pd.DataFrame] = field(default=None, repr=False)
    is_persist: np.ndarray = field(default_factory=lambda: np.empty(0, np.bool_), repr=False)  # bool per access
    #   (access == "persist"), or empty when the trace has no persist rows
    no_trace_reason: str = field(default="", repr=False)  # why there is no ``trace`` (for ``column``'s error)

    @functools.cached_property
    def tensor_ids(self) -> np.ndarray:
        """The original id of each tensor code, as a numpy array (built on first use: most runs never need it)."""
        values = np.asarray(self.id_values)
        return values if self.id_positions is None else values[self.id_positions]

    @functools.cached_property
    def next_use(self) -> np.ndarray:
        """Position of the same tensor's next access, per access (int64; NEVER when it is the last)."""
        return next_access_positions(self.codes, self.n_tensors)

    @functools.cached_property
    def previous_use(self) -> np.ndarray:
        """Position of the same tensor's previous access, per access (int64; NEVER on a first access)."""
        return previous_access_positions(self.codes, self.n_tensors)

    @functools.cached_property
    def total_bytes(self) -> int:
        """Bytes touched by all accesses together (int; persist marks are not accesses)."""
        if self.has_persist:
            return int(self.access_bytes[~self.is_persist].sum())
        return int(self.access_bytes.sum())

    @property
    def has_persist(self) -> bool:
        """True when some rows say that their tensor's data must reach DRAM after the trace (``persist``)."""
        return self.is_persist.shape[0] == self.codes.shape[0] and self.codes.shape[0] > 0

    @functools.cached_property
    def n_persist(self) -> int:
        """Rows of the trace that are persist marks, not data accesses."""
        return int(np.count_nonzero(self.is_persist)) if self.has_persist else 0

    @property
    def has_writes(self) -> bool:
        """True when the trace says which accesses read and which write (an ``access`` column)."""
        return self.is_write.shape[0] == self.codes.shape[0] and self.codes.shape[0] > 0

    @property
    def n_accesses(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_tensors(self) -> int:
        return int(self.tensor_bytes.shape[0])

    def memo(self, key: str, compute):
        """``compute()``, computed once per workload and kept under ``key`` (for arrays derived from the trace
        that several runs need, e.g. a policy's precomputed priorities)."""
        cache = self.__dict__.setdefault("_memo", {})
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    def column(self, name: str, hint: str = "") -> np.ndarray:
        """Per-access float64 values of the trace's column ``name`` (validated once, then cached).

        ValueError when the column is missing (with ``hint``) or holds non-numbers or NaN.
        """
        cache = self.__dict__.setdefault("_columns", {})
        if name not in cache:
            if self.trace is None:
                raise ValueError(f"column {name!r} cannot be read: {self.no_trace_reason}" if self.no_trace_reason
                                 else f"this workload keeps no trace to read column {name!r} from")
            require_columns(self.trace, [name], hint=hint)
            cache[name] = kernel_array(numeric_column(self.trace, name), np.float64)
        return cache[name]


def _factorize_ids(ids: pd.Series):
    """Codes in order of first access (-1 for a missing id), the distinct ids, and for categorical ids
    the category of each distinct id (then the second value holds the categories)."""
    if isinstance(ids.dtype, pd.CategoricalDtype):  # already coded: factorize the small integer codes
        categorical = ids.array
        codes, used = pd.factorize(categorical.codes, sort=False)
        return (categorical.codes, None, None) if (used < 0).any() else (codes, categorical.categories, used)
    if ids.dtype.kind in "iu" and len(ids):
        values = ids.to_numpy()
        low, high = int(values.min()), int(values.max())
        if high - low < 8 * len(values) + 1024 and high < 2**63:  # dense enough for a direct-address table
            codes, first = factorize_dense(kernel_array(values, np.int64), low, high - low + 1)
            return codes, values[first], None
    if ids.dtype == object and len(ids):
        kind = pd.api.types.infer_dtype(ids, skipna=True)
        if kind in ("mixed", "mixed-integer", "mixed-integer-float") or kind == "boolean":
            odd = next((v for v in ids if isinstance(v, (bool, np.bool_)) or not isinstance(v, (str, int, np.integer))),
                       ids.iloc[0])  # the first value that is neither a string nor an integer
            raise ValueError(f"column 'tensor_id' must hold strings or integers of one type (got {kind} values, among "
                             f"them {type(odd).__name__} {odd!r}): ids such as 1, 1.0 and True would be one tensor")
    codes, uniques = pd.factorize(ids, sort=False)
    return codes, uniques, None


def encode_trace(trace) -> Workload:
    """Validate a trace and encode it once as a ``Workload`` (a Workload passes through unchanged).

    Takes a trace DataFrame (see ``lab.trace.schema``). Raises ValueError when
    a required column is missing, a ``tensor_id`` is missing, a ``size_mb``
    is NaN, infinite, zero, negative or above MAX_SIZE_MB, one tensor id
    appears with two different sizes, or an ``access`` is neither read nor write.
    """
    if isinstance(trace, Workload):
        return trace
    require_columns(trace, REQUIRED_COLUMNS)
    duplicated = sorted({str(c) for c in trace.columns[trace.columns.duplicated()]})
    if duplicated:
        raise ValueError(f"trace has duplicated column(s) {duplicated}: which one holds the data is ambiguous")
    if not trace.index.is_unique:
        raise ValueError("trace has a duplicated index (rows must be distinct accesses in order): "
                         "use trace.reset_index(drop=True)")
    codes, id_values, id_positions = _factorize_ids(trace["tensor_id"])
    if codes.size and codes.min() < 0:
        row = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(f"column 'tensor_id' has missing values (first at row {row}); every access needs a tensor id")
    codes = kernel_array(codes, np.int64)
    size_mb = numeric_column(trace, "size_mb")
    n_tensors = int(codes.max()) + 1 if codes.size else 0
    access_bytes, tensor_bytes, bad_row, mismatch_row = encode_sizes(codes, kernel_array(size_mb, np.float64),
                                                                     n_tensors, MAX_SIZE_MB)
    if bad_row != NEVER:
        bad = ~np.isfinite(size_mb) | (size_mb <= 0) | (size_mb > MAX_SIZE_MB)
        raise ValueError(
            f"column 'size_mb' must be finite and in (0, {MAX_SIZE_MB:g}] MB; "
            f"{int(bad.sum())} bad value(s), first at row {bad_row}: {float(size_mb[bad_row])!r}"
        )
    if mismatch_row != NEVER:
        tid = trace["tensor_id"].iloc[mismatch_row]
        sizes = sorted(set(size_mb[codes == codes[mismatch_row]].tolist()))
        raise ValueError(
            f"tensor_id {tid!r} appears with different sizes {sizes[:5]} MB (first mismatch at row {mismatch_row}); "
            "a tensor's size must be the same on every access"
        )
    total = float(access_bytes.sum(dtype=np.float64))
    if total > MAX_TOTAL_BYTES:
        raise ValueError(f"the trace's accesses touch {total:.3g} bytes in all, more than lab counts exactly "
                         f"(2**62 bytes, 4 EiB, so that reads + writes fit int64): check column 'size_mb'")
    return Workload(codes=codes, tensor_bytes=tensor_bytes, access_bytes=access_bytes,
                    is_write=kernel_array(write_flags(trace), np.bool_), id_values=id_values,
                    id_positions=id_positions, trace=trace, is_persist=kernel_array(persist_flags(trace), np.bool_))


MAX_TOTAL_BYTES = 2**62  # bytes of all accesses together: reads + writes of a run then fit int64


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
