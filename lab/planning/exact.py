"""The planner's own optimum on small traces (issue 26, plan section 2.6): how far ``lab.plan`` is from the best
schedule of its own model.

The model is ``lab.planning.planner``'s: per interval of a tensor (``lab.bounds.optimal.Intervals``, plus one per
first read, which can be prefetched or bypassed but not kept) one decision, **bypass**, **keep** (real intervals)
or **prefetch** issued after op *s* for each legal *s* (an interval whose end reads, from its start op, or from
before the first op for a first read, to the op before its reader); a dirty interval bypassed at its end is
**written through** by its producer or **evicted** by a write copy issued after its producer with a deadline op
(the producer's next op through its next reader, or the end of the step); a dirty interval prefetched is written
through (an eviction and a prefetch of the same data would need an order between the two copies that the runtime
does not keep), as the greedy does. Every decision vector is priced and timed by the planner's own runtime
simulator (``_Problem.run``'s pricing and ``simulate_copies``: XLA's rules).

- ``exhaustive_plan``: every decision vector of a trace of at most ``max_intervals`` intervals, each simulated and
  rejected when it breaks ``lab.check_plan``'s capacity or copies-in-flight rule (bandwidth and data readiness
  hold by construction of the simulator); the fastest is returned as a ``PlanResult`` (``check_plan`` passes on
  it) with the count enumerated. Exact: the optimum of the model.
- ``plan_optimum``: an integer program of the same model with fluid copies (HiGHS through
  ``scipy.optimize.milp``), a **lower bound** on the model's optimum for traces too large to enumerate (tens of
  ops); with the planner's decisions fixed, a lower bound on that plan's simulated time.
- ``planner_gap``: the planner's step time against the exhaustive optimum (or the integer program's bound):
  ``planner_ms / optimum_ms - 1`` in %.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from lab.bounds.optimal import check_time_limit_s
from lab.checks import check_int, check_number, check_str
from lab.planning.checks import _peak, _slack, check_plan
from lab.planning.planner import (BYPASS, KEEP, PREFETCHED, PlannerOptions, PlanResult, _problem, _Problem, _result,
                                  decide)
from lab.planning.runtime import EVICTION, PREFETCH
from lab.sim.timing import dram_bytes_per_ms, launch_latency_ms, memory_combine_of, step_times
from lab.units import BYTES_PER_MB, percent_above

MAX_VECTORS = 200_000  # exhaustive_plan's default limit on the decision vectors it may enumerate
ROUNDING = 1e-8  # relative: plan_optimum's bound is lowered by this much (HiGHS' tolerances, float sums)
METHODS = ("auto", "exhaustive", "milp")
MIP_REL_GAP = 1e-9  # plan_optimum's default: HiGHS stops when its bounds are this close (relative)
# plan_optimum's programs hold about 2 x the sum over intervals of (ops in the copy's window)^2 nonzeros (measured
# 2.0-2.4x on captured GPT-2s of 1-5 layers); HiGHS does not stop at its time limit inside presolve or the root
# LP of a large one (the 12-layer GPT-2 forward: 4.7 million nonzeros, 169 s against a 10 s limit, 1.6 GB)
MAX_PROGRAM_NONZEROS = 1_000_000
US_PER_MS = 1000.0  # the integer program works in microseconds and MiB (coefficients near 1 for HiGHS)


@dataclass(frozen=True)
class ExhaustiveResult:
    """``exhaustive_plan``'s answer. ``plan``: the fastest feasible decision vector as a ``PlanResult`` (seed
    ``"exhaustive"``); ``step_time_ms``: its simulated step (ms), the model's optimum; ``enumerated``: the
    decision vectors simulated; ``intervals``: the decisions per vector (intervals, first reads included)."""

    plan: PlanResult
    step_time_ms: float
    enumerated: int
    intervals: int


@dataclass(frozen=True)
class OptimumBound:
    """``plan_optimum``'s answer (ms). ``lower_ms``: no schedule of the model is faster (with ``fixed``: the
    fixed decisions' simulated step is no faster); ``upper_ms``: the best solution of the integer program found,
    its value (NaN when none was found); the two are equal, within ``mip_rel_gap``, when ``solved``; when the time
    limit cut the search, [``lower_ms``, ``upper_ms``] brackets the program's optimum. ``status``: HiGHS' message;
    ``seconds``: the solve's wall time; ``binaries``, ``variables``, ``constraints``: the program's size;
    ``fixed``: whether decisions were fixed."""

    lower_ms: float
    upper_ms: float
    solved: bool
    status: str
    seconds: float
    binaries: int
    variables: int
    constraints: int
    fixed: bool


@dataclass(frozen=True)
class PlannerGap:
    """``planner_gap``'s answer: ``planner_ms`` (``lab.plan``'s step), ``optimum_ms`` (the exhaustive optimum, or
    the integer program's lower bound: then ``gap_pct`` is an upper bound on the true gap), ``gap_pct`` (how far
    the planner is above it, %), ``method`` (``"exhaustive"`` or ``"milp"``), ``intervals`` (decisions)."""

    planner_ms: float
    optimum_ms: float
    gap_pct: float
    method: str
    intervals: int


class _Space:
    """The legal decisions of each interval of ``problem`` (see the module)."""

    def __init__(self, problem: _Problem):
        p = problem
        self.k = p.size.shape[0]
        real = np.arange(self.k) < p.n_real
        self.can_keep = real
        first, need = p.start_op, p.need_op
        # the greedy's candidates (planner._prefetch): data in DRAM from the start op on, a reader in a later op
        self.can_fetch = p.end_reads & (need >= 0) & (need > first) & ((p.start < 0) | (first >= 0))
        self.first_issue = first  # issue after op s, first_issue <= s < need (-1: before the first op)
        self.limit = np.where(p.end_reads, need, p.n_ops)  # an eviction's latest deadline (n_ops: the step's end)
        self.can_evict = real & (p.end_reads | p.end_persists) & (first >= 0) & (self.limit >= first + 1)

    def issues(self, k: int) -> range:
        return range(int(self.first_issue[k]), int(self.limit[k]))

    def deadlines(self, k: int) -> range:
        return range(int(self.first_issue[k]) + 1, int(self.limit[k]) + 1)

    def vectors_bound(self) -> int:
        """An upper bound on the decision vectors (every eviction option counted as if its interval were dirty)."""
        count = 1
        for k in range(self.k):
            count *= 1 + int(self.can_keep[k]) + (len(self.issues(k)) if self.can_fetch[k] else 0)
            if self.can_evict[k]:
                count *= 1 + len(self.deadlines(k))
        return count


def _fits(problem: _Problem, state, copies, kinds, need, out) -> bool:
    """``lab.check_plan``'s rules 1 and 2 (capacity, copies in flight) on one simulated decision vector."""
    start, end, _, c_start, c_end, _, total = out
    end = end.copy()
    end[-1] = total  # the flush row ends with the step, as in _Problem.run
    res = problem.residency(state, start, end, copies, kinds, need, c_start, c_end)
    spans = res["to_ms"] > res["from_ms"]
    level, _ = _peak(res["from_ms"][spans], res["to_ms"][spans], res["size_mb"][spans])
    if level > problem.capacity_mb + _slack(problem.capacity_mb):
        return False
    opts = problem.options
    for kind, limit in ((PREFETCH, opts.max_outstanding_prefetches), (EVICTION, opts.max_outstanding_evictions)):
        mine = kinds == kind
        if mine.sum() > limit:
            count, _ = _peak(c_start[mine], c_end[mine], np.ones(int(mine.sum())))
            if count > limit:
                return False
    return True


