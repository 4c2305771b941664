"""``lab.optimal``: the least DRAM traffic any policy can reach on a trace, exact or tightly bracketed.

The model (after Berger, Beckmann and Harchol-Balter, "Practical bounds on
optimal caching with variable object sizes", POMACS 2018, FOO):

- An *interval* runs from an access of a tensor to the tensor's next access.
  Keeping it means holding the tensor's bytes on chip in between; the bytes
  held across the gap between two consecutive accesses never exceed the
  capacity.
- Not keeping an interval costs DRAM traffic at its end: a read of the
  tensor when the next access reads it, plus a writeback when the tensor is
  dirty (written and not yet written back) and its data is needed again
  (the next access reads it). When the next access overwrites the tensor,
  dropping it costs nothing. A first read always costs a DRAM read; a write
  produces the tensor on chip; after its last access a tensor is dropped.
  Plain traces (no ``access`` column) are all reads.
- The incoming tensor may bypass the buffer (it is read, used and not kept).

Three numbers come out of it, each named for what it is:

- **The whole-tensor optimum** (``exact_mb``, or the bracket ``[lower_mb,
  upper_mb]``): the least traffic of any schedule that keeps whole tensors
  (bypass allowed), by integer programming (HiGHS' branch and cut through
  scipy) over one binary per interval, solved to proven optimality within a
  time limit (``time_limit_s``); when the limit stops it first, ``lower_mb``
  is its proven bound and ``upper_mb`` the best schedule it found. Every
  policy of ``lab.simulate`` (whole tensors, no bypass unless the policy has
  it, a dirty tensor evicted while live written back) is one such schedule,
  so none moves less than ``lower_mb``.
- **The achievable schedule** (``upper_mb``, ``upper_source``, ``plan``'s
  ``kept``): the best whole-tensor schedule found, its traffic counted
  exactly (dirty state tracked): the integer program's, the min-cost flow
  rounded (FOO-U: keep exactly the intervals the flow keeps whole) or
  Belady's (MIN) with and without bypass read as kept intervals, whichever
  moves least, so it is never above Belady's traffic.
- **The byte-granular (tile) optimum** (``byte_granular_mb``): the min-cost
  flow (HiGHS' dual simplex through scipy, or OR-Tools' min-cost flow), where
  a tensor may be kept in part as a tiled kernel can: node ``i`` per access,
  an arc ``i -> i+1`` of capacity C bytes and cost 0 (bytes held between
  accesses), and per interval an arc from its start to its end of capacity s
  (its size) and unit cost = its cost per byte if not kept, with s bytes
  supplied at the start and demanded at the end. It charges the writeback
  only when the interval starts with a write (the tensor is then surely
  dirty); whether an interval that starts with a read is dirty depends on
  earlier decisions, and charging nothing there keeps the bound valid. It is
  the optimum itself for plain traces with byte granularity (``plan``'s
  ``kept_fraction``), the integer program's linear relaxation, and so never
  above ``lower_mb``; with tensors large next to the buffer it lies far
  below the whole-tensor optimum (captured BERT-base, batch 8, at 16 MB:
  1,029 MB against 1,893 MB).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from lab.checks import check_bool, check_memory, check_number, check_positive_mb
from lab.compiled import kernel
from lab.sim.cost import resolve_cost
from lab.sim.engine import (DROPS, EVICTIONS, HIT_BYTES, HITS, INSERTIONS, N_COUNTS, PEAK_BYTES, PERSIST_WRITE_BYTES,
                            READ_BYTES, READ_HITS, WRITE_ALLOCATIONS, WRITE_BYTES, WRITEBACKS, WRITEBACKS_SKIPPED)
from lab.sim.policy import get_policy
from lab.sim import timing
from lab.sim.cost import CostModel
from lab.sim.simulate import metrics_of_counts, simulate
from lab.trace.ops import has_op_index, op_positions, op_table
from lab.trace.schema import column_or
from lab.trace.workload import Workload, encode_trace
from lab.units import BYTES_PER_MB, bytes_to_mb, mb_to_bytes

METHODS = ("milp", "flow")
# The flow's solvers hold the whole network in memory (HiGHS: about 5 KB per access, measured: 9.6 GB for a
# 2,000,000-access Zipf trace) and their time grows faster than the trace (64,000 Zipf accesses: 9 s, 128,000:
# 71 s on 2 cores): beyond this a bound would not finish in an interactive session.
MAX_FLOW_ACCESSES = 1_000_000
FLOW_BYTES_PER_ACCESS = 5_000
# The flow's time on Zipf traces of varied sizes at 10 % of the working set, its hardest case (2-core VM, HiGHS):
# 1.7 s at 25,000 accesses, 6.3 s at 50,000, 19 s at 100,000, about n**1.8; captured steps are far faster (a
# 9,000-access GPT-2 training step: 0.3 s). The progress bar quotes it as an upper estimate.
FLOW_SECONDS_AT_100K = 20.0
FLOW_TIME_EXPONENT = 1.8


def flow_seconds_estimate(n_accesses: int) -> float:
    """About how long the byte-granular flow may take on ``n_accesses`` accesses on a 2-core machine, seconds
    (an upper estimate: its hardest traces, Zipf-distributed reuse of varied sizes)."""
    return FLOW_SECONDS_AT_100K * (n_accesses / 100_000) ** FLOW_TIME_EXPONENT


@dataclass(frozen=True)
class Intervals:
    """The intervals of a workload: one per access that has a next use."""

    start: np.ndarray  # int64: the access that opens it
    end: np.ndarray  # int64: the tensor's next access
    size: np.ndarray  # int64 bytes
    end_reads: np.ndarray  # bool: the next access reads the tensor (dropping it costs a read)
    start_writes: np.ndarray  # bool: the opening access writes the tensor (it is surely dirty)
    end_persists: np.ndarray  # bool: the next row is a persist mark (the data must reach DRAM, dirty or not)
    start_final_write: np.ndarray  # bool: the opening access is the last write of a persisted tensor (its data
    #                                 reaches DRAM once in every schedule: counted once, apart from the flow)


def intervals_of(workload: Workload) -> Intervals:
    """Every interval between consecutive accesses of the same tensor, in order of their start."""
    start = np.flatnonzero(workload.next_use >= 0)
    end = workload.next_use[start]
    writes = column_or(workload, "is_write", False, np.bool_)
    marks = persist_marks(workload)
    final = np.zeros(workload.n_accesses, np.bool_)
    if marks.any() and writes.any():
        persisted = np.zeros(workload.n_tensors, np.bool_)
        persisted[workload.codes[marks]] = True
        last_write = np.full(workload.n_tensors, -1, np.int64)
        written = np.flatnonzero(writes)
        np.maximum.at(last_write, workload.codes[written], written)
        final[last_write[persisted & (last_write >= 0)]] = True
    return Intervals(start=start, end=end, size=workload.access_bytes[start], end_reads=~writes[end] & ~marks[end],
                     start_writes=writes[start], end_persists=marks[end], start_final_write=final[start])


def persist_marks(workload: Workload) -> np.ndarray:
    """The rows of ``workload`` that are persist marks, not accesses (bool per row)."""
    return column_or(workload, "is_persist", False, np.bool_)


def persist_write_bytes(ivs: Intervals) -> int:
    """Bytes every schedule writes for persist marks: the data of a persisted tensor's last write must reach
    DRAM once, at an eviction or at the mark, whatever the schedule (the flow leaves that writeback out)."""
    return int(ivs.size[ivs.start_final_write].sum())


def compulsory_read_bytes(workload: Workload) -> int:
    """Bytes read by first accesses that read: no schedule avoids them."""
    first = workload.previous_use < 0
    if workload.has_writes:
        first &= ~workload.is_write
    first &= ~persist_marks(workload)
    return int(workload.access_bytes[first].sum())


@kernel
def dirty_states(previous_use, writes, kept_into):
    """Whether each access leaves its tensor dirty on chip: it writes, or it is reached on chip (``kept_into``)
    from a previous access that left the tensor dirty."""
    n = previous_use.shape[0]
    dirty = np.zeros(n, np.bool_)
    for i in range(n):
        p = previous_use[i]
        dirty[i] = writes[i] or (kept_into[i] and p >= 0 and dirty[p])
    return dirty


def _schedule_transfers(workload: Workload, ivs: Intervals, kept: np.ndarray):
    """(reads missed: bool per access, writebacks: bool per interval, reached on chip: bool per access) of the
    schedule that keeps ``kept``."""
    n = workload.n_accesses
    writes = column_or(workload, "is_write", False, np.bool_)
    kept_into = np.zeros(n, np.bool_)  # access i is reached with its tensor on chip
    kept_into[ivs.end[kept]] = True
    reads_missed = ~writes & ~kept_into & ~persist_marks(workload)
    dirty = dirty_states(workload.previous_use, writes, kept_into)
    # a writeback: an interval not kept that starts dirty and whose data is read next, or any interval dirty at
    # its start that ends in a persist mark (written back at an eviction or at the mark)
    writeback = dirty[ivs.start] & ((~kept & ivs.end_reads) | ivs.end_persists)
    return reads_missed, writeback, kept_into


def schedule_traffic(workload: Workload, ivs: Intervals, kept: np.ndarray):
    """Exact (read bytes, write bytes, hits, writebacks) of the whole-tensor schedule that keeps the intervals
    ``kept`` (bool per interval) and bypasses every other, dirty state tracked along each tensor's accesses.
    Hits are accesses reached with the tensor on chip (a write that allocates is not one)."""
    reads_missed, writeback, kept_into = _schedule_transfers(workload, ivs, kept)
    read_bytes = int(workload.access_bytes[reads_missed].sum())
    write_bytes = int(ivs.size[writeback].sum())
    hits = int(np.count_nonzero(kept_into))
    return read_bytes, write_bytes, hits, int(writeback.sum())


def schedule_access_bytes(workload: Workload, ivs: Intervals, kept: np.ndarray):
    """DRAM (read bytes, write bytes) at each access (int64 arrays) of the schedule that keeps ``kept``, summing to
    ``schedule_traffic``'s: a read not reached on chip is paid at that access; a writeback at the interval's end,
    the access that next reads the tensor (or its persist mark), which is where the schedule needs the data in
    DRAM at the latest. The optimum is a demand schedule: the time of these bytes (``lab.sim.timing``) is the
    least-traffic schedule's time, not a least time."""
    reads_missed, writeback, _ = _schedule_transfers(workload, ivs, kept)
    read = np.where(reads_missed, workload.access_bytes, 0)
    write = np.zeros(workload.n_accesses, np.int64)
    np.add.at(write, ivs.end[writeback], ivs.size[writeback])
    return read, write


