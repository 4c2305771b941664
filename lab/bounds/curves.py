"""``lab.miss_ratio_curve``: misses and DRAM traffic against capacity, in one pass where an algorithm allows.

- LRU on a plain trace: exact, one pass. An access hits in an LRU buffer of C
  bytes exactly when the bytes of the distinct tensors used since the
  tensor's previous access, counting only tensors that fit C (larger ones are
  never inserted), plus its own size, are at most C (its byte stack
  distance). One Fenwick tree over access positions per size class (the
  capacities split sizes into classes) sums those bytes in O(log n); with
  equal sizes, or capacities at least the largest tensor, the curve is exact
  at every capacity from one histogram.
- Belady (MIN) with equal sizes: Mattson's OPT stack (Mattson, Gecsei, Slutz
  and Traiger, IBM Systems Journal 1970), one pass, stack depth bounded by
  the largest capacity asked for.
- The optimum (``policy="OPT-bound"``): the byte-granular optimum per
  capacity (``lab.optimal``'s min-cost flow: a lower bound on every
  whole-tensor schedule; ``lab.optimal`` itself gives the whole-tensor one).
- Any other policy, and any trace with reads and writes: one simulation per
  capacity on threads, or with ``sample_rate`` SHARDS spatial sampling
  (Waldspurger et al., FAST 2015): the tensors whose hashed id falls under
  the rate, simulated at capacity x rate, scaled back by the rate (SHARDS_adj).

The ``algorithm`` column names what produced each row.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import pandas as pd

from lab.bounds.capacities import capacity_list, default_capacities_mb
from lab.bounds.optimal import optimal
from lab.checks import check_int, check_number
from lab.compiled import kernel
from lab.sim.cost import resolve_cost
from lab.sim.engine import EVICTIONS, HIT_BYTES, HITS, INSERTIONS, N_COUNTS, PEAK_BYTES, READ_BYTES, READ_HITS
from lab.sim.policy import get_policy
from lab.sim.simulate import metrics_of_counts, simulate
from lab.trace.workload import Workload, encode_trace
from lab.units import BYTES_PER_MB, bytes_to_mb, mb_to_bytes

COLUMNS = ["capacity_mb", "misses", "miss_ratio", "byte_miss_ratio", "dram_read_mb", "dram_write_mb", "algorithm"]
OPT_BOUND = "OPT-bound"
LRU_ALGORITHM = "one-pass LRU byte stack distances (exact)"
OPT_ALGORITHM = "one-pass OPT stack (Mattson 1970; Belady MIN, equal sizes, exact)"


# --- LRU: byte stack distances ----------------------------------------------------------------------


@kernel(inline="always")
def _fenwick_add(tree, base, length, index, value):
    """Add ``value`` at position ``index`` of the Fenwick tree of ``length`` positions stored at
    ``tree[base + 1 : base + length + 1]``."""
    j = index + 1
    while j <= length:
        tree[base + j] += value
        j += j & (-j)


@kernel(inline="always")
def _fenwick_prefix(tree, base, index):
    """Sum of the values at positions 0..index of the Fenwick tree stored from ``tree[base + 1]``."""
    total = 0
    j = index + 1
    while j > 0:
        total += tree[base + j]
        j -= j & (-j)
    return total


@kernel
def lru_hits_by_class(codes, sizes, previous_use, size_class, n_classes, capacities):
    """For each capacity (bytes, ascending), the LRU hits and the bytes they serve, exactly, in one pass.

    ``size_class[c]`` is the index of the smallest capacity that tensor ``c``
    fits (``n_classes`` = fits none). Per class, a Fenwick tree over that
    class's access positions holds each of its tensors' size at its latest
    access, so the bytes of the distinct class-k tensors since position p are
    the class total minus a prefix sum.
    """
    n = codes.shape[0]
    k = capacities.shape[0]
    # positions of each class's accesses, and each access's index among them
    class_of_access = size_class[codes]
    counts = np.zeros(n_classes + 1, np.int64)
    for i in range(n):
        counts[class_of_access[i]] += 1
    starts = np.zeros(n_classes + 2, np.int64)
    for c in range(n_classes + 1):
        starts[c + 1] = starts[c] + counts[c]
    positions = np.empty(n, np.int64)
    local = np.empty(n, np.int64)
    fill = starts[:-1].copy()
    for i in range(n):
        c = class_of_access[i]
        positions[fill[c]] = i
        local[i] = fill[c] - starts[c]
        fill[c] += 1
    trees = np.zeros(n + n_classes + 2, np.int64)  # class c's tree: trees[starts[c] + c + 1 ...], counts[c] long
    totals = np.zeros(n_classes + 1, np.int64)
    hits = np.zeros(k, np.int64)
    hit_bytes = np.zeros(k, np.int64)
    window = np.zeros(n_classes + 1, np.int64)
    for i in range(n):
        x = codes[i]
        s = sizes[x]
        cx = class_of_access[i]
        p = previous_use[i]
        if p >= 0:
            # bytes per class of the distinct tensors used in (p, i): class total minus marks at or before p
            for c in range(n_classes):
                if totals[c] == 0:
                    window[c] = 0
                    continue
                # class-c accesses at or before p: binary search in positions[starts[c]:starts[c+1]]
                lo = starts[c]
                hi = starts[c + 1]
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if positions[mid] <= p:
                        lo = mid + 1
                    else:
                        hi = mid
                before = lo - starts[c]
                prefix = _fenwick_prefix(trees, starts[c] + c, before - 1) if before else 0
                window[c] = totals[c] - prefix  # x's own mark is at p: not in the window
            below = 0
            for j in range(k):
                if j < n_classes:
                    below += window[j]
                if s <= capacities[j] and below + s <= capacities[j]:
                    hits[j] += 1
                    hit_bytes[j] += s
            if cx < n_classes:
                _fenwick_add(trees, starts[cx] + cx, counts[cx], local[p], -s)
                totals[cx] -= s
        if cx < n_classes:
            _fenwick_add(trees, starts[cx] + cx, counts[cx], local[i], s)
            totals[cx] += s
    return hits, hit_bytes


@kernel
def hits_by_capacity(distance, access_bytes, capacities):
    """Accesses, and their bytes, whose stack ``distance`` (bytes, -1: never a hit) fits each capacity (bytes,
    ascending): a histogram over the capacities, then running sums; no sort of the accesses."""
    k = capacities.shape[0]
    count = np.zeros(k + 1, np.int64)
    nbytes = np.zeros(k + 1, np.int64)
    for i in range(distance.shape[0]):
        d = distance[i]
        if d < 0:
            continue
        lo = 0
        hi = k
        while lo < hi:  # the first capacity >= d
            mid = (lo + hi) >> 1
            if capacities[mid] < d:
                lo = mid + 1
            else:
                hi = mid
        count[lo] += 1
        nbytes[lo] += access_bytes[i]
    return np.cumsum(count[:k]), np.cumsum(nbytes[:k])


@kernel
def lru_stack_distances(codes, sizes, previous_use):
    """Byte stack distance of each access under LRU (bytes of the distinct tensors used since the tensor's
    previous access, plus its own size; -1 for a first access), every tensor counted."""
    n = codes.shape[0]
    tree = np.zeros(n + 1, np.int64)
    total = 0
    distance = np.full(n, -1, np.int64)
    for i in range(n):
        x = codes[i]
        s = sizes[x]
        p = previous_use[i]
        if p >= 0:
            distance[i] = total - _fenwick_prefix(tree, 0, p) + s
            _fenwick_add(tree, 0, n, p, -s)
            total -= s
        _fenwick_add(tree, 0, n, i, s)
        total += s
    return distance


# --- Belady with equal sizes: Mattson's OPT stack ----------------------------------------------------


@kernel
def opt_stack_distances(codes, next_use, n_tensors, max_depth):
    """Stack distance (1-based) of each access under OPT (MIN) with equal sizes, for depths up to
    ``max_depth`` (deeper or first accesses: -1). Mattson's algorithm: the referenced tensor goes to the top;
    walking down to its old position, each slot keeps the sooner-reused of the carried tensor and its own."""
    n = codes.shape[0]
    never = n + 1
    stack = np.full(max_depth, -1, np.int64)
    where = np.full(n_tensors, -1, np.int64)
    priority = np.full(n_tensors, never, np.int64)  # next use of each tensor (never = n + 1)
    depth = 0
    distance = np.full(n, -1, np.int64)
    for i in range(n):
        x = codes[i]
        d = where[x]
        nxt = next_use[i]
        priority[x] = nxt if nxt >= 0 else never
        if d >= 0:
            distance[i] = d + 1
            bottom = d
        else:
            bottom = depth if depth < max_depth else max_depth
        carried = stack[0] if bottom > 0 else -1
        if bottom > 0 and carried != x:
            for j in range(1, bottom):
                y = stack[j]
                if priority[y] > priority[carried]:  # y is reused later: carry y down, keep the carried
                    stack[j] = carried
                    where[carried] = j
                    carried = y
            if bottom < max_depth:
                stack[bottom] = carried
                where[carried] = bottom
            else:
                where[carried] = -1  # fell off the bounded stack
        if d < 0 and depth < max_depth:
            depth += 1
        stack[0] = x
        where[x] = 0
    return distance


# --- the curve ----------------------------------------------------------------------------------------


def _capacities(workload: Workload, capacities_mb) -> np.ndarray:
    values = default_capacities_mb(workload) if capacities_mb is None else capacity_list(capacities_mb)
    return np.array(sorted(set(float(c) for c in values)))


def _rows_of_metrics(capacities_mb, metrics: list[dict], workload: Workload, algorithm: str) -> pd.DataFrame:
    """The curve's rows from ``SimulationResult.metrics`` at each capacity (MB): a simulation's or one-pass."""
    return _rows(capacities_mb, [m["dram_accesses"] for m in metrics], [m["bytes_from_dram"] for m in metrics],
                 [round(m["dram_writes_mb"] * BYTES_PER_MB) for m in metrics], workload, algorithm)


def _rows(capacities_mb, misses, read_bytes, write_bytes, workload: Workload, algorithm: str) -> pd.DataFrame:
    n = workload.n_accesses
    total = workload.total_bytes
    misses = np.asarray(misses, np.int64)
    read_bytes = np.asarray(read_bytes, np.int64)
    return pd.DataFrame({
        "capacity_mb": np.asarray(capacities_mb, np.float64),
        "misses": misses,
        "miss_ratio": misses / n if n else np.zeros(len(misses)),
        "byte_miss_ratio": read_bytes / total if total else np.zeros(len(misses)),
        "dram_read_mb": bytes_to_mb(read_bytes),
        "dram_write_mb": bytes_to_mb(np.asarray(write_bytes, np.int64)),
        "algorithm": algorithm,
    })[COLUMNS]


def _lru_hits(workload: Workload, capacity_bytes: np.ndarray):
    """LRU's hits and the bytes they serve at each capacity (bytes, ascending), in one pass."""
    sizes = workload.tensor_bytes
    if workload.n_tensors and capacity_bytes[0] >= sizes.max():  # every tensor fits every capacity: one class
        distance = lru_stack_distances(workload.codes, sizes, workload.previous_use)
        hits, hit_bytes = hits_by_capacity(distance, workload.access_bytes, capacity_bytes)
    else:
        size_class = np.searchsorted(capacity_bytes, sizes, side="left").astype(np.int64)
        hits, hit_bytes = lru_hits_by_class(workload.codes, sizes, workload.previous_use, size_class,
                                            np.int64(len(capacity_bytes)), capacity_bytes)
    return np.asarray(hits, np.int64), np.asarray(hit_bytes, np.int64)