def _price_many(problem: _Problem, byte_vectors: list, chunk: int = 2048) -> list:
    """(gpu_ms, dram_ms, host_ms) per op, the flush last, for each (read, write, flush) bytes of ``byte_vectors``
    (``_Problem.op_bytes``' arrays): ``_Problem.priced``'s pricing (``lab.sim.timing.step_times``) done once on the
    ops repeated, ``chunk`` vectors at a time; the flush pseudo-op moves its bytes at DRAM bandwidth."""
    n = problem.n_ops
    rate = dram_bytes_per_ms(problem.cost)
    out = []
    for first in range(0, len(byte_vectors), chunk):
        part = byte_vectors[first:first + chunk]
        table = pd.concat([problem.table] * len(part))
        ops = step_times(table, np.concatenate([v[0] for v in part]), np.concatenate([v[1] for v in part]), 0,
                         problem.cost, problem.options.execution).ops
        columns = [ops[name].to_numpy(np.float64)[:n * len(part)].reshape(len(part), n)
                   for name in ("gpu_ms", "dram_ms", "host_ms")]
        for j, (_, _, flush) in enumerate(part):
            flush_ms = flush / rate
            out.append((np.append(columns[0][j], flush_ms), np.append(columns[1][j], flush_ms),
                        np.append(columns[2][j], 0.0)))
    return out