OPTIMUM = "OPT"  # the optimum's row in tables, when it is exact
OPTIMUM_LOWER = "OPT (lower bound)"  # when it is bracketed: the bound no schedule beats ...
OPTIMUM_ACHIEVABLE = "OPT (achievable)"  # ... and the best schedule found
OPTIMUM_ROWS = (OPTIMUM, OPTIMUM_LOWER, OPTIMUM_ACHIEVABLE)
MODEL = "scratchpad, whole tensors, bypass allowed"  # the buffer model the optimum is computed in


@dataclass(frozen=True)
class OptimalResult:
    """The optimum at ``capacity_mb``: exact, or bracketed by ``[lower_mb, upper_mb]`` (DRAM traffic, MB read +
    written).

    The model (``model``) is the scratchpad's: whole tensors, a tensor may bypass the buffer, write-allocate,
    writebacks of dirty data needed again, dead tensors dropped; every policy of ``lab.simulate`` (whole
    tensors, no bypass unless the policy has it) is one schedule of it, so none moves less than ``lower_mb``.

    - ``upper_mb``: the traffic of the best whole-tensor schedule found (``upper_source``: the integer
      program's, the flow rounded, or Belady's), achievable as it stands; ``upper_read_mb`` and
      ``upper_write_mb`` split it and ``metrics`` (the keys of ``SimulationResult.metrics``) and ``plan``
      describe it.
    - ``lower_mb``: a proven lower bound on every whole-tensor schedule: the integer program's bound within its
      time limit, never below the byte-granular bound.
    - ``exact``: the integer program proved ``upper_mb`` optimal (``lower_mb == upper_mb == exact_mb``);
      else ``exact_mb`` is None and ``gap_pct`` says how wide the bracket is.
    - ``byte_granular_mb``: the optimum when a tensor may be kept in part, as a tiled kernel can (the
      min-cost flow over bytes; exact on plain traces, a lower bound with writes), split into
      ``byte_granular_read_mb`` and ``byte_granular_write_mb``. Never above ``lower_mb``.
    - ``plan``: one row per interval (tensor_id, start and end access, size_mb, ``kept_fraction`` in the
      byte-granular flow, ``kept`` in the whole-tensor schedule).
    - ``status``: one line saying what was proven; ``solve_s``: the seconds it took in all.
    - For a trace that records its ops (``op_index``): ``op_bytes``, the achievable schedule's DRAM bytes per op
      (``schedule_access_bytes``), and ``metrics`` has its step time (``lab.sim.timing``; NaN, and ``note``
      says why, when ``cost`` lacks the physical numbers), so ``lab.step_time(result)`` prices it too.
      ``cost``: the cost model of ``metrics``.
    """

    capacity_mb: float
    lower_mb: float
    upper_mb: float
    upper_read_mb: float
    upper_write_mb: float
    exact_mb: Optional[float]
    byte_granular_mb: float
    byte_granular_read_mb: float
    byte_granular_write_mb: float
    metrics: dict
    plan: pd.DataFrame = field(repr=False)
    method: str = "milp"
    upper_source: str = "flow rounding"
    status: str = ""
    solve_s: float = 0.0
    model: str = MODEL
    cost: Optional[CostModel] = field(default=None, repr=False)
    op_bytes: Optional[tuple] = field(default=None, repr=False)
    note: str = ""

    @property
    def exact(self) -> bool:
        """Whether the optimum is known exactly (``lower_mb == upper_mb``)."""
        return self.exact_mb is not None

    @property
    def gap_pct(self) -> float:
        """How far the achievable schedule is above the lower bound, in % of the bound (0: exact)."""
        return 100.0 * (self.upper_mb - self.lower_mb) / self.lower_mb if self.lower_mb > 0 else 0.0

    @property
    def bound_mb(self) -> float:
        """The best known value of the optimum that no schedule beats: the exact one, else the lower bound."""
        return self.lower_mb

    def rows(self) -> list[tuple[str, float]]:
        """How a table shows it: ``[("OPT", traffic)]`` when exact, else ``[("OPT (lower bound)", lower_mb),
        ("OPT (achievable)", upper_mb)]`` (MB)."""
        return [(row["policy"], row["dram_traffic_mb"]) for row in self.table_rows()]

    def table_rows(self) -> list[dict]:
        """Its rows in a table of policies (``lab.metrics_table``, sweeps): ``[OPT]`` with the exact schedule's
        metrics, or ``[OPT (lower bound), OPT (achievable)]``: the first has only ``dram_traffic_mb`` (the bound:
        no schedule behind it, its other metrics NaN), the second the metrics of the best schedule found. Every
        row has ``policy``, ``opt_lower_mb`` and ``opt_upper_mb`` (the bracket, MB), ``opt_exact`` and
        ``algorithm`` (what proved it, in words)."""
        common = {"opt_lower_mb": self.lower_mb, "opt_upper_mb": self.upper_mb, "opt_exact": self.exact,
                  "algorithm": f"whole-tensor optimum (lab.optimal): {self.status}"}
        if self.exact:
            return [{"policy": OPTIMUM, **self.metrics, **common}]
        bound = {key: np.nan for key in self.metrics}
        bound["dram_traffic_mb"] = self.lower_mb
        return [{"policy": OPTIMUM_LOWER, **bound, **common},
                {"policy": OPTIMUM_ACHIEVABLE, **self.metrics, **common}]