def _opt_hits(workload: Workload, capacities_mb: np.ndarray):
    """Belady's (MIN, equal sizes, no bypass) hits at each capacity from Mattson's OPT stack, and the depth
    (tensors held) of each capacity."""
    size = int(workload.tensor_bytes[0])
    depths = np.floor(mb_to_bytes(capacities_mb) / size).astype(np.int64)
    max_depth = int(max(1, depths.max()))
    distance = opt_stack_distances(workload.codes, workload.next_use, np.int64(workload.n_tensors),
                                   np.int64(min(max_depth, max(workload.n_tensors, 1))))
    hit_depths = np.sort(distance[distance > 0])
    return np.searchsorted(hit_depths, depths, side="right").astype(np.int64), depths


def one_pass_algorithm(workload: Workload, policy) -> Optional[str]:
    """The one-pass algorithm that gives ``policy``'s exact curve on this workload (its name), or None: the
    policy's ``one_pass_curve`` (LRU's on plain traces, Belady's without bypass on plain traces with equal
    sizes)."""
    if workload.has_writes or workload.n_tensors == 0:
        return None
    curve = getattr(policy, "one_pass_curve", None)
    if curve == "lru":
        return LRU_ALGORITHM
    equal_sizes = bool((workload.tensor_bytes == workload.tensor_bytes[0]).all())
    if curve == "belady" and equal_sizes and not policy.get_params().get("bypass", False):
        return OPT_ALGORITHM
    return None