def exhaustive_plan(trace, capacity_mb: float, cost="H200", options: Optional[PlannerOptions] = None,
                    max_intervals: int = 9, max_vectors: int = MAX_VECTORS) -> ExhaustiveResult:
    """The fastest schedule of ``lab.plan``'s model for ``trace`` (same arguments as ``lab.plan``: a scratchpad
    of ``capacity_mb`` MB (MiB), ``cost`` a preset with the physical numbers, ``options`` ``PlannerOptions``), found
    by simulating every decision vector (see the module) with the planner's runtime simulator and keeping the
    fastest that ``lab.check_plan``'s capacity and copies-in-flight rules accept (ties: the first found).

    Refuses (one-line ValueError) a trace of more than ``max_intervals`` intervals (first reads included), or
    whose decision vectors may exceed ``max_vectors`` (the estimate is given), besides ``lab.plan``'s errors."""
    max_intervals = check_int("max_intervals", max_intervals)
    max_vectors = check_int("max_vectors", max_vectors)
    return _exhaustive(_problem(trace, capacity_mb, cost, options), max_intervals, max_vectors)


def _exhaustive(problem: _Problem, max_intervals: int, max_vectors: int) -> ExhaustiveResult:
    space = _Space(problem)
    if space.k > max_intervals:
        raise ValueError(f"exhaustive_plan: the trace has {space.k} intervals (first reads included), above "
                         f"max_intervals={max_intervals}; use plan_optimum for a lower bound")
    bound = space.vectors_bound()
    if bound > max_vectors:
        raise ValueError(f"exhaustive_plan: up to {bound:,} decision vectors, above max_vectors={max_vectors:,}")
    kinds_per = [[BYPASS] + ([KEEP] if space.can_keep[k] else []) + ([PREFETCHED] if space.can_fetch[k] else [])
                 for k in range(space.k)]
    n_real = problem.n_real
    combos = []  # (state, evicted intervals, pricing key): the decisions that fix each op's bytes
    keys = {}  # per-op bytes -> position in `pricings`
    for kinds in itertools.product(*kinds_per):
        state = np.array(kinds, np.int8)
        back = np.zeros(space.k, np.bool_)
        back[:n_real] = problem.writebacks(state) & (state[:n_real] == BYPASS)
        can = np.flatnonzero(back & space.can_evict)
        for chosen in itertools.product((False, True), repeat=can.shape[0]):
            evicted = can[np.array(chosen, np.bool_)] if can.shape[0] else can
            marks = np.full(space.k, -1, np.int64)
            marks[evicted] = 0  # the bytes do not depend on the deadline
            read, write, flush = problem.op_bytes(state, marks)
            key = (read.tobytes(), write.tobytes(), flush)
            if key not in keys:
                keys[key] = (len(keys), read, write, flush)
            combos.append((state, evicted, keys[key][0]))
    pricings = _price_many(problem, [v[1:] for v in sorted(keys.values(), key=lambda v: v[0])])
    best = None  # (step, state, issue, evict)
    enumerated = 0
    for state, evicted, at in combos:
        fetched = np.flatnonzero(state == PREFETCHED)
        for issues in itertools.product(*(space.issues(k) for k in fetched)):
            issue = np.full(space.k, -1, np.int64)
            issue[fetched] = issues
            for deadlines in itertools.product(*(space.deadlines(k) for k in evicted)):
                evict = np.full(space.k, -1, np.int64)
                evict[evicted] = deadlines
                copies, kinds_c, _, need, out = problem.simulated(pricings[at], state, issue, evict)
                enumerated += 1
                step = float(out[6])
                if best is not None and step >= best[0]:
                    continue
                if _fits(problem, state, copies, kinds_c, need, out):
                    best = (step, state, issue, evict)
    _, state, issue, evict = best  # bypassing everything is always feasible with streaming
    result = _result(problem, "exhaustive", state, problem.run(state, issue, evict))
    check_plan(result)
    return ExhaustiveResult(plan=result, step_time_ms=result.step_time_ms, enumerated=enumerated, intervals=space.k)


class _Columns:
    """The integer program's variables: bounds, integrality and objective coefficient of each column."""

    def __init__(self):
        self.lb, self.ub, self.integral, self.cost = [], [], [], []

    def add(self, lb=0.0, ub=math.inf, integral=False, cost=0.0) -> int:
        self.lb.append(lb)
        self.ub.append(ub)
        self.integral.append(1 if integral else 0)
        self.cost.append(cost)
        return len(self.lb) - 1


