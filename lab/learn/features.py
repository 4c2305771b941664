"""Online features of each access, and the optimum's labels, for the learned eviction scorer.

``access_features(trace)`` computes, per access, only from the access itself
and the accesses before it (never the future): the learned scorer's inputs.
``optimum_labels(trace, capacity_mb)`` reads the future: the next-use
distance and whether the optimum keeps the tensor until then (training only).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from lab.bounds.optimal import optimal
from lab.checks import check_positive_mb
from lab.compiled import kernel, kernel_array
from lab.sim.simulate import simulate
from lab.trace.schema import column_or
from lab.trace.workload import NEVER, Workload, encode_trace

# Optional trace columns the features read, and the features each one gives. A model records those present in
# every training trace and requires them at prediction.
SOURCE_COLUMNS = ("access", "kind", "op", "module", "layer", "phase", "dtype", "shape", "stride", "expert",
                  "token_group")
CATEGORICAL = ("kind", "op", "module_leaf", "phase", "dtype")  # string features, coded by a fitted vocabulary
ALWAYS = ("log2_size", "log2_since_previous", "log2_bytes_since_previous", "log2_previous_gap", "log2_count",
          "first_access", "log2_position", "step_position")
FROM_COLUMN = {
    "access": ("is_write", "previous_wrote"),
    "kind": ("kind",),
    "op": ("op",),
    "module": ("module_leaf", "module_depth"),
    "layer": ("layer", "layer_fraction"),
    "phase": ("phase", "phase_index", "phase_progress"),
    "dtype": ("dtype",),
    "shape": ("ndim", "log2_last_dim"),
    "stride": ("stride",),
    "expert": ("expert",),
    "token_group": ("token_group",),
}
# Above this many accesses the labels come from Belady's decisions rather than the optimum's flow (its solver's
# time grows faster than the trace: see lab.bounds.optimal.MAX_FLOW_ACCESSES).
MAX_OPTIMUM_ACCESSES = 200_000
LABEL_METHODS = ("auto", "optimum", "belady")  # how optimum_labels labels: see there


def feature_names(columns) -> list[str]:
    """The feature names computed for a trace holding ``columns`` (see FROM_COLUMN), in matrix order."""
    names = list(ALWAYS)
    for column in SOURCE_COLUMNS:
        if column in columns:
            names.extend(FROM_COLUMN[column])
    return names


def _log2p(values: np.ndarray) -> np.ndarray:
    return np.log2(1.0 + values)


def _codes_and_uniques(series: pd.Series):
    """(code per row, int64, -1 when missing; distinct values as strings): string work then runs once per
    distinct value."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy(np.int64)
        return kernel_array(codes, np.int64), pd.Index(np.asarray(series.cat.categories, dtype=object).astype(str))
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return kernel_array(codes, np.int64), pd.Index(np.asarray(uniques, dtype=object).astype(str))