def one_pass_metrics(workload: Workload, policy, capacities_mb, cost) -> list[dict]:
    """``SimulationResult.metrics`` of ``policy`` at each capacity (MB) from its one-pass algorithm (see
    ``one_pass_algorithm``; ValueError when it has none), exact and equal to ``lab.simulate``'s, except
    ``peak_occupancy_mb``: NaN for LRU with tensors of different sizes (a one-pass algorithm counts hits, not
    the buffer's fill over time). Evictions: the tensors inserted (misses that fit) less those resident at the
    end, which for both algorithms are the most recently used tensors (LRU) or a full stack (Belady)."""
    algorithm = one_pass_algorithm(workload, policy)
    if algorithm is None:
        raise ValueError(f"no one-pass algorithm for {policy.name} on this trace: LRU on plain traces, Belady "
                         "on plain traces with equal sizes")
    capacities_mb = np.asarray(capacities_mb, np.float64)
    capacity_bytes = mb_to_bytes(capacities_mb).astype(np.int64)
    sizes = workload.tensor_bytes
    n = workload.n_accesses
    uncacheable = np.searchsorted(np.sort(workload.access_bytes), capacity_bytes, side="right")
    uncacheable = n - uncacheable  # accesses larger than each capacity
    if algorithm == LRU_ALGORITHM:
        hits, hit_bytes = _lru_hits(workload, capacity_bytes)
        last = np.flatnonzero(workload.next_use < 0)[::-1]  # each tensor's last access, most recent first
        by_recency = sizes[workload.codes[last]]
        resident = np.empty(len(capacity_bytes), np.int64)
        for k, capacity in enumerate(capacity_bytes):  # the largest prefix of the recency stack that fits
            fitting = by_recency[by_recency <= capacity]
            resident[k] = np.searchsorted(np.cumsum(fitting), capacity, side="right")
        equal = bool((sizes == sizes[0]).all())
        peak = np.where(equal, resident * sizes[0], -1)
    else:
        hits, depths = _opt_hits(workload, capacities_mb)
        hit_bytes = hits * int(sizes[0])
        resident = np.minimum(depths, workload.n_tensors)
        peak = resident * int(sizes[0])
    misses = n - hits
    rows = []
    for k, capacity in enumerate(capacity_bytes):
        counts = np.zeros(N_COUNTS, np.int64)
        counts[HITS] = hits[k]
        counts[READ_HITS] = hits[k]  # a plain trace only reads
        counts[HIT_BYTES] = hit_bytes[k]
        counts[READ_BYTES] = workload.total_bytes - hit_bytes[k]
        counts[INSERTIONS] = misses[k] - uncacheable[k]  # every miss that fits enters the buffer
        counts[EVICTIONS] = misses[k] - uncacheable[k] - resident[k]
        counts[PEAK_BYTES] = max(peak[k], 0)
        metrics = metrics_of_counts(workload, counts, int(capacity), cost)
        if peak[k] < 0:
            metrics["peak_occupancy_mb"] = float("nan")
        rows.append(metrics)
    return rows