class _Rows:
    """The integer program's constraints lo <= sum(coef * x) <= hi, as sparse triplets."""

    def __init__(self):
        self.rows, self.cols, self.vals, self.lo, self.hi = [], [], [], [], []

    def add(self, terms, lo=-math.inf, hi=math.inf):
        r = len(self.lo)
        merged = {}
        for col, val in terms:
            merged[col] = merged.get(col, 0.0) + val
        for col, val in merged.items():
            if val != 0.0:
                self.rows.append(r)
                self.cols.append(col)
                self.vals.append(val)
        self.lo.append(lo)
        self.hi.append(hi)


def _program(problem: _Problem, fixed=None):
    """The integer program of ``plan_optimum`` (see its docstring) on ``problem``, in microseconds and MiB:
    (columns, rows, the number of binaries, the trivial lower bound in us)."""
    p = problem
    space = _Space(p)
    n, k_n = p.n_ops, space.k
    times = p.priced(np.zeros(k_n, np.int8)).ops  # the decision-free terms: compute, on-chip, launch, host
    compute = times["compute_ms"].to_numpy()[:n] * US_PER_MS
    onchip = times["onchip_ms"].to_numpy()[:n] * US_PER_MS
    launch = times["launch_ms"].to_numpy()[:n] * US_PER_MS
    host = times["host_ms"].to_numpy()[:n] * US_PER_MS
    combine_sum = memory_combine_of(p.cost) == "sum"
    floor = np.maximum(np.maximum(compute, launch), onchip)
    dram_rate = p.dram_rate / BYTES_PER_MB / US_PER_MS  # MiB per us
    copy_rate = p.copy_rate / BYTES_PER_MB / US_PER_MS
    size = p.size / BYTES_PER_MB
    cols, rows = _Columns(), _Rows()
    d = [cols.add(lb=float(floor[i]) if i < n else 0.0, cost=1.0) for i in range(n + 1)]  # op n: the flush
    g = [cols.add(cost=1.0) for _ in range(n + 2)]  # the wait before op i (stall, host); g[n + 1]: the final drain
    keep = {}
    pre = {}
    for k in range(k_n):
        if space.can_keep[k]:
            keep[k] = cols.add(ub=1.0, integral=True)
        if space.can_fetch[k]:
            for s in space.issues(k):
                pre[k, s] = cols.add(ub=1.0, integral=True)
    ev = {k: cols.add(ub=1.0, integral=True) for k in range(p.n_real) if space.can_evict[k]}
    binaries = len(keep) + len(pre) + len(ev)
    if fixed is not None:
        state, issue, evict = (np.asarray(a) for a in fixed)
        if not state.shape == issue.shape == evict.shape == (k_n,):
            raise ValueError(f"fixed: (state, issue, evict) must each hold one value per interval, {k_n} here "
                             f"(planner_decisions gives them), got shapes {state.shape}, {issue.shape}, {evict.shape}")
        for k, c in keep.items():
            cols.lb[c] = cols.ub[c] = float(state[k] == KEEP)
        for (k, s), c in pre.items():
            cols.lb[c] = cols.ub[c] = float(state[k] == PREFETCHED and issue[k] == s)
        for k, c in ev.items():
            cols.lb[c] = cols.ub[c] = float(evict[k] >= 0)
        chosen = [k for k in range(k_n) if state[k] == PREFETCHED and (k, int(issue[k])) not in pre]
        chosen += [k for k in range(k_n) if evict[k] >= 0 and k not in ev]
        if chosen or any(state[k] == KEEP and k not in keep for k in range(k_n)):
            raise ValueError(f"fixed: decisions outside the model for intervals {sorted(set(chosen))}")

    def fetched_terms(k, scale=1.0):  # keep_k + sum_s pre_{k,s}: the interval's data is on chip at its end
        terms = [(keep[k], scale)] if k in keep else []
        if space.can_fetch[k]:
            terms += [(pre[k, s], scale) for s in space.issues(k)]
        return terms

    for k in range(k_n):
        if len(fetched_terms(k)) > 1:
            rows.add(fetched_terms(k) + ([(ev[k], 1.0)] if k in ev else []), hi=1.0)
        elif k in ev:
            rows.add(fetched_terms(k) + [(ev[k], 1.0)], hi=1.0)
    # dirty at each real interval's start: written there, or reached kept from a dirty start (dirty_states)
    writes = p.writes
    ends_at = np.full(p.workload.n_accesses, -1, np.int64)
    ends_at[p.end] = np.arange(k_n)
    dirty = {}
    for k in range(p.n_real):
        j = p.start[k]
        pred = ends_at[j]
        if writes[j]:
            dirty[k] = cols.add(lb=1.0, ub=1.0)
        elif 0 <= pred < p.n_real and pred in keep:
            dirty[k] = cols.add(ub=1.0)
            rows.add([(dirty[k], 1.0), (dirty[pred], -1.0), (keep[pred], -1.0)], lo=-1.0)  # pred < k: in order
        else:
            dirty[k] = cols.add(lb=0.0, ub=0.0)
    # DRAM bytes (MiB) of each op (n: the flush) as (constant, terms)
    slot = np.where(p.pos >= 0, p.pos, n)
    dram_const = np.zeros(n + 1)
    dram_terms = [[] for _ in range(n + 1)]
    reads = ~writes & ~p.marks
    for j in np.flatnonzero(reads):
        mib = p.workload.access_bytes[j] / BYTES_PER_MB
        dram_const[slot[j]] += mib
        k = ends_at[j]
        if k >= 0:
            dram_terms[slot[j]] += fetched_terms(k, -mib)
    ivs = p.ivs
    for k in range(p.n_real):
        if not (ivs.end_reads[k] or ivs.end_persists[k]):
            continue
        # written through: dirty at the start, not kept, not evicted
        through = cols.add(ub=1.0)
        rows.add([(through, 1.0), (dirty[k], -1.0)] + ([(keep[k], 1.0)] if k in keep else [])
                 + ([(ev[k], 1.0)] if k in ev else []), lo=0.0)
        dram_terms[slot[p.start[k]]].append((through, float(size[k])))
        if ivs.end_persists[k] and k in keep:  # kept dirty into a persist mark: written back at the flush
            flushed = cols.add(ub=1.0)
            rows.add([(flushed, 1.0), (dirty[k], -1.0), (keep[k], -1.0)], lo=-1.0)
            dram_terms[n].append((flushed, float(size[k])))
    for i in range(n + 1):  # d_i >= DRAM time (max) or DRAM + on-chip time (sum)
        terms = [(d[i], 1.0)] + [(c, -v / dram_rate) for c, v in dram_terms[i]]
        rows.add(terms, lo=dram_const[i] / dram_rate + (onchip[i] if combine_sum and i < n else 0.0))
    # copies: bytes moved in window i (the wait before op i and op i's DRAM-idle time); z: in the last wait only
    window = [[] for _ in range(n + 2)]  # (column, MiB per unit) moved in window i
    gap_only = [[] for _ in range(n + 2)]
    fetch_moved = {}  # (k, i) -> column: prefetch bytes of interval k moved in window i (i < its reader)
    evict_moved = {}
    for k in range(k_n):
        if not space.can_fetch[k]:
            continue
        b = int(p.need_op[k])
        total = []
        for i in range(space.first_issue[k] + 1, b):
            y = cols.add()
            fetch_moved[k, i] = y
            window[i].append(y)
            total.append((y, 1.0))
            rows.add([(y, 1.0)] + [(pre[k, s], -size[k]) for s in space.issues(k) if s < i], hi=0.0)
        z = cols.add()
        window[b].append(z)
        gap_only[b].append(z)
        rows.add(total + [(z, 1.0)] + [(pre[k, s], -size[k]) for s in space.issues(k)], lo=0.0, hi=0.0)
    for k, e in ev.items():
        a = int(p.start_op[k])
        last = int(space.limit[k]) if space.limit[k] < n else n + 1
        total = []
        for i in range(a + 1, last):
            y = cols.add()
            evict_moved[k, i] = y
            window[i].append(y)
            total.append((y, 1.0))
        z = cols.add()
        window[last].append(z)
        gap_only[last].append(z)
        rows.add(total + [(z, 1.0), (e, -size[k])], lo=0.0, hi=0.0)
    for i in range(n + 2):
        if gap_only[i]:
            rows.add([(z, 1.0) for z in gap_only[i]] + [(g[i], -copy_rate)], hi=0.0)
        if i <= n and window[i]:
            # moved <= rate * (g_i + d_i - own DRAM time)
            terms = ([(y, 1.0) for y in window[i]] + [(g[i], -copy_rate), (d[i], -copy_rate)]
                     + [(c, copy_rate * v / dram_rate) for c, v in dram_terms[i]])
            rows.add(terms, hi=-copy_rate * dram_const[i] / dram_rate)
    if p.options.execution == "eager":  # op i starts after the host issued it: sum_{j<i}(g_j + d_j) + g_i >= h_i
        ready = np.cumsum(host) + launch_latency_ms(p.cost) * US_PER_MS
        for i in range(n):
            rows.add([(g[j], 1.0) for j in range(i + 1)] + [(d[j], 1.0) for j in range(i)], lo=float(ready[i]))
    # the buffer and copies in flight at the end of each op that lasts (a time check_plan's peak includes)
    capacity = (p.capacity_mb + _slack(p.capacity_mb)) * 1.0
    occ_from_reached = p.occ[np.maximum(p.start, 0)] + 1
    occ_to = p.occ[p.end]
    limits = (p.options.max_outstanding_prefetches, p.options.max_outstanding_evictions)
    for i in range(n):
        if floor[i] <= 0.0:
            continue
        held = []
        fetch_count, evict_count = [], []
        const = p.extra[i] / BYTES_PER_MB
        for k, c in keep.items():
            if occ_from_reached[k] <= i <= occ_to[k]:
                held.append((c, size[k]))
            elif p.occ[p.start[k]] == i and i <= occ_to[k]:
                # the op of its start: held unless reached on chip (its predecessor kept or prefetched)
                u = cols.add(ub=1.0)
                pred = ends_at[p.start[k]]
                rows.add([(u, 1.0), (c, -1.0)] + (fetched_terms(pred) if pred >= 0 else []), lo=0.0)
                held.append((u, size[k]))
        for (k, s), c in pre.items():
            if s < i <= p.need_op[k]:
                held.append((c, size[k]))
            if s < i < p.need_op[k]:
                fetch_count.append((c, 1.0))
        for (k, j), y in fetch_moved.items():
            if j <= i < p.need_op[k]:
                fetch_count.append((y, -1.0 / size[k]))
        for k, e in ev.items():
            a = int(p.start_op[k])
            last = int(space.limit[k]) if space.limit[k] < n else n + 1
            if a == i and writes[p.start[k]]:
                held.append((e, size[k]))
            if a < i < last:
                held.append((e, size[k]))
                evict_count.append((e, 1.0))
                for j in range(a + 1, i + 1):
                    held.append((evict_moved[k, j], -1.0))
                    evict_count.append((evict_moved[k, j], -1.0 / size[k]))
        if held:
            rows.add(held, hi=capacity - const)
        for count, limit in zip((fetch_count, evict_count), limits):
            if count:
                rows.add(count, hi=float(limit))
    return cols, rows, binaries, float(floor.sum())


