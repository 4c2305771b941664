"""The hardware-cache buffer model: a trace of whole-tensor accesses as a GPU's L2 sees it.

``lab.simulate(..., buffer="cache")`` replays a trace through this model
instead of the liveness-aware scratchpad (``buffer="scratchpad"``, the
default). The trace is transformed, then run through the same policy engine
(``lab.sim.engine``) with liveness switched off:

1. Addresses (``assign_addresses``). A hardware cache sees addresses, not
   tensors. Tensors first read (weights, inputs, buffers) live at fixed
   addresses for the whole step. Tensors first written (activations) are
   allocated by a model of PyTorch's caching allocator: at their first write,
   best fit among freed ranges (split, adjacent free ranges merged), else at
   the top of the pool; freed when the op after their last access allocates
   its output (an op's inputs stay allocated while it writes). Sizes are
   rounded up to ``alignment`` bytes (512, as the CUDA caching allocator
   does). A later activation therefore often reuses the lines of a dead one:
   its writes hit dirty lines still in the cache and coalesce, with no extra
   writeback, as on the GPU. A view id written ``base[bytes a:b]`` (how
   captures name views) addresses bytes a..b of ``base``.
2. Lines (``line_trace``). Each access becomes accesses to the
   ``line_bytes`` blocks of the address range it touches. The GPU's L2 line
   is 128 bytes (32-byte sectors); a block is a run of consecutive lines that
   a kernel sweeping a tensor touches together, so LRU or FIFO over blocks
   equals the same policy over lines except at a tensor's first and last
   block (the five H200 cases move by < 0.5 % between 1 KiB and 16 KiB).
   Default 4 KiB, to keep the number of simulated accesses ~ bytes / 4096.
3. Sweeps (``CacheModel.interleave``). A kernel reads and writes its
   operands together, not one after the other: the line accesses of one op
   (the reads, then the writes, of consecutive trace rows) are interleaved
   in proportion to each line's position in its operand. An elementwise op
   on a 48 MiB tensor thus competes with its own 48 MiB output for the
   cache, as on the GPU.
4. Tiling (``gemm_rereads``). A GEMM (``op`` in ``GEMM_OPS``) whose larger
   matrix operand does not fit in ``panel_fraction`` of the cache is blocked
   by the library into panels that do (L2-aware rasterization: the tiles in
   flight share one panel of the larger operand), and the smaller operand is
   swept past each panel: ``ceil(larger / (panel_fraction * capacity)) - 1``
   extra reads of the smaller operand. They become extra line accesses of
   that operand within the op's sweep, so the cache decides which miss.
   Convolutions count as implicit GEMMs (activations x filters). Fused
   attention is not expanded: a flash-attention kernel re-reads K and V of
   one (batch, head) per block of queries, s x d elements (256 KiB at 1,024
   tokens, d = 64, bf16), which stay cached below ~100k tokens, so it reads
   Q, K and V once, as the trace records.
5. The cache (``lab.sim.engine`` with ``liveness=False``): write-back,
   write-allocate without a fetch (L2 sectors carry byte masks: a full write
   fetches nothing), no knowledge of liveness (a dirty line is written back
   when evicted, or at the end of the trace with ``flush_at_end``, whether
   or not it is used again), ``effective_fraction`` of ``capacity_mb`` under
   the chosen replacement policy. NVIDIA does not document the L2's
   replacement; FIFO (a hit does not protect a line) reproduces the H200's
   writes, LRU does not at small batch: it keeps the recycled activation
   lines of GPT-2 batch 1 resident for the whole step (0.39x the measured
   writes) while the GPU writes ~5 MiB of them back per layer as the weights
   stream through.

Every number this model produces is named by ``CacheModel``'s fields: the
line size, effective capacity, allocator alignment and GEMM panel share,
all physical quantities, and the replacement policy; never a per-model or
per-case factor.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.checks import check_bool, check_memory, check_number, check_power_of_two
from lab.compiled import kernel
from lab.trace.ops import GEMM_OPS, has_op_index, op_index_of, op_positions
from lab.trace.schema import column_or
from lab.trace.workload import Workload
from lab.units import BYTES_PER_MB

_VIEW = r"^(?P<base>.*)\[bytes (?P<lo>\d+):(?P<hi>\d+)\]$"


@dataclass(frozen=True)
class CacheModel:
    """Physical parameters of the hardware cache (``buffer="cache"``).

    - ``line_bytes``: bytes per simulated block (default 4096: 32 lines of
      128 B swept together; a power of two from 128 B to 1 MiB).
    - ``effective_fraction``: the share of ``capacity_mb`` that holds
      distinct lines (default 2/3: the 60 MB of an H200 act as 40 MB). The
      H100/H200 L2 is two partitions joined by a crossbar, and a line that SMs
      of both halves read can be held in both ("NVIDIA H100 Tensor Core GPU
      Architecture" white paper, 2022; Chips and Cheese, "Nvidia's H100:
      Funny L2, and Tons of Bandwidth", 2023). 2/3 is the one value fitted to
      the five H200 cases in ``ground_truth/h200`` (the same for all).
    - ``alignment``: bytes to which the allocator rounds each allocation
      (512, PyTorch's CUDA caching allocator; a power of two up to 1 GiB).
    - ``panel_fraction``: the share of the cache a GEMM library keeps for one
      panel of its larger operand while it sweeps the smaller one past it
      (0.5: the other half holds the swept operand's tiles and the output).
    - ``tiling``: False to skip the GEMM re-read model (whole operands are
      then read once per GEMM, as the trace says).
    - ``interleave``: a kernel sweeps its operands together: the lines of
      one op's reads and writes are interleaved in proportion to their
      position in each operand (True), instead of operand after operand.
    - ``flush_at_end``: write the lines still dirty at the end of the trace
      back (True: the step's results reach DRAM eventually).

    Every field is checked on construction (ValueError naming it; TypeError for
    a switch that is not True or False).
    """

    line_bytes: int = 4096
    effective_fraction: float = 2 / 3
    alignment: int = 512
    panel_fraction: float = 0.5
    tiling: bool = True
    interleave: bool = True
    flush_at_end: bool = True

    def __post_init__(self):
        check_power_of_two("CacheModel.line_bytes", self.line_bytes, MIN_LINE_BYTES, MAX_LINE_BYTES)
        check_power_of_two("CacheModel.alignment", self.alignment, 1, MAX_ALIGNMENT)
        for name in ("effective_fraction", "panel_fraction"):
            value = check_number(f"CacheModel.{name}", getattr(self, name), 0, 1)
            if value == 0:
                raise ValueError(f"CacheModel.{name} must be a number in (0, 1], got {value!r}")
        for name in ("tiling", "interleave", "flush_at_end"):
            check_bool(f"CacheModel.{name}", getattr(self, name))


# The physical ranges of CacheModel's sizes: a line is at least the GPU's 128-byte L2 line, and a block of lines a
# kernel sweeps together at most 1 MiB (the five H200 cases move by < 0.5 % between 1 and 16 KiB); allocators
# align to powers of two up to a huge page (1 GiB).
MIN_LINE_BYTES = 128
MAX_LINE_BYTES = 2**20
MAX_ALIGNMENT = 2**30


def resolve_cache_model(model) -> CacheModel:
    """A CacheModel from None (defaults) or a CacheModel; TypeError naming ``cache_model`` otherwise."""
    if model is None:
        return CacheModel()
    if isinstance(model, CacheModel):
        return model
    raise TypeError(f"cache_model must be a lab.sim.hardware.CacheModel or None, got {type(model).__name__}")


@kernel
def _allocate(size, alloc_order, alloc_op, free_order, free_op, base):
    """Addresses of dynamically allocated tensors under a best-fit caching allocator.

    ``size`` (int64 bytes per tensor, aligned), ``alloc_order`` (tensors in
    order of allocation) with ``alloc_op`` (the op index at which each is
    allocated, non-decreasing), ``free_order`` with ``free_op`` (non-decreasing:
    the op after which each is dead), ``base`` (first address of the pool).
    Before each allocation at op k, every tensor dead after an op < k is freed
    (its range merged with adjacent free ranges). Returns int64 addresses per
    tensor (-1 for tensors not in ``alloc_order``) and the pool's top.
    """
    k = size.shape[0]
    addr = np.full(k, -1, np.int64)
    n = alloc_order.shape[0]
    fstart = np.empty(n + 1, np.int64)
    fsize = np.empty(n + 1, np.int64)
    nf = 0
    top = base
    j = 0
    for a in range(n):
        t = alloc_order[a]
        op = alloc_op[a]
        while j < free_order.shape[0] and free_op[j] < op:
            u = free_order[j]
            j += 1
            if addr[u] < 0:
                continue
            s = addr[u]
            e = s + size[u]
            # merge with free neighbours
            q = 0
            while q < nf:
                if fstart[q] + fsize[q] == s:
                    s = fstart[q]
                    fstart[q] = fstart[nf - 1]
                    fsize[q] = fsize[nf - 1]
                    nf -= 1
                    continue
                if fstart[q] == e:
                    e = fstart[q] + fsize[q]
                    fstart[q] = fstart[nf - 1]
                    fsize[q] = fsize[nf - 1]
                    nf -= 1
                    continue
                q += 1
            if e == top:
                top = s
            else:
                fstart[nf] = s
                fsize[nf] = e - s
                nf += 1
        need = size[t]
        best = -1
        for q in range(nf):
            if fsize[q] >= need and (best < 0 or fsize[q] < fsize[best]):
                best = q
        if best >= 0:
            addr[t] = fstart[best]
            fstart[best] += need
            fsize[best] -= need
            if fsize[best] == 0:
                fstart[best] = fstart[nf - 1]
                fsize[best] = fsize[nf - 1]
                nf -= 1
        else:
            addr[t] = top
            top += need
    return addr, top


def assign_addresses(trace: pd.DataFrame, alignment: int = 512):
    """Byte address range touched by each access of ``trace`` under the allocator model (see the module).

    Returns (lo, hi): int64 per access, the first byte and one past the last.
    """
    ids = trace["tensor_id"].astype(str)
    codes, uniques = pd.factorize(ids, sort=False)
    uniq = pd.Series(uniques)
    view = uniq.str.extract(_VIEW)
    is_view = view["base"].notna().to_numpy()
    base_name = np.where(is_view, view["base"].fillna(""), uniq.to_numpy())
    base_codes, base_uniques = pd.factorize(pd.Series(base_name), sort=False)
    view_lo = np.where(is_view, pd.to_numeric(view["lo"]).fillna(0).to_numpy(), 0).astype(np.int64)
    own_bytes = np.zeros(len(uniques), np.int64)
    row_bytes = np.maximum(np.rint(trace["size_mb"].to_numpy(np.float64) * BYTES_PER_MB).astype(np.int64), 1)
    np.maximum.at(own_bytes, codes, row_bytes)
    view_hi = np.where(is_view, pd.to_numeric(view["hi"]).fillna(0).to_numpy().astype(np.int64), own_bytes)
    view_hi = np.maximum(view_hi, view_lo + 1)
    n_base = len(base_uniques)
    base_size = np.zeros(n_base, np.int64)
    np.maximum.at(base_size, base_codes, view_hi)
    base_size = -(-base_size // alignment) * alignment

    row_base = base_codes[codes]
    is_write = column_or(trace, "access", "read", object) == "write"
    n = len(trace)
    rows = np.arange(n)
    first_row = np.full(n_base, n, np.int64)
    np.minimum.at(first_row, row_base, rows)
    last_row = np.zeros(n_base, np.int64)
    np.maximum.at(last_row, row_base, rows)
    first_write = is_write[first_row]
    op = op_index_of(trace, fill=True)

    # persistent tensors (first access a read): fixed addresses, in order of first access
    persistent = np.flatnonzero(~first_write)
    persistent = persistent[np.argsort(first_row[persistent], kind="stable")]
    addr = np.full(n_base, -1, np.int64)
    offsets = np.concatenate([[0], np.cumsum(base_size[persistent])])
    addr[persistent] = offsets[:-1]
    dynamic = np.flatnonzero(first_write)
    alloc_order = dynamic[np.argsort(first_row[dynamic], kind="stable")]
    free_order = dynamic[np.argsort(op[last_row[dynamic]], kind="stable")]
    dyn_addr, _ = _allocate(base_size, alloc_order.astype(np.int64), op[first_row[alloc_order]],
                            free_order.astype(np.int64), op[last_row[free_order]], np.int64(offsets[-1]))
    addr[dynamic] = dyn_addr[dynamic]
    lo = addr[row_base] + view_lo[codes]
    hi = addr[row_base] + view_hi[codes]
    return lo, hi


def gemm_rereads(trace: pd.DataFrame, capacity_bytes: int, model: CacheModel) -> np.ndarray:
    """Extra full reads of each read access's tensor caused by tiling (int64 per access, 0 for most).

    A GEMM (``op`` in GEMM_OPS) reads two matrix operands (its two largest
    reads whose shape has more than one element per row; a bias is skipped).
    When the larger one does not fit in ``panel_fraction`` of the cache, the
    library blocks it into panels that do (L2-aware rasterization: the tiles
    in flight share one panel of the larger operand) and sweeps the smaller
    operand past each panel: the smaller operand is read ``ceil(larger /
    (panel_fraction * capacity)) - 1`` extra times. The extra reads become
    line accesses of the cache trace, so the cache decides which of them miss.
    """
    n = len(trace)
    extra = np.zeros(n, np.int64)
    if not model.tiling or "op" not in trace or "access" not in trace:
        return extra
    op = trace["op"].astype(str).to_numpy()
    is_write = trace["access"].to_numpy() == "write"
    candidate = np.isin(op, GEMM_OPS) & ~is_write
    if "shape" in trace:
        shape = trace["shape"].astype(str).to_numpy()
        candidate &= np.char.count(shape.astype(str), ",") >= 1  # a matrix: at least two dimensions
    if not candidate.any():
        return extra
    rows = np.flatnonzero(candidate)
    opidx = op_index_of(trace, fill=True)[rows]
    nbytes = np.rint(trace["size_mb"].to_numpy(np.float64)[rows] * BYTES_PER_MB).astype(np.int64)
    order = np.lexsort((-nbytes, opidx))  # per op, largest read first
    rows, opidx, nbytes = rows[order], opidx[order], nbytes[order]
    first = np.ones(rows.shape[0], bool)
    first[1:] = opidx[1:] != opidx[:-1]
    second = np.zeros(rows.shape[0], bool)
    second[1:] = first[:-1] & ~first[1:]
    big = nbytes[np.flatnonzero(second) - 1]
    panel = max(1, int(model.panel_fraction * capacity_bytes))
    extra[rows[second]] = np.maximum(-(-big // panel) - 1, 0)
    return extra


@kernel
def _expand(lo, hi, repeat, is_write, op, line_bytes):
    """Line accesses of each access's byte range [lo, hi), ``1 + repeat`` times (re-reads of tiled operands).

    Returns (line codes int64, is_write bool, key float64, row int64: the access each comes from) in access
    order; ``key`` is the op index plus the
    line's fractional position in its op's sweep (sorting by it interleaves the operands of one op)."""
    n = lo.shape[0]
    total = 0
    for i in range(n):
        total += ((hi[i] - 1) // line_bytes - lo[i] // line_bytes + 1) * (1 + repeat[i])
    codes = np.empty(total, np.int64)
    writes = np.empty(total, np.bool_)
    key = np.empty(total, np.float64)
    row = np.empty(total, np.int64)
    p = 0
    for i in range(n):
        first = lo[i] // line_bytes
        last = (hi[i] - 1) // line_bytes
        count = last - first + 1
        passes = 1 + repeat[i]
        for r in range(passes):
            for b in range(first, last + 1):
                codes[p] = b
                writes[p] = is_write[i]
                row[p] = i
                key[p] = op[i] + 0.999 * (r + (b - first + 0.5) / count) / passes
                p += 1
    return codes, writes, key, row


# Peak bytes per line access while the line trace is built and replayed (codes, writes, sort keys and rows, the
# sort's order and the sorted copies, the workload's access bytes and previous use, the replay's per-access
# outputs) and per line of the address space (its size, id, the policy's and the engine's arrays per tensor).
BYTES_PER_LINE_ACCESS = 96
BYTES_PER_LINE = 64


def check_line_trace_fits(lo: np.ndarray, hi: np.ndarray, repeat: np.ndarray, model: CacheModel) -> None:
    """ValueError with the estimate, before anything is expanded, when the line trace of the byte ranges
    [``lo``, ``hi``) (``repeat`` extra passes each) would not fit in memory (``lab.checks.check_memory``)."""
    line = model.line_bytes
    per_row = ((hi - 1) // line - lo // line + 1).astype(np.float64) * (1.0 + repeat)
    accesses = float(per_row.sum())
    lines = float(hi.max(initial=0)) / line + 1
    check_memory(f"buffer='cache' with {line:,}-byte lines: a line trace of {accesses:,.0f} line accesses over "
                 f"{lines:,.0f} lines", accesses * BYTES_PER_LINE_ACCESS + lines * BYTES_PER_LINE,
                 "use longer lines (CacheModel(line_bytes=...)), a smaller alignment, or a shorter trace")


def line_trace(trace: pd.DataFrame, capacity_bytes: int, model: CacheModel, repeat=None, rows: bool = True):
    """The line-granular trace of ``trace`` for the cache: (codes, is_write, n_lines, row), codes in
    0..n_lines-1, ``row`` the access of ``trace`` each line access comes from (None with ``rows=False``).
    ``repeat``: the GEMM re-reads (``gemm_rereads``) when already known."""
    lo, hi = assign_addresses(trace, model.alignment)
    is_write = column_or(trace, "access", "read", object) == "write"
    if repeat is None:
        repeat = gemm_rereads(trace, capacity_bytes, model)
    check_line_trace_fits(lo, hi, repeat, model)
    op = op_index_of(trace, fill=True)
    codes, writes, key, row = _expand(lo, hi, repeat, is_write, op, np.int64(model.line_bytes))
    if model.interleave:
        order = np.argsort(key, kind="stable")
        codes, writes, row = codes[order], writes[order], row[order] if rows else None
    n_lines = int(codes.max()) + 1 if codes.size else 0
    return codes, writes, n_lines, row if rows else None


NO_TRACE_COLUMNS = ("buffer='cache' replays lines of memory, not the trace's rows, so a policy that reads a column of "
                    "the trace (the ML policy's eviction_score) is not supported with buffer='cache'; use "
                    "buffer='scratchpad' for it")
LINE_COLUMNS = ("tensor_id", "size_mb", "access", "op", "shape", "op_index")  # what the line trace is made from
LINE_OP = "line_op"  # Workload.memo key of a line workload's op (row of op_table) per line access (int32)
LINE_CACHE_BYTES = 1 << 30  # line workloads kept per process for reuse (bytes, estimated)
_line_cache: OrderedDict = OrderedDict()  # key -> (workload, estimated bytes)
_line_cache_lock = threading.Lock()
_line_builds: dict = {}  # key -> lock held while one thread builds that line trace


def trace_fingerprint(trace: pd.DataFrame, columns=LINE_COLUMNS) -> bytes:
    """A digest of the ``columns`` of ``trace`` (default: those the line trace is made from, ``LINE_COLUMNS``):
    equal digests, equal line traces. By content, so a trace changed in place is never mistaken for its old
    self."""
    columns = [c for c in columns if c in trace]
    digest = hashlib.blake2b(repr(columns).encode(), digest_size=16)
    for column in columns:
        values = trace[column]
        if values.dtype == object:  # shapes may be tuples or lists, which pandas cannot hash
            values = values.astype(str)
        digest.update(pd.util.hash_pandas_object(values, index=False).to_numpy().tobytes())
    return digest.digest()


def clear_line_cache() -> None:
    """Forget the line traces ``line_workload`` keeps (their memory is freed once no result holds them)."""
    with _line_cache_lock:
        _line_cache.clear()


def line_workload(trace: pd.DataFrame, capacity_bytes: int, model: CacheModel) -> Workload:
    """The line-granular trace of ``trace`` (see ``line_trace``) as an engine ``Workload`` of ``line_bytes``
    blocks, for the cache of ``capacity_bytes`` (effective bytes: the GEMM panels depend on it).

    Building it costs ~10x the simulation that follows, and it is the same for every policy and for every
    capacity with the same GEMM re-reads, so it is memoized by content (``trace_fingerprint``) in this
    process, up to ``LINE_CACHE_BYTES``, least recently used first out. The arrays are shared: read-only by
    convention (the engine does not write them).
    """
    repeat = gemm_rereads(trace, capacity_bytes, model)
    key = (trace_fingerprint(trace), model, hashlib.blake2b(repeat.tobytes(), digest_size=16).digest())
    with _line_cache_lock:
        if key in _line_cache:
            _line_cache.move_to_end(key)
            return _line_cache[key][0]
        building = _line_builds.setdefault(key, threading.Lock())
    try:
        with building:  # a second thread asking for the same line trace waits for the first's
            with _line_cache_lock:
                if key in _line_cache:
                    return _line_cache[key][0]
            return _build_line_workload(trace, capacity_bytes, model, repeat, key)
    finally:
        with _line_cache_lock:
            _line_builds.pop(key, None)


def _build_line_workload(trace, capacity_bytes, model, repeat, key) -> Workload:
    timed = has_op_index(trace)
    codes, writes, n_lines, row = line_trace(trace, capacity_bytes, model, repeat, timed)
    # the op of each line access (int32: its row of lab.trace.ops.op_table, -1 outside any op), for per-op bytes
    # (lab.sim.timing); only for a trace that records its ops, the one kind a step time is computed for
    line_op = op_positions(trace)[row] if timed else None
    del row
    line = np.int64(model.line_bytes)
    workload = Workload(codes=codes, tensor_bytes=np.full(n_lines, line, np.int64),
                        access_bytes=np.full(codes.shape[0], line, np.int64),
                        is_write=writes if "access" in trace else np.zeros(0, np.bool_),
                        id_values=np.arange(n_lines, dtype=np.int64), no_trace_reason=NO_TRACE_COLUMNS)
    workload.previous_use  # every run needs it (compulsory misses): computed once, here
    if line_op is not None:
        workload.memo(LINE_OP, lambda: line_op)
    # codes, is_write, access_bytes, previous use, the next use past the end (lab.sim.simulate.replay) + 8 spare,
    # the op of each line access
    estimate = codes.shape[0] * (8 + 1 + 8 + 3 * 8 + (4 if line_op is not None else 0)) + n_lines * 16
    with _line_cache_lock:
        if estimate <= LINE_CACHE_BYTES:
            _line_cache[key] = (workload, estimate)
            while sum(size for _, size in _line_cache.values()) > LINE_CACHE_BYTES:
                _line_cache.popitem(last=False)
    return workload