SOLVERS = ("highs", "ortools")


def _flow_writes(ivs: Intervals) -> np.ndarray:
    """Whether dropping each interval costs the flow a writeback: it starts with a write, other than a persisted
    tensor's last (that one is paid once in ``persist_write_bytes``)."""
    return ivs.start_writes & ~ivs.start_final_write


def _flow_network(ivs: Intervals, n: int):
    """The intervals whose dropping costs traffic, their unit costs, and the supply of each node (bytes)."""
    unit = ivs.end_reads.astype(np.int64) * (1 + _flow_writes(ivs).astype(np.int64))
    useful = np.flatnonzero(unit > 0)
    supply = np.zeros(n, np.int64)
    np.add.at(supply, ivs.start[useful], ivs.size[useful])
    np.subtract.at(supply, ivs.end[useful], ivs.size[useful])
    return useful, unit[useful], supply


def _flow_ortools(ivs: Intervals, n: int, capacity_bytes: int, useful, unit, supply) -> np.ndarray:
    from ortools.graph.python import min_cost_flow

    solver = min_cost_flow.SimpleMinCostFlow()
    chain = np.arange(n - 1, dtype=np.int64)
    solver.add_arcs_with_capacity_and_unit_cost(chain, chain + 1, np.full(n - 1, capacity_bytes, np.int64),
                                                np.zeros(n - 1, np.int64))
    arcs = solver.add_arcs_with_capacity_and_unit_cost(ivs.start[useful], ivs.end[useful], ivs.size[useful], unit)
    solver.set_nodes_supplies(np.arange(n, dtype=np.int64), supply)
    status = solver.solve()
    if status != solver.OPTIMAL:
        raise RuntimeError(f"OR-Tools' min-cost flow did not find the optimum (status {status})")
    return np.asarray(solver.flows(arcs), np.int64)