def plan_optimum(trace, capacity_mb: float, cost="H200", options: Optional[PlannerOptions] = None,
                 time_limit_s: float = 10.0, mip_rel_gap: float = MIP_REL_GAP, fixed=None) -> OptimumBound:
    """A lower bound (ms) on the step time of every schedule of ``lab.plan``'s model for ``trace`` (same
    arguments as ``lab.plan``), from an integer program solved by HiGHS (``scipy.optimize.milp``) within
    ``time_limit_s`` seconds (> 0): never an error when the limit cuts the search, a bracket instead (see
    ``OptimumBound``). ``fixed``: (state, issue, evict) decisions per interval (``planner_decisions``' or
    ``lab.planning.planner.decide``'s) to fix, giving a lower bound on their simulated step. ``mip_rel_gap``: the
    relative gap between HiGHS' bounds at which it stops (in [0, 1]; ``solved`` then means within it). A trace
    whose program would hold more than ``MAX_PROGRAM_NONZEROS`` nonzeros (``program_nonzeros``: about 6 layers of
    GPT-2) is refused with a one-line ValueError giving the estimate, before the program is built.

    The program (plan section 2.6): binaries keep / prefetch issued after op *s* / bypass (the rest) per interval,
    and evict per interval that may be dirty (only where it is bypassed); continuous op durations ``d_i`` >= the
    op's compute, launch and on-chip time and its DRAM time (``memory_combine``: max, or sum with on-chip), the
    DRAM bytes linear in the decisions (bypassed reads, dirty intervals written through, the flush); waits ``g_i``
    before each op (stalls, and the host in eager execution: op *i* starts after ``h_i`` + launch latency) and a
    final drain; each copy's bytes per window (the wait before op *i* and op *i*'s DRAM-idle time ``d_i`` - its
    DRAM time), all copies within the copy rate times the window, a prefetch between its issue and its reader's
    wait, an eviction between its producer and its latest deadline. Capacity and copies in flight are checked at
    the end of each op whose floor is > 0: kept and prefetched intervals whole, evictions by the bytes they still
    have to move. Objective: the sum of durations and waits, the step time.

    What it relaxes, so its optimum is at most the simulated optimum (every simulated feasible schedule is a
    solution of the program with the same value):
    - the runtime's FIFO order within each queue, and its half-bandwidth sharing when both queues are busy: the
      program lets copies share each window's copy bandwidth in any proportion (the simulator's is one choice);
    - the eviction's deadline: a write copy may move until its latest deadline (any earlier one is a special case);
    - stalls drain only what the reader needs (the simulator drains the queue's front first);
    - capacity and copies in flight are checked at the end of each op only, an eviction counting its bytes left
      and a copy in flight counting the fraction of its bytes left (<= 1 when in flight, 0 when done), not at
      every instant: a linear under-count of ``lab.check_plan``'s peak.
    It is exact (equal to ``exhaustive_plan``) when these do not bind: e.g. at most one copy can ever be in
    flight and no eviction competes for capacity, or no copy helps."""
    time_limit_s = check_time_limit_s(time_limit_s)
    mip_rel_gap = check_number("mip_rel_gap", mip_rel_gap, 0, 1)
    return _optimum(_problem(trace, capacity_mb, cost, options), time_limit_s, mip_rel_gap, fixed)


