"""``lab.optimal``: the least DRAM traffic any policy can reach on a trace, bracketed.

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

The flow relaxation (min-cost flow; HiGHS through scipy, or OR-Tools): node ``i`` per access, an arc
``i -> i+1`` of capacity C bytes and cost 0 (bytes held between accesses),
and per interval an arc from its start to its end of capacity s (its size)
and unit cost = its cost per byte if not kept, with s bytes supplied at the
start and demanded at the end. Its cost charges the writeback only when the
interval starts with a write (the tensor is then surely dirty); whether an
interval that starts with a read is dirty depends on earlier decisions, and
charging nothing there keeps the bound valid. So:

- ``lower_mb`` is a certified lower bound on the traffic of every policy, in
  this model and in ``lab.simulate``'s (which keeps whole tensors, cannot
  bypass, and writes back every dirty tensor evicted while live: only more);
- with byte granularity (a tensor may be partly resident, as a tiled kernel
  can) the flow is itself a schedule, optimal for plain traces: ``plan``
  gives each interval's kept fraction;
- ``upper_mb`` is the exact traffic (dirty state tracked) of an achievable
  whole-tensor schedule: the best of the flow rounded FOO-U style (keep
  exactly the intervals the flow keeps whole) and the schedules of Belady
  (MIN) with and without bypass read as kept intervals (``upper_source``
  says which), so the upper end is never above Belady's traffic. The
  whole-tensor optimum with bypass lies in [lower, upper]; ``method="milp"``
  computes it exactly by integer programming (HiGHS via scipy) on small
  traces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from lab.checks import check_positive_mb
from lab.compiled import kernel
from lab.sim.cost import CostModel, resolve_cost
from lab.sim.simulate import compulsory_misses
from lab.trace.workload import Workload, encode_trace
from lab.units import BYTES_PER_MB, bytes_to_mb, mb_to_bytes

METHODS = ("flow", "milp")
MAX_EXACT_INTERVALS = 4000  # integer programs beyond this are refused: they may run for hours
MAX_EXACT_NONZEROS = 2_000_000
# The flow's solvers hold the whole network in memory (HiGHS: about 5 KB per access, measured: 9.6 GB for a
# 2,000,000-access Zipf trace) and their time grows faster than the trace (64,000 Zipf accesses: 9 s, 128,000:
# 71 s on 2 cores): beyond this a bound would not finish in an interactive session.
MAX_FLOW_ACCESSES = 1_000_000
FLOW_BYTES_PER_ACCESS = 5_000


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
    writes = workload.is_write if workload.has_writes else np.zeros(workload.n_accesses, np.bool_)
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
    return workload.is_persist if workload.has_persist else np.zeros(workload.n_accesses, np.bool_)


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


def schedule_traffic(workload: Workload, ivs: Intervals, kept: np.ndarray):
    """Exact (read bytes, write bytes, hits, writebacks) of the whole-tensor schedule that keeps the intervals
    ``kept`` (bool per interval) and bypasses every other, dirty state tracked along each tensor's accesses.
    Hits are accesses reached with the tensor on chip (a write that allocates is not one)."""
    n = workload.n_accesses
    writes = workload.is_write if workload.has_writes else np.zeros(n, np.bool_)
    kept_into = np.zeros(n, np.bool_)  # access i is reached with its tensor on chip
    kept_into[ivs.end[kept]] = True
    reads_missed = ~writes & ~kept_into & ~persist_marks(workload)
    read_bytes = int(workload.access_bytes[reads_missed].sum())
    dirty = dirty_states(workload.previous_use, writes, kept_into)
    # a writeback: an interval not kept that starts dirty and whose data is read next, or any interval dirty at
    # its start that ends in a persist mark (written back at an eviction or at the mark)
    writeback = dirty[ivs.start] & ((~kept & ivs.end_reads) | ivs.end_persists)
    write_bytes = int(ivs.size[writeback].sum())
    hits = int(np.count_nonzero(kept_into))
    return read_bytes, write_bytes, hits, int(writeback.sum())


@dataclass(frozen=True)
class OptimalResult:
    """The optimum's bracket at ``capacity_mb``.

    ``lower_mb``: certified lower bound on DRAM traffic (reads + writes, MB)
    of every policy (the flow relaxation; with byte granularity, the optimum
    itself for plain traces). ``upper_mb``: traffic of an achievable
    whole-tensor schedule with bypass (the flow rounded), so the whole-tensor
    optimum is in [lower_mb, upper_mb]; ``gap_pct`` = 100 (upper - lower) /
    lower. ``exact_mb``: the whole-tensor optimum by integer programming
    (``method="milp"``), else None. ``lower_read_mb``/``lower_write_mb`` and
    ``upper_read_mb``/``upper_write_mb`` split them. ``metrics``: the keys of
    ``SimulationResult.metrics`` for the schedule behind ``upper_mb`` (or the
    exact one). ``plan``: one row per interval (tensor_id, start and end
    access, size_mb, ``kept_fraction`` in the flow, ``kept`` in the
    whole-tensor schedule). ``upper_source``: which schedule gives
    ``upper_mb`` (the flow rounding, or a Belady schedule).
    """

    capacity_mb: float
    lower_mb: float
    upper_mb: float
    lower_read_mb: float
    lower_write_mb: float
    upper_read_mb: float
    upper_write_mb: float
    exact_mb: Optional[float]
    metrics: dict
    plan: pd.DataFrame = field(repr=False)
    method: str = "flow"
    upper_source: str = "flow rounding"

    @property
    def gap_pct(self) -> float:
        """How far the achievable schedule is above the lower bound, in % of the bound (0: exact)."""
        return 100.0 * (self.upper_mb - self.lower_mb) / self.lower_mb if self.lower_mb > 0 else 0.0

    @property
    def bound_mb(self) -> float:
        """The best known value of the optimum: the exact one when computed, else the lower bound."""
        return self.exact_mb if self.exact_mb is not None else self.lower_mb


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


def check_exact_size(ivs: Intervals) -> None:
    """ValueError when the integer program for these intervals would be too large to solve in reasonable time."""
    m = ivs.start.shape[0]
    if m > MAX_EXACT_INTERVALS:
        raise ValueError(f"method='milp' solves traces of at most {MAX_EXACT_INTERVALS} intervals (reuses); this "
                         f"one has {m}: use method='flow' (lower and upper bounds) instead")
    gaps = int((ivs.end - ivs.start).sum())
    if gaps > MAX_EXACT_NONZEROS:
        raise ValueError(f"method='milp': this trace's intervals span {gaps} gaps in all, more than "
                         f"{MAX_EXACT_NONZEROS}; use method='flow'")


def _milp(workload: Workload, ivs: Intervals, capacity_bytes: int) -> np.ndarray:
    """The whole-tensor optimum with bypass by integer programming: which intervals to keep (bool each)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    check_exact_size(ivs)
    m = ivs.start.shape[0]
    if m == 0:  # no tensor is used twice: nothing to keep
        return np.zeros(0, np.bool_)
    n = workload.n_accesses
    spans = ivs.end - ivs.start
    # variables: x (kept, binary), d (dirty at the start), b (writeback) per interval
    size = ivs.size.astype(np.float64)
    # a persist mark writes back the interval's data when it is dirty at the interval's start
    cost = np.concatenate([-size * ivs.end_reads, size * ivs.end_persists, size * ivs.end_reads])
    rows = np.repeat(np.arange(m), spans)
    gaps = np.concatenate([np.arange(a, b) for a, b in zip(ivs.start, ivs.end)]) if m else np.zeros(0, np.int64)
    capacity = coo_matrix((size[rows], (gaps, rows)), shape=(max(n - 1, 1), 3 * m))
    constraints = [LinearConstraint(capacity, -np.inf, capacity_bytes)]
    # d_k >= 1 when k starts with a write; d_k >= d_p + x_p - 1 for the interval p that ends where k starts
    prev = np.full(n, -1, np.int64)
    prev[ivs.end] = np.arange(m)
    p = prev[ivs.start]
    chained = np.flatnonzero(p >= 0)
    if chained.size:
        r = np.arange(chained.size)
        rows_ = np.concatenate([r, r, r])
        cols = np.concatenate([m + chained, m + p[chained], p[chained]])
        vals = np.concatenate([np.ones(chained.size), -np.ones(chained.size), -np.ones(chained.size)])
        constraints.append(LinearConstraint(coo_matrix((vals, (rows_, cols)), shape=(chained.size, 3 * m)), -1,
                                            np.inf))
    # b_k >= d_k - x_k
    r = np.arange(m)
    wb = coo_matrix((np.concatenate([np.ones(m), -np.ones(m), np.ones(m)]),
                     (np.concatenate([r, r, r]), np.concatenate([2 * m + r, m + r, r]))), shape=(m, 3 * m))
    constraints.append(LinearConstraint(wb, 0, np.inf))
    lower = np.zeros(3 * m)
    lower[m:2 * m] = ivs.start_writes
    integrality = np.concatenate([np.ones(m), np.zeros(2 * m)])
    result = milp(cost, constraints=constraints, integrality=integrality, bounds=Bounds(lower, np.ones(3 * m)))
    if not result.success:
        raise RuntimeError(f"the integer program was not solved: {result.message}")
    return result.x[:m] > 0.5