def _flow_highs(ivs: Intervals, n: int, capacity_bytes: int, useful, unit, supply) -> np.ndarray:
    """The same min-cost flow as a linear program for HiGHS' dual simplex (scipy): one conservation row per
    access, a chain variable per gap (0..capacity) and an 'around' variable per interval (0..size). The matrix
    is a network matrix, so the basic optimum HiGHS returns is integral: rounding removes float noise only."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    m = useful.size
    gaps = np.arange(n - 1)
    arcs = np.arange(m)
    rows = np.concatenate([gaps, gaps + 1, ivs.start[useful], ivs.end[useful]])
    cols = np.concatenate([gaps, gaps, n - 1 + arcs, n - 1 + arcs])
    vals = np.concatenate([np.ones(n - 1), -np.ones(n - 1), np.ones(m), -np.ones(m)])
    matrix = coo_matrix((vals, (rows, cols)), shape=(n, n - 1 + m)).tocsr()
    bounds = np.zeros((n - 1 + m, 2))
    bounds[: n - 1, 1] = capacity_bytes
    bounds[n - 1:, 1] = ivs.size[useful]
    result = linprog(np.concatenate([np.zeros(n - 1), unit.astype(np.float64)]), A_eq=matrix,
                     b_eq=supply.astype(np.float64), bounds=bounds, method="highs-ds")
    if result.status != 0:
        raise RuntimeError(f"HiGHS did not solve the flow: {result.message}")
    return np.clip(np.rint(result.x[n - 1:]), 0, ivs.size[useful]).astype(np.int64)


def _flow(ivs: Intervals, n: int, capacity_bytes: int, solver: str = "highs"):
    """Min-cost flow over the intervals whose dropping costs traffic; returns the bytes of each interval that
    go around (not kept) and the read and writeback bytes they cost."""
    around = np.zeros(ivs.start.shape[0], np.int64)
    useful, unit, supply = _flow_network(ivs, n)
    if useful.size == 0 or n < 2:
        return around, 0, 0
    solve = _flow_highs if solver == "highs" else _flow_ortools
    around[useful] = solve(ivs, n, capacity_bytes, useful, unit, supply)
    read = int(around[useful].sum())
    write = int((around * _flow_writes(ivs))[useful].sum())
    return around, read, write


def check_flow_size(workload: Workload) -> None:
    """ValueError, with the memory estimate, for a trace too large for the flow (MAX_FLOW_ACCESSES)."""
    n = workload.n_accesses
    if n > MAX_FLOW_ACCESSES:
        raise ValueError(f"the optimum's flow over {n:,} accesses would need about "
                         f"{n * FLOW_BYTES_PER_ACCESS / 2**30:.1f} GiB and hours; lab.optimal bounds traces of at "
                         f"most {MAX_FLOW_ACCESSES:,} accesses: bound a window of the trace (e.g. one step)")
    check_memory(f"the optimum's flow over {n:,} accesses", n * FLOW_BYTES_PER_ACCESS,
                 "bound a window of the trace (e.g. one step)")


def _integer_program(workload: Workload, ivs: Intervals, capacity_bytes: int, time_limit_s: float,
                     gap_pct: float = 0.0, known_bytes: Optional[int] = None):
    """The whole-tensor optimum with bypass by integer programming (HiGHS' branch and cut through scipy), within
    ``time_limit_s`` seconds, or until the bracket is at most ``gap_pct`` % of the traffic wide. ``known_bytes``:
    the traffic of a schedule already known (Belady's, the flow rounded), HiGHS' cutoff: branches that cannot beat
    it are pruned from the start (2x faster on training steps). Returns (kept: bool per interval or None when no
    better schedule was found, the proven lower bound on the traffic in bytes (float), proven optimal? (a schedule
    no better than ``known_bytes`` then proves that one optimal)).

    Variables per interval: x (kept, binary), d (dirty at its start), b (written back when dropped). The bytes
    held on chip are at most the capacity over each maximal set of overlapping intervals (a knapsack row each:
    3-20x faster to prove than the sparse form on traces of many small tensors), or, when those rows would hold
    over MAX_CLIQUE_NONZEROS entries, one running total per point where a kept interval starts or ends (a sparse
    chain: the model stays linear in the trace). Only intervals whose keeping
    can save traffic (the next access reads the tensor, and it fits) get an x: keeping another saves nothing
    and only holds bytes. One more column, fixed at 1, carries the traffic every schedule pays, so that the
    objective is the traffic itself and HiGHS' relative gap is the bracket's width. Sizes are in MiB so that
    HiGHS' tolerances stay far below one byte."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix, vstack

    m = ivs.start.shape[0]
    offset = compulsory_read_bytes(workload) + int(ivs.size[ivs.end_reads].sum())  # every read paid, no write
    useful = np.flatnonzero(ivs.end_reads & (ivs.size <= capacity_bytes))
    size = ivs.size / BYTES_PER_MB
    # chained dirty state: d_k >= d_p + x_p - 1 for the interval p that ends where k starts
    prev = np.full(workload.n_accesses, -1, np.int64)
    prev[ivs.end] = np.arange(m)
    p = prev[ivs.start]
    chained = np.flatnonzero(p >= 0)
    u = useful.size
    # columns: x (u), d (m), b (m), occupancy (e: only in the sparse form), the fixed traffic (1)
    cliques = _maximal_cliques(ivs, useful)
    crossings = cliques[1] - cliques[0]
    dense = int(crossings.sum()) <= MAX_CLIQUE_NONZEROS
    points = np.unique(np.concatenate([ivs.start[useful], ivs.end[useful]])) if not dense else np.zeros(0, np.int64)
    e = points.size
    x_of = np.full(m, -1, np.int64)
    x_of[useful] = np.arange(u)
    d0, b0, o0 = u, u + m, u + 2 * m
    width = u + 2 * m + e + 1
    cost = np.zeros(width)
    cost[-1] = offset / BYTES_PER_MB
    cost[:u] = -size[useful]
    cost[d0:b0] = size * ivs.end_persists
    cost[b0:o0] = size * ivs.end_reads
    blocks, lows, highs = [], [], []
    if dense:
        # one knapsack row per maximal set of kept intervals that overlap (a maximal clique of the interval
        # graph), where they could overflow: HiGHS finds covers and cliques in rows of this form
        first, past = cliques
        rows = np.repeat(np.arange(u), crossings)
        gap_rows = np.arange(rows.size) - np.repeat(np.cumsum(crossings) - crossings, crossings) + first[rows]
        n_cliques = int(past.max(initial=0))
        full = np.bincount(gap_rows, weights=size[useful][rows], minlength=n_cliques)
        tight = full > capacity_bytes / BYTES_PER_MB
        renumber = np.cumsum(tight) - 1
        keep = tight[gap_rows]
        n_tight = int(tight.sum())
        blocks.append(coo_matrix((size[useful][rows[keep]], (renumber[gap_rows[keep]], rows[keep])),
                                 shape=(n_tight, width)))
        lows.append(np.full(n_tight, -np.inf))
        highs.append(np.full(n_tight, capacity_bytes / BYTES_PER_MB))
    elif e:
        # the sparse form: the bytes held, one running total per point where a kept interval starts or ends:
        # o_j - o_{j-1} - (sizes of kept intervals starting at point j) + (those ending there) = 0
        r = np.arange(e)
        rows = np.concatenate([r, r[1:], np.searchsorted(points, ivs.start[useful]),
                               np.searchsorted(points, ivs.end[useful])])
        cols = np.concatenate([o0 + r, o0 + r[1:] - 1, np.arange(u), np.arange(u)])
        vals = np.concatenate([np.ones(e), -np.ones(e - 1), -size[useful], size[useful]])
        blocks.append(coo_matrix((vals, (rows, cols)), shape=(e, width)))
        lows.append(np.zeros(e))
        highs.append(np.zeros(e))
    # d_k - d_p - x_p >= -1 (x_p only where it exists)
    if chained.size:
        r = np.arange(chained.size)
        pk = p[chained]
        has_x = x_of[pk] >= 0
        rows = np.concatenate([r, r, r[has_x]])
        cols = np.concatenate([d0 + chained, d0 + pk, x_of[pk][has_x]])
        vals = np.concatenate([np.ones(chained.size), -np.ones(chained.size), -np.ones(int(has_x.sum()))])
        blocks.append(coo_matrix((vals, (rows, cols)), shape=(chained.size, width)))
        lows.append(np.full(chained.size, -1.0))
        highs.append(np.full(chained.size, np.inf))
    # b_k - d_k + x_k >= 0
    r = np.arange(m)
    has_x = x_of >= 0
    rows = np.concatenate([r, r, r[has_x]])
    cols = np.concatenate([b0 + r, d0 + r, x_of[has_x]])
    vals = np.concatenate([np.ones(m), -np.ones(m), np.ones(int(has_x.sum()))])
    blocks.append(coo_matrix((vals, (rows, cols)), shape=(m, width)))
    lows.append(np.zeros(m))
    highs.append(np.full(m, np.inf))
    lower = np.zeros(width)
    lower[d0:b0] = ivs.start_writes
    upper = np.ones(width)
    upper[o0:-1] = capacity_bytes / BYTES_PER_MB
    lower[-1] = 1.0
    integrality = np.zeros(width)
    integrality[:u] = 1
    constraints = LinearConstraint(vstack(blocks).tocsr(), np.concatenate(lows), np.concatenate(highs))
    options = {"time_limit": float(time_limit_s), "mip_rel_gap": gap_pct / 100.0, "disp": False}
    if known_bytes is not None:  # half a byte above it: a schedule as good stays feasible
        options["objective_bound"] = (known_bytes + 0.5) / BYTES_PER_MB
    _ignore_highs_option_warning()
    with _quiet_stdout():
        result = milp(cost, constraints=constraints, integrality=integrality, bounds=Bounds(lower, upper),
                      options=options)
    if known_bytes is not None and result.status == 2:  # nothing beats the known schedule: it is optimal
        return None, float(known_bytes), gap_pct == 0
    kept = None
    if result.x is not None:
        kept = np.zeros(m, np.bool_)
        kept[useful] = result.x[:u] > 0.5
        if not _fits(workload, ivs, kept, capacity_bytes):  # a tolerance of HiGHS' showing: not a schedule
            kept = None
    dual = getattr(result, "mip_dual_bound", None)
    bound = dual * BYTES_PER_MB if dual is not None and np.isfinite(dual) else -np.inf
    return kept, bound, result.status == 0 and kept is not None and gap_pct == 0


# scipy passes HiGHS' own options (objective_bound) on verbatim, as its documentation says, with a warning. The
# filter is added (idempotently: the same filter is moved to the front, not repeated) before each solve, never
# swapped with warnings.catch_warnings: threads of a sweep solving at once would restore each other's filters
# and let the warning through to a notebook's stderr. Added per call rather than once at import, because a
# caller's own catch_warnings (pytest's per test, for one) drops filters added inside it.
def _ignore_highs_option_warning() -> None:
    warnings.filterwarnings("ignore", message=r"Unrecognized options detected: \{'objective_bound'\}",
                            category=RuntimeWarning)

_QUIET_LOCK = threading.Lock()
_quiet = {"depth": 0, "saved": -1}


@contextlib.contextmanager
def _quiet_stdout():
    """File descriptor 1 pointed at /dev/null while HiGHS runs: it prints a debugging line of its own with
    ``printf`` now and then, whatever its options say, which would land in a notebook's output. Threads share the
    descriptor, so the first to enter redirects it and the last to leave restores it."""
    with _QUIET_LOCK:
        if _quiet["depth"] == 0:
            try:
                sys.stdout.flush()
                _quiet["saved"] = os.dup(1)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.close(devnull)
            except (OSError, ValueError):  # no descriptor 1 to point elsewhere: leave it as it is
                _quiet["saved"] = -1
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0 and _quiet["saved"] >= 0:
                os.dup2(_quiet["saved"], 1)
                os.close(_quiet["saved"])
                _quiet["saved"] = -1


MAX_CLIQUE_NONZEROS = 4_000_000  # the knapsack rows' entries (about 40 bytes each in HiGHS) before the sparse form


def _maximal_cliques(ivs: Intervals, useful: np.ndarray):
    """The maximal sets of the ``useful`` intervals that cross one gap (the gap right before an interval ends,
    with an interval started since the previous such gap), numbered in order; for each useful interval the
    first one it is in and one past its last (int64 arrays)."""
    start, end = ivs.start[useful], ivs.end[useful]
    if start.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    gaps_before_end = np.unique(end - 1)  # gap g lies between access g and g + 1
    started = np.searchsorted(np.sort(start), gaps_before_end, side="right")  # intervals started by gap g
    fresh = np.diff(np.concatenate([[0], started])) > 0
    candidates = gaps_before_end[fresh]
    return (np.searchsorted(candidates, start, side="left").astype(np.int64),
            np.searchsorted(candidates, end, side="left").astype(np.int64))


def _best_schedule(workload: Workload, ivs: Intervals, around: np.ndarray, capacity_bytes: int):
    """The whole-tensor schedule with the least exact traffic among the flow rounded (keep the intervals it keeps
    whole) and Belady's with and without bypass (an interval is kept when its end is a hit: with whole tensors
    and no access in between, the tensor stayed resident); returns (kept, source, read bytes, write bytes). A
    schedule read from a simulation fits the buffer, as the simulation did."""
    candidates = [("flow rounding", (around == 0) & ivs.end_reads)]  # dropping the others costs nothing
    for label, policy in (("Belady (bypass) schedule", get_policy("Belady", bypass=True)),
                          ("Belady schedule", get_policy("Belady"))):
        hit = simulate(workload, policy, capacity_bytes / BYTES_PER_MB).hit
        candidates.append((label, hit[ivs.end] & ivs.end_reads))
    best = None
    for label, kept in candidates:
        read, write, _, _ = schedule_traffic(workload, ivs, kept)
        if best is None or read + write < best[2] + best[3]:
            best = (kept, label, read, write)
    return best


def _held_bytes(workload: Workload, ivs: Intervals, kept: np.ndarray) -> np.ndarray:
    """Bytes the schedule that keeps the intervals ``kept`` holds on chip in each gap (int64 per access: after
    it, before the next)."""
    held = np.zeros(workload.n_accesses + 1, np.int64)
    np.add.at(held, ivs.start[kept], ivs.size[kept])
    np.subtract.at(held, ivs.end[kept], ivs.size[kept])
    return np.cumsum(held)


def _fits(workload: Workload, ivs: Intervals, kept: np.ndarray, capacity_bytes: int) -> bool:
    """Whether the kept intervals hold at most ``capacity_bytes`` at every gap (exact integers)."""
    return bool(_held_bytes(workload, ivs, kept).max(initial=0) <= capacity_bytes)


def schedule_counts(workload: Workload, ivs: Intervals, kept: np.ndarray, capacity_bytes: int) -> np.ndarray:
    """The engine's counters (``lab.sim.engine``: HITS, READ_BYTES, ... int64, ``N_COUNTS`` of them) of the
    whole-tensor schedule that keeps the intervals ``kept`` (bool per interval) at ``capacity_bytes``, as a run
    of ``lab.simulate`` fills them, so that ``metrics_of_counts`` reads them as it reads a run's. In this model an
    eviction is an interval not kept (its tensor leaves the buffer, or never enters it), and a write not reached
    on chip allocates its tensor when it fits (the schedule holds it from there), else streams out."""
    n = workload.n_accesses
    read_bytes, write_bytes, hits, writebacks = schedule_traffic(workload, ivs, kept)
    writes = column_or(workload, "is_write", False, np.bool_)
    marks = persist_marks(workload)
    kept_into = np.zeros(n, np.bool_)  # access i is reached with its tensor on chip
    kept_into[ivs.end[kept]] = True
    kept_from = np.zeros(n, np.bool_)  # the schedule holds access i's tensor after it
    kept_from[ivs.start[kept]] = True
    allocates = writes & ~kept_into & (workload.access_bytes <= capacity_bytes)
    dirty = dirty_states(workload.previous_use, writes, kept_into)
    # dirty data not kept whose next access overwrites it: dropped, not written back
    skipped = ~kept & dirty[ivs.start] & ~ivs.end_reads & ~ivs.end_persists
    counts = np.zeros(N_COUNTS, np.int64)
    counts[HITS] = hits
    counts[HIT_BYTES] = workload.access_bytes[kept_into].sum()
    counts[READ_BYTES] = read_bytes
    counts[WRITE_BYTES] = write_bytes
    counts[EVICTIONS] = np.count_nonzero(~kept)
    counts[WRITEBACKS] = writebacks
    counts[DROPS] = np.count_nonzero((workload.next_use < 0) & ~marks)
    counts[PEAK_BYTES] = _held_bytes(workload, ivs, kept).max() if n else 0
    counts[INSERTIONS] = np.count_nonzero(~kept_into & ~marks & (kept_from | allocates))
    counts[READ_HITS] = np.count_nonzero(kept_into & ~writes)
    counts[WRITE_ALLOCATIONS] = np.count_nonzero(allocates)
    counts[WRITEBACKS_SKIPPED] = np.count_nonzero(skipped)
    counts[PERSIST_WRITE_BYTES] = ivs.size[ivs.end_persists & dirty[ivs.start]].sum()
    return counts


def lower_bound_mb(trace, capacity_mb: float, solver: str = "highs") -> float:
    """The byte-granular bound alone (``optimal(trace, capacity_mb).byte_granular_mb``: the min-cost flow, no
    schedule, no integer program): a lower bound on DRAM traffic (MB read + written) at ``capacity_mb`` MB. For
    searches over capacities."""
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    _check_solver(solver)
    workload = encode_trace(trace)
    check_flow_size(workload)
    ivs = workload.memo("intervals", lambda: intervals_of(workload))
    _, flow_read, flow_write = _flow(ivs, workload.n_accesses, int(mb_to_bytes(capacity_mb)), solver)
    return float(bytes_to_mb(compulsory_read_bytes(workload) + flow_read + flow_write + persist_write_bytes(ivs)))


def _check_solver(solver) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")


DEFAULT_TIME_LIMIT_S = 30.0
MIN_PROGRAM_S = 1.0  # the integer program gets at least this long, even when the flow used the whole limit
MAX_TIME_LIMIT_S = 24 * 3600.0
# A bar shows the work from about this many accesses (about 2 s of flow, schedules and integer program here).
PROGRESS_ACCESSES = 5_000


def check_time_limit_s(time_limit_s) -> float:
    """``time_limit_s`` as float seconds if it is a number in (0, MAX_TIME_LIMIT_S], else ValueError naming it."""
    time_limit_s = check_number("time_limit_s", time_limit_s, 0, MAX_TIME_LIMIT_S)
    if time_limit_s <= 0:
        raise ValueError(f"time_limit_s must be a number of seconds in (0, {MAX_TIME_LIMIT_S:g}], got 0")
    return time_limit_s


def check_gap_pct(gap_pct) -> float:
    """``gap_pct`` as float if it is a number in [0, 100] (% of the traffic), else ValueError naming it."""
    return check_number("gap_pct", gap_pct, 0, 100)


def optimal(trace, capacity_mb: float, cost=None, method: str = "milp", solver: str = "highs",
            time_limit_s: float = DEFAULT_TIME_LIMIT_S, gap_pct: float = 0.0,
            progress: Optional[bool] = None) -> OptimalResult:
    """The least DRAM traffic (MB read + written) any whole-tensor schedule can reach on ``trace`` with
    ``capacity_mb`` MB (MiB) on chip: exact, or a bracket [lower_mb, upper_mb]; see ``OptimalResult`` and the
    module docstring for the model.

    Takes a trace DataFrame or Workload, the capacity in MB, a cost model or
    preset (for the latency in ``metrics``), ``method``: ``"milp"`` (the
    default: the integer program, solved to proven optimality within
    ``time_limit_s`` seconds, else its bracket) or ``"flow"`` (no integer
    program: the byte-granular bound as the lower end and the best of the
    flow rounded and Belady's schedules as the upper end; fast, wide with
    tensors large next to the buffer), the flow's ``solver`` (``"highs"``:
    HiGHS' dual simplex through scipy, the default; or ``"ortools"``:
    OR-Tools' min-cost flow; both give the same flow), ``time_limit_s``
    (seconds from the call's start after which the integer program stops
    with its bracket; the flow and Belady's schedules before it are not
    limited: under a second on captured steps, up to about
    ``flow_seconds_estimate(n)`` on the hardest traces), ``gap_pct`` (stop
    once the bracket is at most this % of the traffic wide; 0, the default,
    asks for proven optimality) and ``progress`` (a bar naming each step,
    with the flow's estimated time and the integer program's seconds against
    its limit; default: on traces of over PROGRESS_ACCESSES accesses).
    Raises ValueError for a capacity that
    is not a finite number > 0, an empty or malformed trace, a trace over
    MAX_FLOW_ACCESSES accesses or whose flow would not fit in memory (with
    the estimate), or an unknown method, solver or time limit.
    """
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    _check_solver(solver)
    time_limit_s = check_time_limit_s(time_limit_s)
    gap_pct = check_gap_pct(gap_pct)
    cost = resolve_cost(cost)
    workload = encode_trace(trace)
    if workload.n_accesses == 0:
        raise ValueError("the trace is empty: there is nothing to bound")
    check_flow_size(workload)
    if progress is not None:
        check_bool("progress", progress)
    show = workload.n_accesses > PROGRESS_ACCESSES if progress is None else progress
    started = time.perf_counter()
    capacity_bytes = int(mb_to_bytes(capacity_mb))
    ivs = workload.memo("intervals", lambda: intervals_of(workload))
    with _Steps(show, method == "milp", time_limit_s) as steps:
        estimate = flow_seconds_estimate(workload.n_accesses)
        steps.next("byte-granular flow" + (f" (up to about {estimate:,.0f} s)" if estimate >= 2 else ""))
        around, flow_read, flow_write = _flow(ivs, workload.n_accesses, capacity_bytes, solver)
        flow_read += compulsory_read_bytes(workload)
        flow_write += persist_write_bytes(ivs)
        steps.next("Belady's schedules")
        kept, upper_source, upper_read, upper_write = _best_schedule(workload, ivs, around, capacity_bytes)
        lower_bytes = float(flow_read + flow_write)
        proven = False
        if method == "milp" and upper_read + upper_write > lower_bytes:
            steps.next("integer program", timed=True)
            left_s = max(time_limit_s - (time.perf_counter() - started), MIN_PROGRAM_S)
            found, bound, proven = _integer_program(workload, ivs, capacity_bytes, left_s, gap_pct,
                                                    upper_read + upper_write)
            if found is not None:
                read, write, _, _ = schedule_traffic(workload, ivs, found)
                if read + write < upper_read + upper_write or proven:
                    kept, upper_source, upper_read, upper_write = found, "integer program", read, write
            lower_bytes = max(lower_bytes, np.floor(bound))
        upper_bytes = upper_read + upper_write
        if lower_bytes >= upper_bytes:  # the flow rounded or the program's schedule meets the bound: optimal
            proven = True
        if proven:
            lower_bytes = upper_bytes
    seconds = time.perf_counter() - started
    upper_mb = float(bytes_to_mb(upper_bytes))
    lower_mb = float(bytes_to_mb(lower_bytes))
    if proven:
        status = f"exact: proven optimal ({upper_source})"
    else:
        width = 100.0 * (upper_bytes - lower_bytes) / lower_bytes if lower_bytes > 0 else 0.0
        limit = ("method='flow'" if method == "flow" else f"gap_pct={gap_pct:g}" if 0 < width <= gap_pct else
                 f"the integer program's time limit, {time_limit_s:g} s")
        status = f"bracket {width:.2f} % wide ({limit}); achievable: {upper_source}"
    times, op_bytes, note = None, None, ""
    source = workload.trace if isinstance(trace, Workload) else trace
    if has_op_index(source):  # a trace that records its ops: the achievable schedule's bytes per op, its time
        read_at, write_at = schedule_access_bytes(workload, ivs, kept)
        op_bytes = timing.bytes_by_op(workload.memo("op_table", lambda: op_table(source)),
                                      workload.memo("op_positions", lambda: op_positions(source)), read_at, write_at)
        times, note = timing.priced(op_bytes, cost)
    kept_fraction = 1.0 - around / np.maximum(ivs.size, 1)
    plan = pd.DataFrame({
        "tensor_id": workload.tensor_ids[workload.codes[ivs.start]],
        "start": ivs.start,
        "end": ivs.end,
        "size_mb": bytes_to_mb(ivs.size),
        "kept_fraction": np.where(ivs.end_reads, kept_fraction, 0.0),
        "kept": kept,
    })
    return OptimalResult(
        capacity_mb=capacity_mb,
        lower_mb=lower_mb,
        upper_mb=upper_mb,
        upper_read_mb=float(bytes_to_mb(upper_read)),
        upper_write_mb=float(bytes_to_mb(upper_write)),
        exact_mb=upper_mb if proven else None,
        byte_granular_mb=float(bytes_to_mb(flow_read + flow_write)),
        byte_granular_read_mb=float(bytes_to_mb(flow_read)),
        byte_granular_write_mb=float(bytes_to_mb(flow_write)),
        metrics=metrics_of_counts(workload, schedule_counts(workload, ivs, kept, capacity_bytes), capacity_bytes,
                                  cost, times),
        plan=plan,
        method=method,
        upper_source=upper_source,
        status=status,
        solve_s=seconds,
        cost=cost,
        op_bytes=op_bytes,
        note=note,
    )


class _Steps:
    """A progress bar over the optimum's steps (a tqdm bar when shown; nothing otherwise); the integer
    program's step ticks each second against its time limit, from a thread (HiGHS runs without the GIL)."""

    def __init__(self, show: bool, with_program: bool, time_limit_s: float):
        self.show = show
        self.bar = None
        self.stop = threading.Event()
        self.ticker = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=3 if with_program else 2, desc="optimum", unit="step",
                            bar_format="{desc}: {n_fmt}/{total_fmt} steps{postfix} [{elapsed}]")
        self.time_limit_s = time_limit_s

    def next(self, name: str, timed: bool = False) -> None:
        if self.bar is None:
            return
        if self.bar.postfix:
            self.bar.update(1)
        self.bar.set_postfix_str(name + (f" (time limit {self.time_limit_s:g} s)" if timed else ""))
        if timed:
            started = time.perf_counter()

            def tick():
                while not self.stop.wait(1.0):
                    self.bar.set_postfix_str(f"{name}: {time.perf_counter() - started:.0f} of at most "
                                             f"{self.time_limit_s:g} s")

            self.ticker = threading.Thread(target=tick, daemon=True)
            self.ticker.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join()
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()
        return False