def program_nonzeros(problem: _Problem) -> int:
    """About how many nonzeros ``plan_optimum``'s program of ``problem`` holds (see MAX_PROGRAM_NONZEROS), from the
    copy windows alone, before it is built."""
    space = _Space(problem)
    fetch = np.where(space.can_fetch, np.maximum(problem.need_op - space.first_issue, 0), 0).astype(np.int64)
    evict = np.where(space.can_evict, np.maximum(space.limit - space.first_issue, 0), 0).astype(np.int64)
    return int(2 * ((fetch * fetch).sum() + (evict * evict).sum()))


def _optimum(problem: _Problem, time_limit_s: float, mip_rel_gap: float, fixed=None) -> OptimumBound:
    size = program_nonzeros(problem)
    if size > MAX_PROGRAM_NONZEROS:
        raise ValueError(f"plan_optimum: the integer program of this trace would hold about {size:,} nonzeros "
                         f"({problem.n_ops:,} ops, {problem.size.shape[0]:,} intervals), above "
                         f"{MAX_PROGRAM_NONZEROS:,}: HiGHS would not stop at its time limit; bound a window of "
                         "the trace (a few layers)")
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_array

    cols, rows, binaries, floor_us = _program(problem, fixed)
    a = csr_array((rows.vals, (rows.rows, rows.cols)), shape=(len(rows.lo), len(cols.lb)))
    clock = time.perf_counter()
    res = milp(np.array(cols.cost), integrality=np.array(cols.integral),
               bounds=Bounds(np.array(cols.lb), np.array(cols.ub)),
               constraints=[LinearConstraint(a, np.array(rows.lo), np.array(rows.hi))] if rows.lo else None,
               options={"time_limit": time_limit_s, "mip_rel_gap": mip_rel_gap, "presolve": True})
    seconds = time.perf_counter() - clock
    upper = float(res.fun) / US_PER_MS if res.x is not None else math.nan
    dual = getattr(res, "mip_dual_bound", None)
    if res.status == 0:
        lower = float(res.fun) if dual is None or not math.isfinite(dual) else min(float(dual), float(res.fun))
    else:
        lower = float(dual) if dual is not None and math.isfinite(dual) else -math.inf
    lower = max(lower, floor_us) if math.isfinite(lower) else floor_us
    lower = lower * (1 - ROUNDING) / US_PER_MS
    if res.status not in (0, 1):  # infeasible or unbounded: a model bug, not the user's input
        raise RuntimeError(f"plan_optimum: HiGHS says {res.message}")
    return OptimumBound(lower_ms=lower, upper_ms=upper, solved=res.status == 0, status=str(res.message),
                        seconds=seconds, binaries=binaries, variables=len(cols.lb), constraints=len(rows.lo),
                        fixed=fixed is not None)