def _simulated(workload: Workload, policy, capacities_mb: np.ndarray, threads: int) -> pd.DataFrame:
    def run(capacity):
        return simulate(workload, policy, capacity, per_access=False).metrics

    with ThreadPoolExecutor(max_workers=threads) as pool:
        metrics = list(pool.map(run, capacities_mb))
    return _rows_of_metrics(capacities_mb, metrics, workload,
                            f"simulation per capacity ({policy.name}, {threads} threads)")


def _sample(workload: Workload, sample_rate: float, seed: int) -> Workload:
    """The accesses of the tensors whose hashed id falls under ``sample_rate`` (SHARDS spatial sampling)."""
    rng = np.random.default_rng(seed)
    keep = rng.random(workload.n_tensors) < sample_rate
    rows = keep[workload.codes]
    return encode_trace(workload.trace.iloc[np.flatnonzero(rows)].reset_index(drop=True))


def _shards(workload: Workload, policy, capacities_mb: np.ndarray, sample_rate: float, seed: int,
            threads: int) -> pd.DataFrame:
    sampled = _sample(workload, sample_rate, seed)
    if sampled.n_accesses == 0:
        raise ValueError(f"sample_rate {sample_rate:g} keeps no tensor of this trace: raise it")
    scaled = np.maximum(capacities_mb * sample_rate, 1.0 / BYTES_PER_MB)
    rows = miss_ratio_curve(sampled, policy, scaled, threads=threads)
    # SHARDS_adj: scale by the rate, not by the accesses sampled; the accesses a skewed sample lacks or has in
    # excess are those of its most popular tensors, which hit
    return _rows(capacities_mb, np.rint(rows["misses"].to_numpy() / sample_rate),
                 np.rint(rows["dram_read_mb"].to_numpy() * BYTES_PER_MB / sample_rate),
                 np.rint(rows["dram_write_mb"].to_numpy() * BYTES_PER_MB / sample_rate), workload,
                 f"SHARDS_adj sampling at rate {sample_rate:g} (seed {seed}) of: {rows['algorithm'].iloc[0]}")