def _best_schedule(workload: Workload, ivs: Intervals, around: np.ndarray, capacity_bytes: int):
    """The whole-tensor schedule with the least exact traffic among the flow rounded (keep the intervals it keeps
    whole) and Belady's with and without bypass (an interval is kept when its end is a hit: with whole tensors
    and no access in between, the tensor stayed resident); returns (kept, source, read bytes, write bytes). A
    schedule read from a simulation fits the buffer, as the simulation did."""
    from lab.sim.policy import get_policy
    from lab.sim.simulate import simulate

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


def _metrics(workload: Workload, ivs: Intervals, kept: np.ndarray, capacity_bytes: int, cost: CostModel) -> dict:
    n = workload.n_accesses
    read_bytes, write_bytes, hits, writebacks = schedule_traffic(workload, ivs, kept)
    held = np.zeros(n + 1, np.int64)
    np.add.at(held, ivs.start[kept], ivs.size[kept])
    np.subtract.at(held, ivs.end[kept], ivs.size[kept])
    moved = read_bytes + write_bytes
    wait_ms = float(cost.transfer_ms(moved))
    writes = workload.is_write if workload.has_writes else np.zeros(n, np.bool_)
    kept_into = np.zeros(n, np.bool_)
    kept_into[ivs.end[kept]] = True
    # a write not reached on chip allocates when it fits (the schedule holds it from there), else streams out
    allocated = int(np.count_nonzero(writes & ~kept_into & (workload.access_bytes <= capacity_bytes)))
    accesses = n - workload.n_persist  # persist marks are rows, not accesses
    misses = accesses - hits - allocated
    read_hits = int(np.count_nonzero(kept_into & ~writes))
    # dirty data not kept whose next access overwrites it: dropped, not written back
    dirty = dirty_states(workload.previous_use, writes, kept_into)
    skipped = ~kept & dirty[ivs.start] & ~ivs.end_reads & ~ivs.end_persists
    reads = accesses - int(np.count_nonzero(writes))
    bytes_total = workload.total_bytes
    return {
        "cache_hits": hits,
        "dram_accesses": misses,
        "total_latency": float((hits + allocated) * cost.hit_latency_ms + (misses + writebacks) * cost.miss_latency_ms
                               + moved / BYTES_PER_MB * cost.miss_latency_ms_per_mb + wait_ms),
        "evictions": int(np.count_nonzero(~kept)),
        "bandwidth_wait_time": wait_ms,
        "cache_hit_rate": 100.0 * hits / accesses if accesses else 0.0,
        "read_hit_rate": 100.0 * read_hits / reads if reads else 0.0,
        "accesses": accesses,
        "write_allocations": allocated,
        "read_hits": read_hits,
        "compulsory_misses": compulsory_misses(workload),
        "uncacheable_accesses": int(np.count_nonzero((workload.access_bytes > capacity_bytes)
                                                     & ~persist_marks(workload))),
        "bytes_from_dram": read_bytes,
        "byte_hit_rate": 100.0 * float(workload.access_bytes[kept_into].sum()) / bytes_total if bytes_total else 0.0,
        "dram_reads_mb": float(bytes_to_mb(read_bytes)),
        "dram_writes_mb": float(bytes_to_mb(write_bytes)),
        "dram_traffic_mb": float(bytes_to_mb(moved)),
        "writebacks": writebacks,
        "writebacks_skipped": int(np.count_nonzero(skipped)),
        "persist_writeback_mb": float(bytes_to_mb(ivs.size[ivs.end_persists & dirty[ivs.start]].sum())),
        "dead_drops": int(np.count_nonzero((workload.next_use < 0) & ~persist_marks(workload))),
        "peak_occupancy_mb": float(bytes_to_mb(np.cumsum(held).max())) if n else 0.0,
    }