def planner_decisions(trace, capacity_mb: float, cost="H200", options: Optional[PlannerOptions] = None):
    """``lab.plan``'s decisions (state, issue ops, eviction deadlines per interval) and its step time (ms), as
    ``plan_optimum(..., fixed=)`` takes them."""
    problem = _problem(trace, capacity_mb, cost, options)
    _, state, issue, evict, run = decide(problem)
    return (state, issue, evict), run[0].step_time_ms


def planner_gap(trace, capacity_mb: float, cost="H200", options: Optional[PlannerOptions] = None,
                method: str = "auto", max_intervals: int = 9, time_limit_s: float = 10.0) -> PlannerGap:
    """How far ``lab.plan`` is above the optimum of its own model on ``trace`` (same arguments as ``lab.plan``).
    ``method``: ``"exhaustive"`` (``exhaustive_plan``: the exact gap), ``"milp"`` (``plan_optimum``'s lower bound
    within ``time_limit_s``: an upper bound on the gap) or ``"auto"`` (exhaustive when the trace has at most
    ``max_intervals`` intervals and ``MAX_VECTORS`` decision vectors, else milp)."""
    check_str("method", method, METHODS)
    max_intervals = check_int("max_intervals", max_intervals)
    time_limit_s = check_time_limit_s(time_limit_s)
    problem = _problem(trace, capacity_mb, cost, options)
    _, _, _, _, run = decide(problem)
    planned = run[0].step_time_ms
    space = _Space(problem)
    if method == "auto":
        small = space.k <= max_intervals and space.vectors_bound() <= MAX_VECTORS
        method = "exhaustive" if small else "milp"
    if method == "exhaustive":
        best = _exhaustive(problem, max_intervals, MAX_VECTORS).step_time_ms
    else:
        best = _optimum(problem, time_limit_s, MIP_REL_GAP).lower_ms
    return PlannerGap(planner_ms=planned, optimum_ms=best, gap_pct=percent_above(planned, best), method=method,
                      intervals=space.k)


