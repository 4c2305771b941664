"""``lab.plan``: a prefetching schedule for a trace that records its ops, timed by its runtime simulator.

The model (issue 26, plan section 2): a **scratchpad** of ``capacity_mb`` MB (MiB) that holds whole tensors,
ops run in trace order on one stream, timed by ``lab.sim.timing`` (the roofline; ``execution="eager"`` adds the
host queue), and one copy engine moving data between DRAM and the buffer at ``copy_bandwidth_gb_s`` in DRAM-idle
time (``lab.planning.runtime``, XLA's ``RuntimeSimulator`` rules). Each interval of a tensor (an access to its
next access, ``lab.bounds.optimal.Intervals``) is

- **kept** on chip (only when the tensor is on chip at its start: written there, read into the buffer, or
  reached there), occupying its bytes from the op of its start (the op after it when reached on chip) through
  the op of its end;
- **prefetched**: a read copy issued after op *s* that must be done before the reading op *b* starts (the op
  stalls otherwise), occupying its bytes from the copy's start through op *b*;
- **bypassed**: op *b* reads the bytes from DRAM in its own time (``streaming=True``: GPU and XLA semantics,
  operands may stay in DRAM, so any capacity > 0 is legal).

Dirty data not kept is written through by its producer (in that op's DRAM bytes) or **evicted**: a write copy
issued after its producer, holding its bytes until the copy is done, which must be before a deadline op (at the
latest the tensor's next reader). A tensor kept dirty into a persist mark is written back after the last op (the
``flush``). Dead data is dropped for free. The traffic of a
schedule is ``lab.bounds.optimal.schedule_traffic`` of its kept set (a prefetch moves the bytes a miss moves).

The greedy (MSA-like): seed with the best demand schedule (the optimum's achievable kept intervals, Belady's and
``seed_policies``' scratchpad runs read as kept intervals: an interval is kept iff its end access was on chip),
each repaired to fit the buffer op by op (a kept interval whose op holds too much is dropped, farthest end
first) and timed; then, from the fastest, prefetch bypassed reads of memory-bound ops in order of benefit / sqrt
(size) (MSA's), each at the latest issue op whose DRAM-idle time, net of the copies already committed, covers
``preferred_overlap_ratio`` x its copy time (else the earliest one within ``max_overlap_ratio`` x its copy time
covering ``min_overlap_ratio`` x), where the buffer has room and fewer than ``max_outstanding_prefetches`` copies
are in flight; then evict the dirty intervals left bypassed whose producer is memory-bound, each in the DRAM-idle
time of the ops after its producer (the same ratios, ``max_outstanding_evictions``). The schedule is simulated
and the faster of it and the seed returned: the plan never loses to the demand schedules it was seeded with.

The buffer is checked op by op (stricter than ``lab.simulate``'s access by access): an op's operands and outputs
kept on chip are all resident while it runs, so a demand policy's run can lose a little when read in this model
(an output may not take its input's room within one op).

``lower_bound_ms`` (no whole-tensor schedule of this model is faster): ops are sequential on one stream and none
runs faster than its compute, on-chip or launch time, so the step takes at least their sum; and every schedule
moves at least the byte-granular optimum's traffic (``lab.bounds.optimal.lower_bound_mb``, a prefetch moves the
bytes a miss moves) at no more than the faster of DRAM (``dram_bandwidth_gb_s * dram_efficiency``) and the copy
engine. In eager execution the last op cannot start before the host has issued every op.

**Across steps** (``PlannerOptions.steps`` > 1, XLA's cross-program prefetch): the plan covers that many steps of
the trace run one after another (``lab.trace.ops.repeat_steps``), the same tensors in each, so what one step
leaves on chip (weights that fit) serves the next, and a prefetch for the next step may overlap this step's tail.
Everything the result gives is of that whole window, planned from an empty buffer, and ``per_step`` splits it by
step: the later steps show what stays on chip across steps; no per-step bound is claimed (a step's copies may
run during the step before it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from lab.bounds.optimal import (dirty_states, intervals_of, lower_bound_mb, optimal, persist_marks,
                                schedule_counts)
from lab.checks import check_bool, check_int, check_number, check_positive_mb, check_str
from lab.compiled import kernel, kernel_array
from lab.sim import policy_names, simulate
from lab.sim.cost import MAX_COST_VALUE, MEMORY_COMBINE, MIN_BANDWIDTH_GB_S, resolve_cost
from lab.sim.simulate import capacity_bytes_of, metrics_of_counts
from lab.sim.timing import (EXECUTION_MODES, StepTime, combined_memory_ms, dram_bytes_per_ms, launch_latency_ms,
                             memory_combine_of, missing_numbers, step_times, with_memory_combine)
from lab.trace.ops import op_positions, op_table, repeat_steps
from lab.trace.schema import column_or
from lab.trace.workload import encode_trace
from lab.planning.runtime import EVICTION, KINDS, NO_NEED, PREFETCH, simulate_copies
from lab.units import BYTES_PER_GB_DECIMAL, BYTES_PER_MB, MS_PER_S, bytes_to_mb, percent_above

BYPASS, KEEP, PREFETCHED = 0, 1, 2  # an interval's decision
MODEL = "scratchpad, whole tensors, prefetch and bypass"  # the buffer model of every plan
MAX_RATIO = 1000.0  # the overlap ratios' upper limit
# steps planned as one window: the planner's arrays and the optimum's flow grow with the window, and a few steps
# show what stays on chip across steps (the later ones repeat the second)
MAX_STEPS = 16
NOT_PLACED = -2  # a candidate copy the greedy left out (-1 is an issue before the first op)
OPTIMUM_SEED = "optimum"  # the seed of the optimum's achievable kept intervals


@dataclass(frozen=True)
class PlannerOptions:
    """The planner's options (validated on construction: ValueError naming the field).

    ``copy_bandwidth_gb_s``: the copy engine's rate (decimal GB/s, > 0, at most the preset's
    ``dram_bandwidth_gb_s``; None: ``dram_bandwidth_gb_s * dram_efficiency``). ``max_outstanding_prefetches``,
    ``max_outstanding_evictions``: copies in flight at once (integers >= 1; XLA's options of the same names).
    ``min_overlap_ratio``, ``preferred_overlap_ratio``, ``max_overlap_ratio``: how much DRAM-idle time a prefetch
    must overlap (XLA's ``CostAnalysisPrefetchIntervalPicker``; 0.8 / 1.5 / 10.0, XLA's GPU defaults; min <=
    preferred <= max). ``execution``: ``"graph"`` (the default: the schedule a compiler runs, no host cost) or
    ``"eager"`` (the host queue of ``lab.sim.timing``: such steps are often host-bound and no schedule helps).
    ``memory_combine``: ``"max"`` or ``"sum"`` (None: the preset's). ``streaming``: True (operands may stay in
    DRAM: any capacity > 0 is legal) or False (a buffer kernels must read from: every op's working set, its
    distinct operand and output bytes, must fit, and is counted as occupied during the op).
    ``seed_policies``: the demand policies whose scratchpad runs seed the greedy, besides Belady's and the
    optimum's (names of ``lab.policy_names()``). ``steps``: how many steps of the trace, run one after another,
    the plan covers (1 to ``MAX_STEPS``; see "Across steps" in ``lab.planning.planner``)."""

    copy_bandwidth_gb_s: Optional[float] = None
    max_outstanding_prefetches: int = 8
    max_outstanding_evictions: int = 8
    min_overlap_ratio: float = 0.8
    preferred_overlap_ratio: float = 1.5
    max_overlap_ratio: float = 10.0
    execution: str = "graph"
    memory_combine: Optional[str] = None
    streaming: bool = True
    seed_policies: tuple = ("LRU",)
    steps: int = 1

    def __post_init__(self):
        if self.copy_bandwidth_gb_s is not None:
            value = check_number("PlannerOptions.copy_bandwidth_gb_s", self.copy_bandwidth_gb_s, 0, MAX_COST_VALUE)
            if value < MIN_BANDWIDTH_GB_S:
                raise ValueError(f"PlannerOptions.copy_bandwidth_gb_s must be at least {MIN_BANDWIDTH_GB_S:g} "
                                 f"GB/s, got {value!r}")
        check_int("PlannerOptions.max_outstanding_prefetches", self.max_outstanding_prefetches, 1)
        check_int("PlannerOptions.max_outstanding_evictions", self.max_outstanding_evictions, 1)
        ratios = [check_number(f"PlannerOptions.{name}", getattr(self, name), 0, MAX_RATIO)
                  for name in ("min_overlap_ratio", "preferred_overlap_ratio", "max_overlap_ratio")]
        if not ratios[0] <= ratios[1] <= ratios[2]:
            raise ValueError("PlannerOptions needs min_overlap_ratio <= preferred_overlap_ratio <= max_overlap_ratio, "
                             f"got {ratios[0]:g}, {ratios[1]:g}, {ratios[2]:g}")
        check_str("PlannerOptions.execution", self.execution, EXECUTION_MODES)
        if self.memory_combine is not None:
            check_str("PlannerOptions.memory_combine", self.memory_combine, MEMORY_COMBINE)
        check_bool("PlannerOptions.streaming", self.streaming)
        if isinstance(self.seed_policies, str) or not all(isinstance(p, str) for p in self.seed_policies):
            raise TypeError(f"PlannerOptions.seed_policies must be a tuple of policy names, got {self.seed_policies!r}")
        for name in self.seed_policies:
            if name.lower() not in {p.lower() for p in policy_names()}:
                raise ValueError(f"PlannerOptions.seed_policies: unknown policy {name!r} (see lab.policy_names())")
        object.__setattr__(self, "seed_policies", tuple(self.seed_policies))
        if check_int("PlannerOptions.steps", self.steps, 1) > MAX_STEPS:
            raise ValueError(f"PlannerOptions.steps must be at most {MAX_STEPS} (a window of that many steps shows "
                             f"what stays on chip across steps), got {self.steps!r}")

    def copy_gb_s(self, cost) -> float:
        """The copy engine's rate under ``cost`` (decimal GB/s)."""
        if self.copy_bandwidth_gb_s is None:
            return dram_bytes_per_ms(cost) * MS_PER_S / BYTES_PER_GB_DECIMAL
        if self.copy_bandwidth_gb_s > cost.dram_bandwidth_gb_s:
            raise ValueError(f"PlannerOptions.copy_bandwidth_gb_s={self.copy_bandwidth_gb_s:g} is above the DRAM "
                             f"bandwidth of cost preset {cost.name!r}, {cost.dram_bandwidth_gb_s:g} GB/s")
        return float(self.copy_bandwidth_gb_s)

    def describe(self, cost) -> str:
        """The options in one line, the copy rate resolved under ``cost``."""
        return (f"copies {self.copy_gb_s(cost):g} GB/s, <= {self.max_outstanding_prefetches} prefetches and "
                f"<= {self.max_outstanding_evictions} evictions in flight, overlap ratios {self.min_overlap_ratio:g}/"
                f"{self.preferred_overlap_ratio:g}/{self.max_overlap_ratio:g}, memory_combine="
                f"{self.memory_combine or memory_combine_of(cost)}, streaming={self.streaming}"
                + (f", {self.steps} steps in a row" if self.steps > 1 else ""))


@dataclass(frozen=True)
class PlanResult:
    """A plan (``lab.plan``). ``step_time_ms``: its simulated step; ``lower_bound_ms``: no schedule of the model is
    faster (see ``lab.planning.planner``); ``gap_to_bound_pct``: how far above it the plan is (%). ``metrics``:
    ``SimulationResult.metrics``' keys (``metrics_of_counts``, with the plan's times). ``seed``: where the kept
    set came from (``"optimum"``, ``"Belady"`` or a policy name). ``model``: one line naming the buffer model,
    preset, capacity, options and execution mode. ``events``: one row per copy (``copy``, ``kind``, ``tensor_id``,
    ``size_mb``, ``issue_op`` (the op_index after which it starts, -1 before the first), ``need_op`` (the op that
    reads it, -1 none), ``start_ms``, ``end_ms``, ``stall_ms`` (its need op's wait for it)). ``ops``: one row per
    op (``op_index``, ``op``, its module/layer/phase when the trace has them, ``start_ms``, ``end_ms``,
    ``compute_ms``, ``dram_ms``, ``onchip_ms``, ``idle_dram_ms``, ``host_ms``, ``stall_ms``, ``bound``,
    ``dram_read_mb``, ``dram_write_mb``, ``resident_mb`` (after the op)), the ``flush`` pseudo-op last (op_index
    -1). ``residency``: one row per on-chip allocation (``tensor_id``, ``size_mb``, ``from_ms``, ``to_ms``,
    ``how``: ``produced`` | ``read`` | ``kept`` | ``prefetched`` | ``staged``: an op's working set with
    ``streaming=False``, tensor_id -1). ``traffic_lower_mb``: no whole-tensor schedule of the model moves less
    DRAM traffic (MB, the byte-granular flow bound ``lower_bound_ms`` divides by the bandwidth). ``steps``: the
    steps of the trace the plan covers (``PlannerOptions.steps``; every field above is of the whole window);
    ``per_step``: one row per step (``step``, ``start_ms``, ``end_ms``, ``step_ms``: from the previous step's end,
    ``dram_read_mb``, ``dram_write_mb``, ``dram_traffic_mb``: the step's ops' own DRAM bytes, its prefetches (by
    the step of the op that reads them) and evictions (by their producer's step), the flush in the last step; they
    sum to ``metrics``'). Times in ms, sizes in MB (MiB)."""

    step_time_ms: float
    lower_bound_ms: float
    gap_to_bound_pct: float
    metrics: dict
    seed: str
    model: str
    capacity_mb: float
    options: PlannerOptions
    cost: object = field(repr=False)
    events: pd.DataFrame = field(repr=False)
    ops: pd.DataFrame = field(repr=False)
    residency: pd.DataFrame = field(repr=False)
    traffic_lower_mb: float = float("nan")
    steps: int = 1
    per_step: Optional[pd.DataFrame] = field(default=None, repr=False)


@kernel
def repair_capacity(state, occ_from, occ_to, succ, size, extra, n_ops, capacity):
    """Drop kept intervals (``state`` KEEP -> BYPASS, in place) until every op holds at most ``capacity`` bytes:
    per op in order, the kept interval over it with the farthest end first. ``occ_from``/``occ_to``: the ops a
    kept interval occupies (int64, in place: a successor's start moves back when its predecessor is dropped);
    ``succ``: the tensor's next interval (-1 none); ``extra``: bytes held during each op outside the intervals
    (int64). Returns the bytes held during each op (int64)."""
    k_n = state.shape[0]
    diff = np.zeros(n_ops + 1, np.int64)
    for k in range(k_n):
        if state[k] == KEEP and occ_from[k] <= occ_to[k]:
            diff[occ_from[k]] += size[k]
            diff[occ_to[k] + 1] -= size[k]
    order = np.argsort(occ_from, kind="mergesort")
    active = np.empty(k_n, np.int64)
    n_active = 0
    pointer = 0
    held = np.zeros(n_ops, np.int64)
    running = 0
    for i in range(n_ops):
        running += diff[i]
        while pointer < k_n and occ_from[order[pointer]] <= i:
            k = order[pointer]
            pointer += 1
            if state[k] == KEEP and occ_to[k] >= i:
                active[n_active] = k
                n_active += 1
        while running + extra[i] > capacity:
            best = -1
            best_j = -1
            j = 0
            while j < n_active:
                k = active[j]
                if state[k] != KEEP or occ_to[k] < i or occ_from[k] > i:
                    n_active -= 1
                    active[j] = active[n_active]
                    continue
                if best < 0 or occ_to[k] > occ_to[best]:
                    best = k
                    best_j = j
                j += 1
            if best < 0:
                break
            k = best
            state[k] = BYPASS
            n_active -= 1
            active[best_j] = active[n_active]
            s = succ[k]
            last = occ_to[k]
            if s >= 0 and state[s] == KEEP:
                occ_from[s] = occ_to[k]
                last = occ_to[k] - 1
                if occ_from[s] <= i and occ_to[s] >= i:
                    active[n_active] = s
                    n_active += 1
            if last >= i:  # else the successor starts at this op: no gain here, and it is a candidate itself
                running -= size[k]
                diff[last + 1] += size[k]
        held[i] = running + extra[i]
    return held


@kernel
def place_prefetches(candidates, first_op, need, size, held, inflight, idle_bytes, gpu_ms, copy_ms, capacity,
                     max_inflight, min_ratio, preferred_ratio, max_ratio):
    """The greedy's prefetches: for each candidate interval (in order), the op after which its copy is issued
    (-1: before the first op; NOT_PLACED: left bypassed). ``first_op``: the earliest issue op; ``need``: the reading
    op; ``held``, ``inflight``, ``idle_bytes`` (per op; updated in place as copies are committed): bytes on chip,
    copies in flight, DRAM-idle bytes not yet promised; ``copy_ms``: each candidate's copy time."""
    issue = np.full(candidates.shape[0], NOT_PLACED, np.int64)
    for j in range(candidates.shape[0]):
        k = candidates[j]
        b = need[k]
        if held[b] + size[k] > capacity or inflight[b] + 1 > max_inflight:
            continue
        idle = 0.0
        elapsed = 0.0
        chosen = NOT_PLACED
        fallback = NOT_PLACED
        s = b - 1
        while s >= first_op[k]:
            op = s + 1
            if op < b:
                if held[op] + size[k] > capacity or inflight[op] + 1 > max_inflight:
                    break
                idle += idle_bytes[op]
                elapsed += gpu_ms[op]
                if elapsed > max_ratio * copy_ms[k]:
                    break
            if idle >= preferred_ratio * size[k]:
                chosen = s
                break
            if idle >= min_ratio * size[k]:
                fallback = s
            s -= 1
        if chosen == NOT_PLACED:
            chosen = fallback
        if chosen == NOT_PLACED:
            continue
        issue[j] = chosen
        left = float(size[k])
        for op in range(chosen + 1, b + 1):
            held[op] += size[k]
            inflight[op] += 1
            if op < b and left > 0.0:
                take = min(left, idle_bytes[op])
                idle_bytes[op] -= take
                left -= take
    return issue


@kernel
def place_evictions(candidates, producer, limit, add_first, size, held, inflight, idle_bytes, gpu_ms, copy_ms,
                    capacity, max_inflight, min_ratio, preferred_ratio, max_ratio):
    """The greedy's evictions: for each candidate interval (in order), the op before which its write copy, issued
    after its producer op, must be done (-1: written through by the producer). ``limit``: the latest such op
    (the tensor's next reader); ``add_first``: bytes the producer op newly holds (a write's output, streamed
    otherwise). ``held``, ``inflight``, ``idle_bytes``: as ``place_prefetches`` (updated in place)."""
    deadline = np.full(candidates.shape[0], -1, np.int64)
    n = held.shape[0]
    for j in range(candidates.shape[0]):
        k = candidates[j]
        a = producer[k]
        if held[a] + add_first[k] > capacity:
            continue
        idle = 0.0
        elapsed = 0.0
        chosen = -1
        fallback = -1
        e = a + 1
        while e < n and e + 1 <= limit[k]:
            if held[e] + size[k] > capacity or inflight[e] + 1 > max_inflight:
                break
            idle += idle_bytes[e]
            elapsed += gpu_ms[e]
            if elapsed > max_ratio * copy_ms[k]:
                break
            if idle >= preferred_ratio * size[k]:
                chosen = e
                break
            if idle >= min_ratio * size[k] and fallback < 0:
                fallback = e
            e += 1
        if chosen < 0:
            chosen = fallback
        if chosen < 0:
            continue
        deadline[j] = chosen + 1
        held[a] += add_first[k]
        left = float(size[k])
        for op in range(a + 1, chosen + 1):
            held[op] += size[k]
            inflight[op] += 1
            if left > 0.0:
                take = min(left, idle_bytes[op])
                idle_bytes[op] -= take
                left -= take
    return deadline


class _Problem:
    """One trace, capacity, cost and options: the intervals, each access's op and the evaluation of decisions."""

    def __init__(self, trace, capacity_mb, cost, options):
        self.trace = trace
        self.capacity_mb = capacity_mb
        self.capacity_bytes = capacity_bytes_of(capacity_mb)
        self.options = options
        self.cost = cost
        self.workload = encode_trace(trace)
        w = self.workload
        self.ivs = w.memo("intervals", lambda: intervals_of(w))
        self.table = op_table(trace)
        self.n_ops = len(self.table)
        self.pos = op_positions(trace).astype(np.int64)
        self.occ = np.maximum.accumulate(np.maximum(self.pos, 0)) if self.pos.shape[0] else self.pos
        self.writes = column_or(w, "is_write", False, np.bool_)
        self.marks = persist_marks(w)
        ivs = self.ivs
        # the intervals, then one per first access that reads (from before the step: prefetched or bypassed,
        # never kept), so a first read (a weight's) can be prefetched too
        first = np.flatnonzero((w.previous_use < 0) & ~self.writes & ~self.marks)
        self.n_real = ivs.start.shape[0]
        self.start = np.concatenate([ivs.start, np.full(first.shape[0], -1, np.int64)])
        self.end = np.concatenate([ivs.end, first])
        self.size = np.concatenate([ivs.size, w.access_bytes[first]]).astype(np.int64)
        self.end_reads = np.concatenate([ivs.end_reads, np.ones(first.shape[0], np.bool_)])
        self.end_persists = np.concatenate([ivs.end_persists, np.zeros(first.shape[0], np.bool_)])
        interval_at = np.full(w.n_accesses, -1, np.int64)
        interval_at[ivs.start] = np.arange(self.n_real)
        self.succ = interval_at[self.end]
        self.start_op = np.where(self.start >= 0, self.pos[np.maximum(self.start, 0)], -1)  # -1: before the step
        self.need_op = self.pos[self.end]
        self.tensor_ids = w.tensor_ids[w.codes[self.end]]
        self.dram_rate = dram_bytes_per_ms(cost)
        self.copy_rate = options.copy_gb_s(cost) * BYTES_PER_GB_DECIMAL / MS_PER_S
        self.flow_lower_mb = None  # MB: the byte-granular traffic bound, once computed
        self.extra = np.zeros(self.n_ops, np.int64)
        if not options.streaming:
            self.extra = self.working_set()

    def working_set(self) -> np.ndarray:
        """Each op's distinct tensor bytes (int64)."""
        w = self.workload
        inside = self.pos >= 0
        pairs = pd.DataFrame({"op": self.pos[inside], "code": w.codes[inside]}).drop_duplicates()
        sizes = w.tensor_bytes[pairs["code"].to_numpy()]
        out = np.zeros(self.n_ops, np.int64)
        np.add.at(out, pairs["op"].to_numpy(), sizes)
        return out

    def check_working_set(self) -> None:
        """ValueError when an op's working set does not fit (``streaming=False``)."""
        over = np.flatnonzero(self.extra > self.capacity_bytes)
        if over.shape[0]:
            i = int(over[np.argmax(self.extra[over])])
            row = self.table.iloc[i]
            where = ", ".join(str(row[c]) for c in ("op", "module") if c in self.table.columns and str(row[c]))
            raise ValueError(f"capacity_mb={self.capacity_mb:g} is below the working set of op {self.table.index[i]} "
                             f"({where}), {bytes_to_mb(self.extra[i]):.1f} MB: the planner needs room for every op's "
                             "operands and outputs (streaming=False)")

    def occupancy(self, state: np.ndarray):
        """(from op, to op) each interval occupies when kept (int64), for ``state``."""
        into = np.zeros(self.workload.n_accesses, np.bool_)
        into[self.end[state != BYPASS]] = True
        start = np.maximum(self.start, 0)
        occ_from = np.where(self.start >= 0, self.occ[start] + into[start], 0)
        return occ_from, self.occ[self.end]

    def repaired(self, state: np.ndarray) -> tuple:
        """``state`` with kept intervals dropped until the buffer holds them op by op, and the bytes held per op."""
        state = state.astype(np.int8).copy()
        occ_from, occ_to = self.occupancy(state)
        held = repair_capacity(state, kernel_array(occ_from, np.int64), kernel_array(occ_to, np.int64),
                               kernel_array(self.succ, np.int64), kernel_array(self.size, np.int64),
                               kernel_array(self.extra, np.int64), np.int64(self.n_ops), np.int64(self.capacity_bytes))
        return state, held

    def writebacks(self, state: np.ndarray) -> np.ndarray:
        """Whether each real interval's data must be written back when it leaves the buffer (bool)."""
        ivs = self.ivs
        kept = state[:self.n_real] == KEEP
        kept_into = np.zeros(self.workload.n_accesses, np.bool_)
        kept_into[ivs.end[kept]] = True
        dirty = dirty_states(self.workload.previous_use, self.writes, kept_into)
        return dirty[ivs.start] & ~kept & (ivs.end_reads | ivs.end_persists)

    def op_bytes(self, state: np.ndarray, evict=None):
        """DRAM (read, write) bytes per op (int64) and the flush's bytes of the decisions ``state``, the intervals
        with an eviction (``evict`` >= 0) written back by their copy rather than by their producer."""
        w, ivs, n = self.workload, self.ivs, self.n_ops
        kept = state[:self.n_real] == KEEP
        kept_into = np.zeros(w.n_accesses, np.bool_)
        kept_into[ivs.end[kept]] = True
        fetched = kept_into.copy()
        fetched[self.end[state == PREFETCHED]] = True
        missed = ~self.writes & ~self.marks & ~fetched
        dirty = dirty_states(w.previous_use, self.writes, kept_into)
        back = dirty[ivs.start] & ~kept & (ivs.end_reads | ivs.end_persists)
        if evict is not None:
            back &= evict[:self.n_real] < 0
        at_flush = dirty[ivs.start] & kept & ivs.end_persists
        slot = np.where(self.pos >= 0, self.pos, n)
        read = np.bincount(slot[missed], weights=w.access_bytes[missed], minlength=n + 1)
        write = np.bincount(slot[ivs.start[back]], weights=ivs.size[back], minlength=n + 1)
        flush = int(read[n] + write[n] + ivs.size[at_flush].sum())
        return np.rint(read[:n]).astype(np.int64), np.rint(write[:n]).astype(np.int64), flush

    def priced(self, state: np.ndarray, evict=None) -> StepTime:
        read, write, flush = self.op_bytes(state, evict)
        return step_times(self.table, read, write, flush, self.cost, self.options.execution)

    def run(self, state: np.ndarray, issue: np.ndarray, evict=None, times=None):
        """(StepTime with the runtime's times, copies (interval ids), copy kinds, issue ops, need ops, copy start,
        end, stall) of ``state`` with prefetches issued after ``issue`` (per interval, for the PREFETCHED ones)
        and evictions (``evict``: per interval, the op before which its eviction must be done, -1 none).
        ``times``: ``self.priced(state, evict)`` when already known (it depends on neither issue ops nor
        deadlines)."""
        if evict is None:
            evict = np.full(state.shape[0], -1, np.int64)
        if times is None:
            times = self.priced(state, evict)
        op_ms = tuple(times.ops[name].to_numpy(np.float64) for name in ("gpu_ms", "dram_ms", "host_ms"))
        copies, kinds, issue_op, need, (start, end, stall, c_start, c_end, c_stall, total) = self.simulated(
            op_ms, state, issue, evict)
        table = times.ops.copy()
        table["start_ms"] = start
        table["end_ms"] = end
        table["stall_ms"] = stall
        if len(table):
            table.iloc[-1, table.columns.get_loc("end_ms")] = total
        return (StepTime(ops=table, execution=self.options.execution), copies, kinds, issue_op, need, c_start, c_end,
                c_stall)

    def residency(self, state, start_ms, end_ms, copies, kinds, need, c_start, c_end) -> dict:
        """The on-chip allocations of decisions ``state`` run by the simulator (op ``start_ms``/``end_ms``, the
        copies of ``simulated``): ``PlanResult.residency``'s columns as arrays, one entry per allocation (empty
        spans included)."""
        occ_from, occ_to = self.occupancy(state)
        kept = np.flatnonzero(state == KEEP)
        start_occ = self.occ[self.start[kept]]
        reached = occ_from[kept] > start_occ
        fetched = kinds == PREFETCH
        evicted = copies[~fetched]
        produced = self.writes[np.maximum(self.start[evicted], 0)]
        producer = self.start_op[evicted]
        staged = np.flatnonzero(self.extra > 0) if not self.options.streaming else np.zeros(0, np.int64)
        size = np.concatenate([self.size[kept], self.size[copies[fetched]], self.size[evicted], self.extra[staged]])
        unnamed = self.tensor_ids.dtype if self.tensor_ids.dtype.kind in "iu" else object  # staged rows' id, -1
        return {
            "tensor_id": np.concatenate([self.tensor_ids[kept], self.tensor_ids[copies[fetched]],
                                         self.tensor_ids[evicted]] + ([np.full(staged.shape[0], -1, unnamed)]
                                                                      if staged.shape[0] else [])),
            "size_mb": bytes_to_mb(size.astype(np.float64)),
            "from_ms": np.concatenate([np.where(reached, end_ms[start_occ], start_ms[start_occ]), c_start[fetched],
                                       np.where(produced, start_ms[producer], end_ms[producer]), start_ms[staged]]),
            "to_ms": np.concatenate([end_ms[occ_to[kept]], end_ms[need[fetched]], c_end[~fetched], end_ms[staged]]),
            "how": np.concatenate([np.where(reached, "kept", np.where(self.writes[self.start[kept]], "produced",
                                                                      "read")),
                                   np.full(int(fetched.sum()), "prefetched"),
                                   np.where(produced, "produced", "kept"), np.full(staged.shape[0], "staged")])}

    def simulated(self, op_ms: tuple, state: np.ndarray, issue: np.ndarray, evict: np.ndarray):
        """The runtime simulator on priced ops, ``op_ms`` = (gpu_ms, dram_ms, host_ms) per op, the flush last
        (``self.priced(state, evict)``'s columns): (copies (interval ids), copy kinds, issue ops, need ops,
        ``simulate_copies``' arrays and step end)."""
        gpu_ms, dram_ms, host_ms = op_ms
        fetched = np.flatnonzero(state == PREFETCHED)
        evicted = np.flatnonzero(evict >= 0)
        copies = np.concatenate([fetched, evicted])
        kinds = np.concatenate([np.full(fetched.shape[0], PREFETCH, np.int8), np.full(evicted.shape[0], EVICTION,
                                                                                    np.int8)])
        issue_op = np.concatenate([issue[fetched], self.start_op[evicted]])
        need = np.concatenate([self.need_op[fetched], np.where(evict[evicted] < self.n_ops, evict[evicted], NO_NEED)])
        out = simulate_copies(
            kernel_array(gpu_ms, np.float64), kernel_array(dram_ms, np.float64),
            kernel_array(host_ms, np.float64), np.float64(launch_latency_ms(self.cost)),
            self.options.execution == "eager", kinds, self.size[copies].astype(np.float64),
            kernel_array(issue_op, np.int64), kernel_array(need, np.int64), np.float64(self.copy_rate))
        return copies, kinds, issue_op, need, out


def _policy_state(problem: _Problem, policy: str) -> np.ndarray:
    """The scratchpad run of ``policy`` read as decisions: an interval is kept iff its end access read on chip."""
    result = simulate(problem.workload, policy, problem.capacity_mb, problem.cost, buffer="scratchpad")
    on_chip = result.on_chip
    kept = on_chip[problem.end] & problem.end_reads & (problem.start >= 0)
    return np.where(kept, KEEP, BYPASS).astype(np.int8)


def _seeds(problem: _Problem, names=None):
    """(name, decisions) of the demand schedules the greedy starts from (``names``: only these)."""
    if names is None:
        extra = tuple(p for p in problem.options.seed_policies if p not in ("Belady", OPTIMUM_SEED))
        names = (OPTIMUM_SEED, "Belady") + extra
    for name in names:
        if name == OPTIMUM_SEED:
            best = optimal(problem.workload, problem.capacity_mb, problem.cost, method="flow", progress=False)
            problem.flow_lower_mb = best.lower_mb  # the byte-granular bound (lower_bound_mb), for lower_bound_ms
            state = np.zeros(problem.size.shape[0], np.int8)
            state[:problem.n_real] = np.where(best.plan["kept"].to_numpy(np.bool_), KEEP, BYPASS)
            yield name, state
        else:
            yield name, _policy_state(problem, name)


def _prefetch(problem: _Problem, state: np.ndarray, held: np.ndarray, times: StepTime):
    """The greedy's prefetches added to ``state`` (a copy) and each interval's issue op."""
    cost = problem.cost
    table = times.ops.iloc[:problem.n_ops]
    state = state.copy()
    issue = np.full(state.shape[0], -1, np.int64)
    need = problem.need_op
    first = problem.start_op
    size = problem.size
    # a real interval's data is in DRAM from its start op on; a first read's from before the step
    candidate = ((state == BYPASS) & problem.end_reads & (need >= 0) & (need > first)
                 & ((problem.start < 0) | (first >= 0)))
    idx = np.flatnonzero(candidate)
    dram = table["dram_ms"].to_numpy()
    onchip = table["onchip_ms"].to_numpy()
    floor = np.maximum(table["compute_ms"].to_numpy(), table["launch_ms"].to_numpy())
    gpu = table["gpu_ms"].to_numpy()
    b = need[idx]
    less = np.maximum(dram[b] - size[idx] / problem.dram_rate, 0.0)
    faster = np.maximum(floor[b], combined_memory_ms(less, onchip[b], cost))
    benefit = gpu[b] - faster
    keep = benefit > 0
    idx, benefit = idx[keep], benefit[keep]
    order = idx[np.argsort(-benefit / np.sqrt(size[idx]), kind="mergesort")]
    idle_bytes = (np.maximum(gpu - dram, 0.0) * problem.copy_rate).astype(np.float64)
    inflight = np.zeros(problem.n_ops, np.int64)
    copy_ms = size / problem.copy_rate
    opts = problem.options
    held = held.astype(np.int64)
    chosen = place_prefetches(kernel_array(order, np.int64), kernel_array(first, np.int64),
                              kernel_array(need, np.int64), kernel_array(size, np.int64),
                              held, inflight, idle_bytes,
                              kernel_array(gpu, np.float64), copy_ms.astype(np.float64),
                              np.int64(problem.capacity_bytes), np.int64(opts.max_outstanding_prefetches),
                              np.float64(opts.min_overlap_ratio), np.float64(opts.preferred_overlap_ratio),
                              np.float64(opts.max_overlap_ratio))
    placed = chosen != NOT_PLACED
    state[order[placed]] = PREFETCHED
    issue[order[placed]] = chosen[placed]
    evict = _evict(problem, state, held, idle_bytes, table)
    return state, issue, evict


def _evict(problem: _Problem, state: np.ndarray, held: np.ndarray, idle_bytes: np.ndarray, table) -> np.ndarray:
    """The greedy's evictions (section 2.3, step 4): a dirty interval bypassed at its end is written back by a copy
    issued after its producer, in the DRAM-idle time after it, when that makes the producer faster; else its
    producer writes it through. Per interval: the op before which its eviction must be done (-1: none)."""
    cost, opts = problem.cost, problem.options
    evict = np.full(state.shape[0], -1, np.int64)
    back = np.zeros(state.shape[0], np.bool_)
    back[:problem.n_real] = problem.writebacks(state) & (state[:problem.n_real] == BYPASS)
    producer = problem.start_op
    limit = np.where(problem.end_reads, problem.need_op, problem.n_ops)
    idx = np.flatnonzero(back & (producer >= 0) & (limit > producer + 1))
    if idx.shape[0] == 0:
        return evict
    dram = table["dram_ms"].to_numpy()
    onchip = table["onchip_ms"].to_numpy()
    floor = np.maximum(table["compute_ms"].to_numpy(), table["launch_ms"].to_numpy())
    gpu = table["gpu_ms"].to_numpy()
    a = producer[idx]
    less = np.maximum(dram[a] - problem.size[idx] / problem.dram_rate, 0.0)
    benefit = gpu[a] - np.maximum(floor[a], combined_memory_ms(less, onchip[a], cost))
    idx, benefit = idx[benefit > 0], benefit[benefit > 0]
    order = idx[np.argsort(-benefit / np.sqrt(problem.size[idx]), kind="mergesort")]
    starts = np.maximum(problem.start, 0)
    add_first = np.where((problem.start >= 0) & problem.writes[starts], problem.size, 0).astype(np.int64)
    deadline = place_evictions(kernel_array(order, np.int64), kernel_array(producer, np.int64),
                               kernel_array(limit, np.int64), add_first, kernel_array(problem.size, np.int64), held,
                               np.zeros(problem.n_ops, np.int64), idle_bytes, kernel_array(gpu, np.float64),
                               (problem.size / problem.copy_rate).astype(np.float64),
                               np.int64(problem.capacity_bytes), np.int64(opts.max_outstanding_evictions),
                               np.float64(opts.min_overlap_ratio), np.float64(opts.preferred_overlap_ratio),
                               np.float64(opts.max_overlap_ratio))
    placed = deadline >= 0
    evict[order[placed]] = deadline[placed]
    return evict


def lower_bound_ms(problem: _Problem) -> float:
    """The step-time bound of the module docstring (ms)."""
    ops = problem.priced(np.zeros(problem.size.shape[0], np.int8)).ops.iloc[:problem.n_ops]
    floor = float(np.maximum.reduce([ops["compute_ms"].to_numpy(), ops["onchip_ms"].to_numpy(),
                                     ops["launch_ms"].to_numpy()]).sum()) if len(ops) else 0.0
    if problem.flow_lower_mb is None:
        problem.flow_lower_mb = lower_bound_mb(problem.workload, problem.capacity_mb)
    traffic = problem.flow_lower_mb * BYTES_PER_MB
    rate = max(problem.dram_rate, problem.copy_rate)
    bound = max(floor, traffic / rate)
    if problem.options.execution == "eager" and len(ops):
        last = ops.iloc[-1]
        last_floor = max(last["compute_ms"], last["onchip_ms"], last["launch_ms"])
        bound = max(bound, float(ops["host_ms"].sum()) + launch_latency_ms(problem.cost) + last_floor)
    return bound


def _problem(trace, capacity_mb, cost, options) -> _Problem:
    """The checked arguments of ``plan`` as a ``_Problem`` (one-line errors naming the argument)."""
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    if options is None:
        options = PlannerOptions()
    if not isinstance(options, PlannerOptions):
        raise TypeError(f"options must be a lab.PlannerOptions, got {type(options).__name__}")
    cost = resolve_cost(cost)
    why = missing_numbers(cost)
    if why:
        raise ValueError(f"no plan: {why}")
    cost = with_memory_combine(cost, options.memory_combine)
    if not isinstance(trace, pd.DataFrame) or len(trace) == 0:
        raise ValueError("trace must be a non-empty trace DataFrame (tensor_id, size_mb, access, op_index, ...)")
    if options.steps > 1:
        trace = repeat_steps(trace, options.steps)
    problem = _Problem(trace, capacity_mb, cost, options)
    if not options.streaming:
        problem.check_working_set()
    return problem


def model_line(cost, capacity_mb: float, options: PlannerOptions, execution: Optional[str] = None) -> str:
    """The one line naming ``lab.plan``'s model: buffer model, cost preset, capacity (MB), the options (copy rate
    resolved under ``cost``) and the execution mode (``execution``; None: the options'; "" leaves it out)."""
    execution = options.execution if execution is None else execution
    line = f"{MODEL}; cost {cost.name}; capacity {capacity_mb:g} MB; {options.describe(cost)}"
    return f"{line}; execution {execution}" if execution else line


def demand_metrics(trace, capacity_mb: float, policies, cost="H200",
                   options: Optional[PlannerOptions] = None) -> dict:
    """{policy: metrics} of demand schedules in ``lab.plan``'s model (same buffer, ops, copy engine and execution
    mode; no prefetch): each of ``policies`` (names) read from its scratchpad run as kept intervals (an interval is
    kept iff its end access read on chip), or the optimum's achievable kept set for ``"optimum"``, each dropped to
    fit the buffer op by op as the planner's seeds are. The metrics are ``SimulationResult.metrics``' keys
    (``metrics_of_counts`` of the schedule, with its times: ``step_time_ms`` in ms, traffic in MB). ``lab.plan`` is
    never slower than its seeds'."""
    problem = _problem(trace, capacity_mb, cost, options)
    out = {}
    for name, state in _seeds(problem, tuple(policies)):
        state, _ = problem.repaired(state)
        times = problem.run(state, np.full(state.shape[0], -1, np.int64))[0]
        counts = schedule_counts(problem.workload, problem.ivs, state[:problem.n_real] == KEEP,
                                 problem.capacity_bytes)
        out[name] = metrics_of_counts(problem.workload, counts, problem.capacity_bytes, problem.cost, times=times)
    return out


def demand_step_time_ms(trace, capacity_mb: float, policy: str, cost="H200",
                        options: Optional[PlannerOptions] = None) -> float:
    """The step time (ms) of ``policy``'s demand schedule in ``lab.plan``'s model (``demand_metrics``)."""
    return demand_metrics(trace, capacity_mb, (policy,), cost, options)[policy]["step_time_ms"]


def plan(trace, capacity_mb: float, cost="H200", options: Optional[PlannerOptions] = None) -> PlanResult:
    """A prefetching schedule of ``trace`` (a DataFrame that records its ops: ``op_index`` and ``flops``, as
    captures do; without ``op_index`` the ops come from data flow) for a scratchpad of ``capacity_mb`` MB (MiB)
    under ``cost`` (a ``CostModel`` or preset name with the physical numbers: H200, H100-SXM5, A100-SXM4-40GB) and
    ``options`` (``PlannerOptions``). See ``lab.planning.planner`` for the model and the greedy; the result's
    ``step_time_ms`` is never above the seeding demand schedules' (the optimum's, Belady's, ``seed_policies``'). With
    ``options.steps`` > 1 the plan covers that many steps in a row (what a step leaves on chip serves the next) and
    ``per_step`` splits it by step.

    Raises a one-line ValueError for a capacity that is not a number of MB > 0, a preset without the physical
    numbers, an empty trace, or (``streaming=False``) a capacity below an op's working set."""
    problem = _problem(trace, capacity_mb, cost, options)
    name, state, _, _, run = decide(problem)
    return _result(problem, name, state, run)


def decide(problem: _Problem) -> tuple:
    """The greedy's decisions on ``problem`` (see the module): (seed name, per-interval state, issue ops,
    eviction deadlines, ``problem.run``'s output for them)."""
    best = None
    for name, state in _seeds(problem):
        state, held = problem.repaired(state)
        run = problem.run(state, np.full(state.shape[0], -1, np.int64))
        if best is None or run[0].step_time_ms < best[2][0].step_time_ms:
            best = (name, state, run, held)
    name, state, run, held = best
    issue = np.full(state.shape[0], -1, np.int64)
    evict = np.full(state.shape[0], -1, np.int64)
    pre_state, pre_issue, pre_evict = _prefetch(problem, state, held, run[0])
    if (pre_state == PREFETCHED).any() or (pre_evict >= 0).any():
        pre_run = problem.run(pre_state, pre_issue, pre_evict)
        if pre_run[0].step_time_ms < run[0].step_time_ms:
            state, issue, evict, run = pre_state, pre_issue, pre_evict, pre_run
    return name, state, issue, evict, run


def _result(problem: _Problem, seed: str, state: np.ndarray, run) -> PlanResult:
    times, copies, kinds, issue_op, need, c_start, c_end, c_stall = run
    w, ivs, opts, cost = problem.workload, problem.ivs, problem.options, problem.cost
    table = times.ops
    index = table.index.to_numpy()
    op_ids = np.append(index[:problem.n_ops], -1)
    start_ms = table["start_ms"].to_numpy()
    end_ms = table["end_ms"].to_numpy()
    tensor_ids = problem.tensor_ids
    size = problem.size
    events = pd.DataFrame({
        "copy": np.arange(copies.shape[0]),
        "kind": np.array(KINDS)[kinds],
        "tensor_id": tensor_ids[copies],
        "size_mb": bytes_to_mb(size[copies]),
        "issue_op": np.where(issue_op >= 0, op_ids[np.maximum(issue_op, 0)], -1),
        "need_op": np.where(need >= 0, op_ids[np.maximum(need, 0)], -1),
        "start_ms": c_start, "end_ms": c_end, "stall_ms": c_stall})
    residency = pd.DataFrame(problem.residency(state, start_ms, end_ms, copies, kinds, need, c_start, c_end))
    residency = residency[residency["to_ms"] > residency["from_ms"]].reset_index(drop=True)
    ops = _ops_frame(problem, table, residency)
    per_step = _per_step(problem, ops, kinds, issue_op, need, size[copies])
    counts = schedule_counts(w, ivs, state[:problem.n_real] == KEEP, problem.capacity_bytes)
    metrics = metrics_of_counts(w, counts, problem.capacity_bytes, cost, times=times)
    bound = lower_bound_ms(problem)
    step = times.step_time_ms
    if step < bound <= step * (1 + 1e-9):  # a plan at its bound, summed in another order: no gap of -1e-13 %
        bound = step
    model = model_line(cost, problem.capacity_mb, opts)
    return PlanResult(step_time_ms=step, lower_bound_ms=bound,
                      gap_to_bound_pct=percent_above(step, bound), metrics=metrics,
                      seed=seed, model=model, capacity_mb=problem.capacity_mb, options=opts, cost=cost,
                      events=events, ops=ops, residency=residency, traffic_lower_mb=problem.flow_lower_mb,
                      steps=opts.steps, per_step=per_step)


def _per_step(problem: _Problem, ops: pd.DataFrame, kinds, issue_op, need, copy_bytes) -> pd.DataFrame:
    """``PlanResult.per_step`` (see there) from the plan's ops frame (the flush last) and copies (op positions)."""
    steps = problem.options.steps
    per = problem.n_ops // steps  # every step has the same ops
    step_of_op = np.minimum(np.arange(problem.n_ops) // max(per, 1), steps - 1)
    read = np.bincount(step_of_op, ops["dram_read_mb"].to_numpy()[:problem.n_ops], minlength=steps)
    write = np.bincount(step_of_op, ops["dram_write_mb"].to_numpy()[:problem.n_ops], minlength=steps)
    read[-1] += ops["dram_read_mb"].iloc[-1]
    write[-1] += ops["dram_write_mb"].iloc[-1]  # the flush, after the last step's ops
    fetched = kinds == PREFETCH
    copy_mb = bytes_to_mb(np.asarray(copy_bytes, np.float64))
    read += np.bincount(step_of_op[need[fetched]], copy_mb[fetched], minlength=steps)
    evicted = ~fetched
    write += np.bincount(step_of_op[np.maximum(issue_op[evicted], 0)], copy_mb[evicted], minlength=steps)
    ends = ops["end_ms"].to_numpy()
    last = np.append(np.arange(1, steps) * per - 1, len(ops) - 1)  # a step's last op; the flush ends the last
    end_ms = ends[last] if problem.n_ops else np.zeros(steps)
    start_ms = np.append(0.0, end_ms[:-1])
    return pd.DataFrame({"step": np.arange(steps), "start_ms": start_ms, "end_ms": end_ms,
                         "step_ms": end_ms - start_ms, "dram_read_mb": read, "dram_write_mb": write,
                         "dram_traffic_mb": read + write})


def _ops_frame(problem: _Problem, table: pd.DataFrame, residency: pd.DataFrame) -> pd.DataFrame:
    ops = pd.DataFrame({"op_index": np.append(table.index.to_numpy()[:problem.n_ops], -1),
                        "op": table["op"].astype(str).to_numpy()})
    for name in ("module", "layer", "phase"):
        if name in table.columns:
            ops[name] = table[name].to_numpy()
    for name in ("start_ms", "end_ms", "compute_ms", "dram_ms", "onchip_ms"):
        ops[name] = table[name].to_numpy(np.float64)
    ops["idle_dram_ms"] = np.maximum(table["gpu_ms"].to_numpy() - table["dram_ms"].to_numpy(), 0.0)
    ops["host_ms"] = table["host_ms"].to_numpy(np.float64)
    ops["stall_ms"] = table["stall_ms"].to_numpy(np.float64)
    ops["bound"] = table["bound"].astype(str).to_numpy()
    ops["dram_read_mb"] = bytes_to_mb(table["dram_read_bytes"].to_numpy(np.float64))
    ops["dram_write_mb"] = bytes_to_mb(table["dram_write_bytes"].to_numpy(np.float64))
    ends = ops["end_ms"].to_numpy()
    frm = residency["from_ms"].to_numpy()
    to = residency["to_ms"].to_numpy()
    size = residency["size_mb"].to_numpy()
    order_f = np.argsort(frm)
    order_t = np.argsort(to)
    added = np.concatenate([[0.0], np.cumsum(size[order_f])])[np.searchsorted(frm[order_f], ends, side="right")]
    gone = np.concatenate([[0.0], np.cumsum(size[order_t])])[np.searchsorted(to[order_t], ends, side="right")]
    ops["resident_mb"] = np.maximum(added - gone, 0.0)
    return ops


__all__ = ["MODEL", "PlanResult", "PlannerOptions", "demand_metrics", "demand_step_time_ms", "lower_bound_ms",
           "model_line", "plan"]
