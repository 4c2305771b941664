"""Ops of a trace: which rows belong to which kernel-level op, and one row of per-op values per op.

A capture records ``op_index`` (and the other ``OP_COLUMNS`` of
``lab.trace.schema``) on every row of an op. A trace without it (a generated
one) gets op boundaries from its data flow: a new op starts at each read that
follows a write, since an op reads its inputs and then writes its outputs
(``heuristic_op_index``; it merges a write-only op, a fill, into the next op).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lab.trace.schema import OP_COLUMN_DEFAULTS, column_or, numeric_column
from lab.units import BYTES_PER_MB

# Ops computed as tiled matrix products: GEMMs, and convolutions as implicit GEMMs (activations x filters).
GEMM_OPS = ("aten.addmm", "aten.mm", "aten.bmm", "aten.linear", "aten.matmul", "aten.baddbmm", "aten.convolution")
# Ops whose shapes give the matrix product's M x N x K directly (a convolution's do not: implicit GEMM).
MATRIX_OPS = GEMM_OPS[:-1]
NO_OP = -1  # op_index of a row that belongs to no op (a persist mark)
# The columns op_table reads: equal content in these, equal tables.
OP_TABLE_COLUMNS = ("op_index", "flops", "launches", "host_calls", "grad_mode", "op", "dtype", "shape", "phase",
                    "layer", "module", "access", "size_mb")


def heuristic_op_index(is_write: np.ndarray) -> np.ndarray:
    """Op index per access from data flow alone: a new op starts at each read that follows a write (int64,
    0-based, non-decreasing)."""
    starts = np.zeros(is_write.shape[0], np.int64)
    if is_write.shape[0] > 1:
        starts[1:] = (~is_write[1:]) & is_write[:-1]
    return np.cumsum(starts)


def has_op_index(trace) -> bool:
    """Whether ``trace`` (a DataFrame) records its ops (an ``op_index`` column, as captures do)."""
    return isinstance(trace, pd.DataFrame) and "op_index" in trace.columns


def op_index_of(trace: pd.DataFrame, fill: bool = False) -> np.ndarray:
    """The op of each row of ``trace`` (int64): the ``op_index`` column when the trace has it (``NO_OP``, -1, on
    rows of no op), else ``heuristic_op_index`` of its ``access`` column (every row in an op; a trace without
    ``access`` is one op).

    ``fill=True`` gives a row of no op the index of the op before it (0 before the first): a non-decreasing
    index for the models that key on op order (the hardware cache's allocator and sweeps).

    Raises ValueError naming the column when ``op_index`` holds non-integers, values below -1, or ops out of
    trace order (an op's index must not be smaller than an earlier op's).
    """
    if "op_index" not in trace.columns:
        return heuristic_op_index(column_or(trace, "access", "read", object) == "write")
    values = numeric_column(trace, "op_index")
    if not np.array_equal(values, np.round(values)) or (values.shape[0] and values.min() < NO_OP):
        bad = int(np.flatnonzero((values != np.round(values)) | (values < NO_OP))[0])
        raise ValueError(f"column 'op_index' must hold integers >= {NO_OP} (-1: a row of no op); row {bad} is "
                         f"{trace['op_index'].iloc[bad]!r}")
    op = values.astype(np.int64)
    in_op = op[op >= 0]
    if in_op.shape[0] > 1 and (np.diff(in_op) < 0).any():
        rows = np.flatnonzero(op >= 0)
        bad = int(rows[np.flatnonzero(np.diff(in_op) < 0)[0] + 1])
        raise ValueError(f"column 'op_index' must number ops in trace order (non-decreasing); row {bad} has op "
                         f"{op[bad]} after op {int(np.max(op[:bad]))}")
    if fill:
        op = np.maximum.accumulate(np.maximum(op, 0)) if op.shape[0] else op
    return op


def op_positions(trace: pd.DataFrame) -> np.ndarray:
    """The row of ``op_table(trace)`` each row of ``trace`` belongs to (int32; -1 for a row of no op): the rank of
    its ``op_index_of`` among the trace's ops."""
    op = op_index_of(trace)
    position = np.full(op.shape[0], -1, np.int32)
    in_op = op >= 0
    position[in_op] = np.unique(op[in_op], return_inverse=True)[1].reshape(-1)
    return position


def repeat_steps(trace: pd.DataFrame, steps: int) -> pd.DataFrame:
    """``trace`` run ``steps`` times in a row (an integer >= 1): the same tensors (what one step leaves on chip can
    serve the next), ``op_index`` numbering the ops of every step in order (a step's ops after the previous
    step's; ``NO_OP`` rows stay -1), and a ``step`` column (0-based). A trace without ``op_index`` gets its
    ``op_index_of`` per step, so that no op spans two steps."""
    op = op_index_of(trace)
    span = int(op.max()) + 1 if op.shape[0] and op.max() >= 0 else 0
    parts = []
    for step in range(steps):
        part = trace.copy()
        part["op_index"] = np.where(op >= 0, op + step * span, NO_OP).astype(np.int64)
        part["step"] = np.int64(step)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def row_bytes(trace: pd.DataFrame) -> np.ndarray:
    """Bytes of each row's access (int64: ``size_mb`` * 2**20, rounded, as the simulator counts them)."""
    return np.rint(numeric_column(trace, "size_mb") * BYTES_PER_MB).astype(np.int64)


_FLOAT_DTYPE = r"^(?:torch\.)?(?:b?float|half|double|f\d|bf\d)"


def _dims(shapes: pd.Series) -> pd.Series:
    """Each shape (``(512, 768)`` as captures write it, or a tuple) as a tuple of ints."""
    return shapes.astype(str).str.findall(r"\d+").map(lambda d: tuple(int(x) for x in d))


def op_table(trace: pd.DataFrame) -> pd.DataFrame:
    """One row per op of ``trace`` (each ``op_index`` >= 0, see ``op_index_of``), in op order, indexed by
    ``op_index``.

    Per-op values are the op's first row's: ``op`` (its name, "" without the column), ``flops``, ``launches``,
    ``host_calls``, ``grad_mode`` (``OP_COLUMN_DEFAULTS`` when the trace lacks the column), and ``phase``,
    ``layer``, ``module`` when the trace has them. ``dtype``: the dtype of the op's first floating-point row
    (which peak rate applies; its first row's otherwise, "" without the column). Sums over the op's rows:
    ``rows``, ``read_bytes`` and ``write_bytes`` (int64; persist rows move nothing). ``misaligned``: a matrix
    product (``MATRIX_OPS``) with an operand whose innermost dimension is not a multiple of 8 elements (cuBLAS then
    runs a slower fallback kernel). ``gemm_m``, ``gemm_n`` (int64, 0 for other ops): the rows and columns of a
    matrix product's output (its shape's last two dimensions), for the tile re-reads of ``lab.sim.timing``.
    """
    op = op_index_of(trace)
    keep = op >= 0
    frame = pd.DataFrame({"op_index": op[keep]})
    size = row_bytes(trace)[keep]
    access = column_or(trace, "access", "read", object)[keep]
    frame["read_bytes"] = np.where(access == "read", size, 0)
    frame["write_bytes"] = np.where(access == "write", size, 0)
    frame["rows"] = 1
    group = frame.groupby("op_index", sort=True)
    table = group[["rows", "read_bytes", "write_bytes"]].sum()
    first = ~pd.Series(op[keep]).duplicated().to_numpy()
    rows = trace[keep][first]
    table["op"] = rows["op"].astype(str).to_numpy() if "op" in trace.columns else ""
    for name, default in OP_COLUMN_DEFAULTS.items():
        if name in trace.columns:
            table[name] = rows[name].to_numpy()
        else:
            table[name] = default
    table = table.astype({"flops": np.float64, "launches": np.int64, "host_calls": np.int64, "grad_mode": np.bool_})
    for name in ("phase", "layer", "module"):
        if name in trace.columns:
            table[name] = rows[name].to_numpy()
    table["dtype"] = ""
    table["misaligned"] = False
    table["gemm_m"] = np.int64(0)
    table["gemm_n"] = np.int64(0)
    if "dtype" in trace.columns:
        dtypes = trace["dtype"][keep].astype(str)
        floating = dtypes.str.contains(_FLOAT_DTYPE, regex=True).to_numpy()
        by_op = pd.Series(dtypes.to_numpy()[floating], index=op[keep][floating])
        table["dtype"] = dtypes.to_numpy()[first]
        chosen = by_op[~by_op.index.duplicated()]
        table.loc[chosen.index, "dtype"] = chosen.to_numpy()
    if "op" in trace.columns and "shape" in trace.columns:
        matrix = np.isin(trace["op"].astype(str).to_numpy(), MATRIX_OPS) & keep
        if matrix.any():
            dims = _dims(trace["shape"][matrix])
            two_d = dims.map(len).to_numpy() >= 2
            last = dims.map(lambda d: d[-1] if d else 0).to_numpy()
            misaligned = pd.Series(two_d & (last % 8 != 0)).groupby(op[matrix]).any()
            table.loc[misaligned.index, "misaligned"] = misaligned.to_numpy()
            is_write = column_or(trace, "access", "read", object)[matrix] == "write"
            out = pd.DataFrame({"op": op[matrix], "m": dims.map(lambda d: d[-2] if len(d) >= 2 else 0).to_numpy(),
                                "n": last})[is_write & two_d]
            out = out[~out["op"].duplicated()].set_index("op")
            table.loc[out.index, "gemm_m"] = out["m"].to_numpy()
            table.loc[out.index, "gemm_n"] = out["n"].to_numpy()
    return table