def _numeric(trace: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(trace[column], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return values


@kernel
def _history(codes, access_bytes, is_write, n_tensors, out, previous_wrote_column):
    """Fill columns 0-7 of ``out`` (ALWAYS, in order) and, when ``previous_wrote_column`` >= 0, whether the
    previous access wrote the tensor (NaN on a first access), from the past only: log2 bytes, log2(1 +
    accesses since the tensor's previous access), log2(1 + bytes accessed in between), log2(1 + the gap
    before that), log2(access count so far), first access (0/1), log2(1 + position), position / length."""
    n = codes.shape[0]
    last = np.full(n_tensors, -1, np.int64)
    last_gap = np.full(n_tensors, np.nan)
    bytes_after_last = np.zeros(n_tensors)
    count = np.zeros(n_tensors)
    last_wrote = np.zeros(n_tensors)
    has_writes = is_write.shape[0] > 0
    before = 0.0  # bytes accessed before access i
    inv_n = 1.0 / max(n, 1)
    for i in range(n):
        c = codes[i]
        p = last[c]
        count[c] += 1.0
        out[i, 0] = np.log2(max(access_bytes[i], 1.0))
        out[i, 4] = np.log2(count[c])
        out[i, 6] = np.log2(1.0 + i)
        out[i, 7] = i * inv_n
        if p >= 0:
            gap = i - p
            out[i, 1] = np.log2(1.0 + gap)
            out[i, 2] = np.log2(1.0 + before - bytes_after_last[c])
            out[i, 3] = np.log2(1.0 + last_gap[c])
            out[i, 5] = 0.0
            if previous_wrote_column >= 0:
                out[i, previous_wrote_column] = last_wrote[c] if has_writes else np.nan
            last_gap[c] = gap
        else:
            out[i, 1] = np.nan
            out[i, 2] = np.nan
            out[i, 3] = np.nan
            out[i, 5] = 1.0
            if previous_wrote_column >= 0:
                out[i, previous_wrote_column] = np.nan
        last[c] = i
        before += access_bytes[i]
        bytes_after_last[c] = before
        if has_writes:
            last_wrote[c] = 1.0 if is_write[i] else 0.0


@kernel
def _take(out, column, codes, table, missing):
    """out[i, column] = table[codes[i]], or ``missing`` where the code is negative (a missing value)."""
    for i in range(codes.shape[0]):
        c = codes[i]
        out[i, column] = table[c] if c >= 0 else missing


@kernel
def _put(out, column, values, scale):
    """out[i, column] = values[i] * scale."""
    for i in range(values.shape[0]):
        out[i, column] = values[i] * scale


@kernel
def _phases(out, index_column, progress_column, codes):
    """How many phase changes so far, and the progress in the phase as a share of the first phase's length
    (NaN during the first phase: its length is not known yet)."""
    n = codes.shape[0]
    first_length = -1
    for i in range(1, n):
        if codes[i] != codes[i - 1]:
            first_length = i
            break
    changes = 0
    start = 0
    for i in range(n):
        if i > 0 and codes[i] != codes[i - 1]:
            changes += 1
            start = i
        out[i, index_column] = changes
        out[i, progress_column] = (i - start) / first_length if changes > 0 else np.nan


def access_features(trace, categories: Optional[dict] = None, workload: Optional[Workload] = None
                    ) -> tuple[np.ndarray, list[str], dict]:
    """The online features of every access: a float32 matrix (one row per access, C order), the feature names
    and the string values of the categorical features.

    Each feature of access i depends only on accesses 0..i: the tensor's size
    (log2 bytes), the time since its previous access (accesses, and bytes
    accessed in between; NaN on a first access), the gap before that one, its
    access count so far, whether this is its first access, the position in the
    trace (log2, and as a share of the step's length ``step_position``: the
    length of a step is known before it runs, a training loop repeats it),
    and where the columns exist: read or write and whether its
    previous access wrote it (``access``), ``kind``, ``op``, the module's last
    path component and depth (``module``), ``layer`` and the layer as a share
    of the model's depth (its deepest layer: static, known before the run), ``phase``, how many phase changes so far
    and the progress in the phase as a share of the first phase's length (NaN
    during the first phase), ``dtype``, the shape's rank and last dimension
    (log2, ``shape``), and the generator's ``stride``, ``expert`` and
    ``token_group``. Per-access work runs in compiled kernels on integer codes; string work runs once per
    distinct value.

    ``categories`` maps each categorical feature to its vocabulary (a list of
    strings; a value outside it is coded -1, missing): pass a fitted model's
    to code a new trace as in training; None codes by the trace's own sorted
    values. ``workload``: the trace already encoded (``lab.encode_trace``), to skip encoding it again.
    Returns (matrix, names, {categorical feature: its distinct values in the trace}).
    """
    if isinstance(trace, Workload):
        workload, frame = trace, trace.trace
    else:
        frame = trace
        workload = workload if workload is not None else encode_trace(trace)
    n = workload.n_accesses
    columns = frame.columns
    names = feature_names(columns)
    at = {name: j for j, name in enumerate(names)}
    matrix = np.empty((n, len(names)), dtype=np.float32)
    is_write = workload.is_write if workload.has_writes else np.empty(0, np.bool_)
    _history(workload.codes, workload.access_bytes.astype(np.float64), is_write, workload.n_tensors, matrix,
             at.get("previous_wrote", -1))
    if "access" in columns:
        _put(matrix, at["is_write"], column_or(workload, "is_write", False, np.bool_), 1.0)
    strings = {}  # categorical feature -> (code per row, -1 when missing; its distinct values as strings)
    for column in ("kind", "op", "phase", "dtype"):
        if column in columns:
            strings[column] = _codes_and_uniques(frame[column])
    if "module" in columns:
        codes, uniques = _codes_and_uniques(frame["module"])
        leaf = uniques.str.rsplit(".", n=1).str[-1].str.replace(r"\d+", "#", regex=True)
        leaf_codes, leaves = pd.factorize(pd.Index(leaf))
        leaf_of = kernel_array(leaf_codes, np.int64)
        strings["module_leaf"] = (_lookup(codes, leaf_of), pd.Index(np.asarray(leaves, dtype=object).astype(str)))
        depth = uniques.str.count(r"\.").to_numpy(np.float64) + (uniques.str.len().to_numpy() > 0)
        _take(matrix, at["module_depth"], codes, kernel_array(depth, np.float64), np.nan)
    if "layer" in columns:
        layer = kernel_array(_numeric(frame, "layer"), np.float64)
        deepest = np.nanmax(layer) if n and not np.isnan(layer).all() else 0.0  # the model's depth: static
        _put(matrix, at["layer"], layer, 1.0)
        _put(matrix, at["layer_fraction"], layer, 1.0 / deepest if deepest > 0 else np.nan)
    if "phase" in columns:
        _phases(matrix, at["phase_index"], at["phase_progress"], strings["phase"][0])
    if "shape" in columns:
        codes, uniques = _codes_and_uniques(frame["shape"])
        dims = uniques.str.findall(r"\d+")
        ndim = dims.str.len().to_numpy(np.float64)
        last = np.array([float(d[-1]) if len(d) else 1.0 for d in dims], dtype=np.float64)  # per distinct shape
        _take(matrix, at["ndim"], codes, kernel_array(ndim, np.float64), np.nan)
        _take(matrix, at["log2_last_dim"], codes, kernel_array(_log2p(last), np.float64), np.nan)
    for column in ("stride", "expert", "token_group"):
        if column in columns:
            _put(matrix, at[column], kernel_array(_numeric(frame, column), np.float64), 1.0)
    vocab = categories or {}
    for name in CATEGORICAL:
        if name in strings:
            codes, uniques = strings[name]
            known = pd.Index(vocab[name] if name in vocab else sorted(uniques))
            position = kernel_array(known.get_indexer(uniques), np.float64)  # -1 outside the vocabulary
            _take(matrix, at[name], codes, position, -1.0)
    return matrix, names, {name: list(uniques) for name, (_, uniques) in strings.items()}


def _lookup(codes: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table[codes], -1 where a code is -1."""
    if len(table) == 0:
        return np.full(len(codes), -1, np.int64)
    return np.where(codes >= 0, table[np.maximum(codes, 0)], -1)


def optimum_labels(trace, capacity_mb: float, method: str = "auto") -> pd.DataFrame:
    """What the optimum does with each access's tensor at ``capacity_mb`` MB (MiB): labels from the future,
    for training only.

    Returns a DataFrame, one row per access: ``next_use_distance`` (accesses
    until the tensor's next access; NaN when none), ``kept`` (the share of the
    tensor the optimum keeps on chip until its next access, in [0, 1]; 0 when
    there is no next access or the next access overwrites it) and ``evict``
    (1 - kept: the target of the learned scorer, higher = evict first).
    ``method``: ``"optimum"`` (the flow of ``lab.optimal``: its byte-granular
    ``kept_fraction``), ``"belady"`` (Belady's MIN in ``lab.simulate``: kept
    when the next access hits) or ``"auto"`` (the optimum up to
    MAX_OPTIMUM_ACCESSES accesses, else Belady). Raises ValueError for a bad
    capacity or method.
    """
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    if method not in LABEL_METHODS:
        raise ValueError(f"method must be one of {list(LABEL_METHODS)}, got {method!r}")
    workload = encode_trace(trace)
    n = workload.n_accesses
    next_use = workload.next_use
    has_next = next_use != NEVER
    kept = np.zeros(n, dtype=np.float64)
    if method == "optimum" or (method == "auto" and n <= MAX_OPTIMUM_ACCESSES):
        # the flow's byte-granular kept fractions: no integer program needed
        plan = optimal(workload, capacity_mb, method="flow", progress=False).plan
        kept[plan["start"].to_numpy()] = plan["kept_fraction"].to_numpy()
    else:
        hit = np.asarray(simulate(workload, "Belady", capacity_mb).hit, dtype=bool)
        reads_next = np.ones(n, bool) if workload.is_write.size == 0 else ~workload.is_write
        ends = np.where(has_next, next_use, 0)
        kept = np.where(has_next & hit[ends] & reads_next[ends], 1.0, 0.0)
    distance = np.where(has_next, next_use - np.arange(n), np.nan).astype(np.float64)
    return pd.DataFrame({"next_use_distance": distance, "kept": kept, "evict": 1.0 - kept})