def gap_case(seed: int) -> tuple:
    """A small seeded trace on which prefetching matters, and a capacity for it: (trace, capacity_mb). 4-6 ops in
    a chain through activations of 1-4 MiB; each op is compute-bound (a batched product of 5-50 GFLOP) or a
    memory-bound matrix product reading one of two weights of 8-32 MiB; the capacity is 0.75-2.5 times the
    largest weight. The rows record their ops as captures do (``op_index``, ``flops``, ``launches``, ...)."""
    seed = check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    n_ops = int(rng.integers(4, 7))
    weights = {f"w{j}": float(rng.choice([8.0, 16.0, 24.0, 32.0])) for j in range(2)}
    act_mb = float(rng.choice([1.0, 2.0, 4.0]))
    rows = []
    for i in range(n_ops):
        if rng.random() < 0.5:
            op, flops, accesses = "aten.bmm", float(rng.choice([5e9, 2e10, 5e10])), []
        else:
            w = f"w{int(rng.integers(0, 2))}"
            op, flops, accesses = "aten.addmm", 1e8, [(w, weights[w], "read")]
        accesses = [(f"x{i}", act_mb, "read")] + accesses + [(f"x{i + 1}", act_mb, "write")]
        for tensor, size_mb, access in accesses:
            rows.append({"tensor_id": tensor, "size_mb": size_mb, "access": access, "op": op, "module": f"block{i}",
                         "op_index": i, "flops": flops, "launches": 1, "host_calls": 1, "grad_mode": False,
                         "dtype": "torch.bfloat16", "shape": "(512, 512)"})
    trace = pd.DataFrame(rows).astype({"op_index": np.int64, "launches": np.int16, "host_calls": np.int32})
    capacity_mb = float(rng.choice([0.75, 1.0, 1.5, 2.5])) * max(weights.values())
    return trace, capacity_mb


def planner_gaps(seeds=range(20), cost="H200", options: Optional[PlannerOptions] = None, method: str = "auto",
                 time_limit_s: float = 10.0) -> pd.DataFrame:
    """``planner_gap`` on ``gap_case(seed)`` for each of ``seeds``: one row per trace (``seed``, ``capacity_mb``,
    ``intervals``, ``method``, ``planner_ms``, ``optimum_ms``, ``gap_pct``)."""
    rows = []
    for seed in seeds:
        trace, capacity_mb = gap_case(seed)
        gap = planner_gap(trace, capacity_mb, cost, options, method=method, time_limit_s=time_limit_s)
        rows.append({"seed": seed, "capacity_mb": capacity_mb, "intervals": gap.intervals, "method": gap.method,
                     "planner_ms": gap.planner_ms, "optimum_ms": gap.optimum_ms, "gap_pct": gap.gap_pct})
    return pd.DataFrame(rows)


__all__ = ["ExhaustiveResult", "OptimumBound", "PlannerGap", "exhaustive_plan", "gap_case", "plan_optimum",
           "planner_decisions", "planner_gap", "planner_gaps", "program_nonzeros"]