def lower_bound_mb(trace, capacity_mb: float, solver: str = "highs") -> float:
    """``optimal(trace, capacity_mb).lower_mb`` alone (the flow, no schedule): the certified lower bound on DRAM
    traffic (MB read + written) at ``capacity_mb`` MB. For searches over capacities."""
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


def optimal(trace, capacity_mb: float, cost=None, method: str = "flow", solver: str = "highs") -> OptimalResult:
    """The least DRAM traffic (MB read + written) any policy can reach on ``trace`` with ``capacity_mb`` MB
    (MiB) on chip, as a bracket [lower_mb, upper_mb]; see the module docstring for the model.

    Takes a trace DataFrame or Workload, the capacity in MB, a cost model or
    preset (for the latency in ``metrics``) and ``method``: ``"flow"`` (the
    min-cost-flow bounds, any trace size) or ``"milp"`` (also the exact
    whole-tensor optimum by integer programming; small traces only, a
    ValueError beyond MAX_EXACT_INTERVALS intervals), and the flow's
    ``solver``: ``"highs"`` (HiGHS' dual simplex through scipy, the default:
    16x faster than OR-Tools on 16,000 accesses) or ``"ortools"`` (OR-Tools'
    min-cost flow, exact integer arithmetic); both give the same optimum.
    Returns an OptimalResult. Raises ValueError for a capacity that is not a
    finite number > 0, an empty or malformed trace, or an unknown method or
    solver.
    """
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    _check_solver(solver)
    cost = resolve_cost(cost)
    workload = encode_trace(trace)
    if workload.n_accesses == 0:
        raise ValueError("the trace is empty: there is nothing to bound")
    check_flow_size(workload)
    capacity_bytes = int(mb_to_bytes(capacity_mb))
    ivs = intervals_of(workload)
    if method == "milp":
        check_exact_size(ivs)  # before the flow: refuse at once
    around, flow_read, flow_write = _flow(ivs, workload.n_accesses, capacity_bytes, solver)
    compulsory = compulsory_read_bytes(workload)
    lower_read, lower_write = compulsory + flow_read, flow_write + persist_write_bytes(ivs)
    kept, upper_source, upper_read, upper_write = _best_schedule(workload, ivs, around, capacity_bytes)
    exact = None
    if method == "milp":
        kept = _milp(workload, ivs, capacity_bytes)
        exact_read, exact_write, _, _ = schedule_traffic(workload, ivs, kept)
        exact = float(bytes_to_mb(exact_read + exact_write))
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
        lower_mb=float(bytes_to_mb(lower_read + lower_write)),
        upper_mb=float(bytes_to_mb(upper_read + upper_write)),
        lower_read_mb=float(bytes_to_mb(lower_read)),
        lower_write_mb=float(bytes_to_mb(lower_write)),
        upper_read_mb=float(bytes_to_mb(upper_read)),
        upper_write_mb=float(bytes_to_mb(upper_write)),
        exact_mb=exact,
        metrics=_metrics(workload, ivs, kept, capacity_bytes, cost),
        plan=plan,
        method=method,
        upper_source=upper_source,
    )