def miss_ratio_curve(trace, policy="LRU", capacities_mb=None, sample_rate: Optional[float] = None, seed: int = 0,
                     threads: Optional[int] = None, method: str = "auto") -> pd.DataFrame:
    """Misses, miss ratios and DRAM traffic of ``policy`` at each capacity (MB, MiB).

    Takes a trace DataFrame or Workload, a policy name or Policy (or
    ``"OPT-bound"``: the byte-granular optimum, ``lab.optimal``'s min-cost
    flow, a lower bound on every whole-tensor policy's traffic),
    capacities in MB (default: ``lab.default_capacities_mb``), and
    optionally ``sample_rate`` in (0, 1] with a ``seed`` (SHARDS sampling,
    for policies without a one-pass algorithm), ``threads`` (simulations at
    once; default one per CPU) and ``method`` (``"auto"``, ``"one-pass"`` or
    ``"simulation"``). See the module docstring for the algorithms; the
    ``algorithm`` column names the one used. Returns one row per capacity:
    capacity_mb, misses, miss_ratio, byte_miss_ratio, dram_read_mb,
    dram_write_mb, algorithm. Raises ValueError for an unknown policy or
    method, a bad capacity, rate or seed, or an empty trace.
    """
    if method not in ("auto", "one-pass", "simulation"):
        raise ValueError(f"method must be 'auto', 'one-pass' or 'simulation', got {method!r}")
    workload = encode_trace(trace)
    if workload.n_accesses == 0:
        raise ValueError("the trace is empty: there is no curve to draw")
    capacities_mb = _capacities(workload, capacities_mb)
    threads = (os.cpu_count() or 1) if threads is None else check_int("threads", threads)
    if isinstance(policy, str) and policy.lower() == OPT_BOUND.lower():
        bounds = [optimal(workload, c, method="flow", progress=False) for c in capacities_mb]
        read = [round(b.byte_granular_read_mb * BYTES_PER_MB) for b in bounds]
        return _rows(capacities_mb, [b.metrics["dram_accesses"] for b in bounds], read,
                     [round(b.byte_granular_write_mb * BYTES_PER_MB) for b in bounds], workload,
                     "byte-granular optimum per capacity (lab.optimal's min-cost flow; a lower bound for whole "
                     "tensors; misses: its achievable whole-tensor schedule's)")
    policy = get_policy(policy)
    if sample_rate is not None:
        sample_rate = check_number("sample_rate", sample_rate, 0, 1)
        if sample_rate == 0:
            raise ValueError("sample_rate must be in (0, 1], got 0")
        check_int("seed", seed, 0)
        return _shards(workload, policy, capacities_mb, sample_rate, seed, threads)
    algorithm = one_pass_algorithm(workload, policy)
    if method == "one-pass" and algorithm is None:
        raise ValueError(f"no one-pass algorithm for {policy.name} on this trace: LRU on plain traces, Belady on "
                         "plain traces with equal sizes")
    if algorithm is not None and method != "simulation":
        metrics = one_pass_metrics(workload, policy, capacities_mb, resolve_cost(None))
        return _rows_of_metrics(capacities_mb, metrics, workload, algorithm)
    return _simulated(workload, policy, capacities_mb, threads)
