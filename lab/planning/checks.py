"""``check_plan``: a plan's events checked without trusting the planner (capacity, copies in flight,
bandwidth, data ready), the first violation raised as a one-line ValueError with its time and values."""

from __future__ import annotations

import numpy as np

from lab.sim.timing import dram_bytes_per_ms
from lab.units import BYTES_PER_GB_DECIMAL, BYTES_PER_MB, MS_PER_S

TOLERANCE = 1e-9  # relative: float rounding of times and rates


def _slack(value: float) -> float:
    return TOLERANCE * max(1.0, abs(value))


def _peak(starts: np.ndarray, ends: np.ndarray, weights: np.ndarray):
    """(the largest sum of ``weights`` over the half-open spans [start, end) at any time, the time)."""
    if starts.shape[0] == 0:
        return 0.0, 0.0
    times = np.concatenate([starts, ends])
    delta = np.concatenate([weights, -weights])
    order = np.lexsort((delta, times))  # at equal times the ends (negative) first: spans are half-open
    level = np.cumsum(delta[order])
    i = int(np.argmax(level))
    return float(level[i]), float(times[order][i])


def check_plan(result, cost=None, options=None) -> None:
    """Raise ValueError naming the first violation of ``result`` (``lab.plan``'s ``PlanResult``) under ``cost``
    (its own when None) and ``options`` (its own when None), checked from its tables alone:

    1. capacity: the resident MB (``residency``, spans [from_ms, to_ms)) never exceed ``capacity_mb``;
    2. copies in flight: at most ``max_outstanding_prefetches`` prefetches (``max_outstanding_evictions``
       evictions) with start <= t < end at any time t;
    3. bandwidth: each copy moves at most the copy rate, and in every window [a, b] (a a start, b an end of a copy
       or op) the bytes of the copies and ops' own DRAM bytes inside it fit the faster of the copy rate and DRAM
       (``dram_bandwidth_gb_s * dram_efficiency``) times b - a (the EDF demand condition: for one preemptively
       shared resource with release times and deadlines, exactly feasibility);
    4. data ready: every prefetch ends by its need op's start, and its tensor is resident from the copy's start
       through that op's end; every eviction ends by its need op's start (its bytes freed, its data in DRAM).
    """
    cost = result.cost if cost is None else cost
    options = result.options if options is None else options
    # 1. capacity
    res = result.residency
    level, at = _peak(res["from_ms"].to_numpy(np.float64), res["to_ms"].to_numpy(np.float64),
                      res["size_mb"].to_numpy(np.float64))
    if level > result.capacity_mb + _slack(result.capacity_mb):
        raise ValueError(f"capacity: {level:.6g} MB resident at {at:.6g} ms, above capacity_mb={result.capacity_mb:g}")
    # 2. copies in flight
    events = result.events
    for kind, limit in (("prefetch", options.max_outstanding_prefetches),
                        ("eviction", options.max_outstanding_evictions)):
        mine = events[events["kind"] == kind]
        count, at = _peak(mine["start_ms"].to_numpy(np.float64), mine["end_ms"].to_numpy(np.float64),
                          np.ones(len(mine)))
        if count > limit:
            raise ValueError(f"copies in flight: {int(count)} {kind} copies at {at:.6g} ms, above the limit of {limit}")
    # 3. bandwidth
    copy_rate = options.copy_gb_s(cost) * BYTES_PER_GB_DECIMAL / MS_PER_S  # bytes per ms
    rate = max(copy_rate, dram_bytes_per_ms(cost))
    c_start = events["start_ms"].to_numpy(np.float64)
    c_end = events["end_ms"].to_numpy(np.float64)
    c_bytes = events["size_mb"].to_numpy(np.float64) * BYTES_PER_MB
    for i in range(len(events)):
        span = c_end[i] - c_start[i]
        if c_bytes[i] > copy_rate * span + _slack(c_bytes[i]):
            raise ValueError(f"bandwidth: copy {int(events['copy'].iloc[i])} moves {c_bytes[i]:.6g} bytes in "
                             f"{span:.6g} ms, above the copy rate of {copy_rate * MS_PER_S / 1e9:g} GB/s")
    ops = result.ops
    o_start = ops["start_ms"].to_numpy(np.float64)
    o_end = ops["end_ms"].to_numpy(np.float64)
    o_bytes = (ops["dram_read_mb"].to_numpy(np.float64) + ops["dram_write_mb"].to_numpy(np.float64)) * BYTES_PER_MB
    starts = np.concatenate([c_start, o_start])
    ends = np.concatenate([c_end, o_end])
    amounts = np.concatenate([c_bytes, o_bytes])
    by_end = np.argsort(ends, kind="mergesort")
    for a in np.unique(starts):
        inside = by_end[starts[by_end] >= a]
        if inside.shape[0] == 0:
            continue
        demand = np.cumsum(amounts[inside])
        supply = rate * (ends[inside] - a)
        over = np.flatnonzero(demand > supply + TOLERANCE * np.maximum(1.0, demand))
        if over.shape[0]:
            j = int(over[0])
            raise ValueError(f"bandwidth: {demand[j]:.6g} bytes must move in [{a:.6g}, {ends[inside][j]:.6g}] ms, "
                             f"above {supply[j]:.6g} at {rate * MS_PER_S / 1e9:g} GB/s")
    # 4. data ready
    where = {int(op): i for i, op in enumerate(ops["op_index"].to_numpy()) if op >= 0}
    resident = res[res["how"] == "prefetched"]
    for i in range(len(events)):
        row = events.iloc[i]
        if row["kind"] == "eviction":
            need = where.get(int(row["need_op"]))
            if need is not None and row["end_ms"] > o_start[need] + _slack(o_start[need]):
                raise ValueError(f"data ready: eviction {int(row['copy'])} of tensor {row['tensor_id']!r} ends at "
                                 f"{row['end_ms']:.6g} ms, after op {int(row['need_op'])}, which needs its bytes free "
                                 f"or its data in DRAM, starts at {o_start[need]:.6g} ms")
            continue
        need = where.get(int(row["need_op"]))
        if need is None:
            raise ValueError(f"data ready: prefetch {int(row['copy'])} needs op {int(row['need_op'])}, not in ops")
        if row["end_ms"] > o_start[need] + _slack(o_start[need]):
            raise ValueError(f"data ready: prefetch {int(row['copy'])} of tensor {row['tensor_id']!r} ends at "
                             f"{row['end_ms']:.6g} ms, after its op {int(row['need_op'])} starts at "
                             f"{o_start[need]:.6g} ms")
        held = resident[(resident["tensor_id"] == row["tensor_id"])
                        & (resident["from_ms"] <= row["start_ms"] + _slack(row["start_ms"]))
                        & (resident["to_ms"] >= o_end[need] - _slack(o_end[need]))]
        if held.empty:
            raise ValueError(f"data ready: tensor {row['tensor_id']!r} of prefetch {int(row['copy'])} is not resident "
                             f"from {row['start_ms']:.6g} ms through its op's end at {o_end[need]:.6g} ms")
