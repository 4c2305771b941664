"""The runtime simulator of a prefetching schedule: XLA's ``RuntimeSimulator`` rules
(``xla/service/memory_space_assignment/simulator.cc``), on ops timed by ``lab.sim.timing``.

- Ops run in order on one stream. Op *i* is busy ``gpu_ms[i]``, of which ``dram_ms[i]`` moves its own DRAM bytes;
  the rest, ``gpu_ms[i] - dram_ms[i]``, leaves DRAM idle (XLA's ``GetDefaultMemoryBandwidthIdleTime``).
- Copies wait in two FIFO queues, reads (prefetches, DRAM -> buffer) and writes (evictions, buffer -> DRAM). A
  copy joins its queue when op ``issue_op`` ends (-1: before the first op). Copies move only in DRAM-idle time:
  an op's idle time, the GPU's wait for the host in eager execution, and stalls. The front copy of each queue
  moves at ``copy_bytes_per_ms``, half of it each while both queues are busy.
- Before op ``need_op`` starts, each copy it needs must be done: the op stalls (XLA's ``copy-done``) while the
  queues move at full speed (shared as above: the other queue's front moves too). A copy whose ``need_op`` is
  ``NO_NEED`` (-1) is drained after the last op, within the step.

A memory-bound op (every operand in DRAM) leaves no idle time and the queues stay as they were; a copy-done of
32 bytes at 1 byte per time unit after such an op of 16 takes the step to 48, XLA's worked case
(``tests/test_planning.py`` ports them by value).
"""

from __future__ import annotations

import numpy as np

from lab.compiled import kernel

PREFETCH = 0  # kind: a read copy, DRAM -> buffer
EVICTION = 1  # kind: a write copy, buffer -> DRAM
KINDS = ("prefetch", "eviction")
NO_NEED = -1  # need_op of a copy no op waits for (drained at the end of the step)


@kernel(inline="always")
def _advance(copy, head, to_finish, step, speed, at, remaining, end):
    """Move ``copy``, at the head (position ``head``) of its queue, for ``step`` ms at ``speed`` bytes per ms: done
    at ``at`` when ``to_finish`` (ms it still needed) <= ``step``. Returns the queue's new head."""
    if to_finish <= step:
        remaining[copy] = 0.0
        end[copy] = at
        return head + 1
    remaining[copy] -= step * speed
    return head


@kernel
def _drain(now, duration, target, remaining, end, read_q, write_q, state, rate):
    """Move the queues' front copies for up to ``duration`` (or until copy ``target`` is done, ``target`` >= 0)
    from time ``now``; copies that finish get their ``end``. ``state``: (read head, read tail, write head, write
    tail) positions in ``read_q``/``write_q``. Returns the time used."""
    used = 0.0
    while True:
        if target >= 0 and remaining[target] <= 0.0:
            break
        while state[0] < state[1] and remaining[read_q[state[0]]] <= 0.0:
            state[0] += 1  # an empty copy: done when it joined
        while state[2] < state[3] and remaining[write_q[state[2]]] <= 0.0:
            state[2] += 1
        r_busy = state[0] < state[1]
        w_busy = state[2] < state[3]
        if not r_busy and not w_busy:
            break
        left = duration - used
        if left <= 0.0:
            break
        speed = rate * 0.5 if (r_busy and w_busy) else rate
        dt_r = np.inf
        dt_w = np.inf
        if r_busy:
            dt_r = remaining[read_q[state[0]]] / speed
        if w_busy:
            dt_w = remaining[write_q[state[2]]] / speed
        step = min(dt_r, dt_w, left)
        if r_busy:
            state[0] = _advance(read_q[state[0]], state[0], dt_r, step, speed, now + used + step, remaining, end)
        if w_busy:
            state[2] = _advance(write_q[state[2]], state[2], dt_w, step, speed, now + used + step, remaining, end)
        used += step
    return used


@kernel
def simulate_copies(gpu_ms, dram_ms, host_ms, latency_ms, eager, kind, nbytes, issue_op, need_op, copy_bytes_per_ms):
    """Run ops and copies by the module's rules. Per op (float64): ``gpu_ms`` (busy), ``dram_ms`` (of it, its own
    DRAM time), ``host_ms`` (host time before it is issued; used when ``eager``, with ``latency_ms`` from issue to
    start). Per copy: ``kind`` (int8, PREFETCH or EVICTION), ``nbytes`` (float64), ``issue_op`` (int64: it joins
    its queue when that op ends, -1 before the first), ``need_op`` (int64: the op that waits for it, NO_NEED for
    none); copies of one kind queue in order of ``issue_op``, then of their index. ``copy_bytes_per_ms``: the copy
    engine's rate.

    Returns (op start, op end, op stall, copy start, copy end, copy stall: float64 arrays; the step's end: float),
    times in the units of ``gpu_ms``; a copy's stall: how long its need op waited for it;
    an op's stall precedes its start; a copy starts when it joins its queue."""
    n = gpu_ms.shape[0]
    m = nbytes.shape[0]
    order = np.argsort(issue_op, kind="mergesort")
    n_read = 0
    for c in range(m):
        if kind[c] == PREFETCH:
            n_read += 1
    read_q = np.empty(n_read, np.int64)
    write_q = np.empty(m - n_read, np.int64)
    r = 0
    w = 0
    for j in range(m):
        c = order[j]
        if kind[c] == PREFETCH:
            read_q[r] = c
            r += 1
        else:
            write_q[w] = c
            w += 1
    # copies each op waits for, grouped by need_op (CSR)
    need_count = np.zeros(n + 1, np.int64)
    for c in range(m):
        if need_op[c] >= 0:
            need_count[need_op[c] + 1] += 1
    need_start = np.cumsum(need_count)
    need_list = np.empty(need_start[n], np.int64)
    fill = need_start[:n].copy()
    for j in range(m):
        c = order[j]
        if need_op[c] >= 0:
            need_list[fill[need_op[c]]] = c
            fill[need_op[c]] += 1
    remaining = nbytes.astype(np.float64).copy()
    copy_start = np.zeros(m, np.float64)
    copy_end = np.zeros(m, np.float64)
    copy_stall = np.zeros(m, np.float64)
    for c in range(m):
        if remaining[c] <= 0.0:
            remaining[c] = 0.0
    state = np.zeros(4, np.int64)  # read head, read tail, write head, write tail
    op_start = np.empty(n, np.float64)
    op_end = np.empty(n, np.float64)
    op_stall = np.zeros(n, np.float64)
    now = 0.0
    issued = 0.0
    for i in range(n + 1):
        # copies issued after op i - 1 join their queues now
        while state[1] < n_read and issue_op[read_q[state[1]]] <= i - 1:
            c = read_q[state[1]]
            copy_start[c] = now
            if remaining[c] <= 0.0:
                copy_end[c] = now
            state[1] += 1
        while state[3] < m - n_read and issue_op[write_q[state[3]]] <= i - 1:
            c = write_q[state[3]]
            copy_start[c] = now
            if remaining[c] <= 0.0:
                copy_end[c] = now
            state[3] += 1
        # zero-byte copies at the fronts are done at once
        while state[0] < state[1] and remaining[read_q[state[0]]] <= 0.0:
            state[0] += 1
        while state[2] < state[3] and remaining[write_q[state[2]]] <= 0.0:
            state[2] += 1
        if i == n:
            now += _drain(now, np.inf, -1, remaining, copy_end, read_q, write_q, state, copy_bytes_per_ms)
            break
        if eager:
            issued += host_ms[i]
            ready = issued + latency_ms
            if ready > now:
                _drain(now, ready - now, -1, remaining, copy_end, read_q, write_q, state, copy_bytes_per_ms)
                now = ready
        stall = 0.0
        for j in range(need_start[i], need_start[i + 1]):
            c = need_list[j]
            if remaining[c] > 0.0:
                used = _drain(now, np.inf, c, remaining, copy_end, read_q, write_q, state, copy_bytes_per_ms)
                now += used
                stall += used
                copy_stall[c] = used
        op_stall[i] = stall
        op_start[i] = now
        idle = gpu_ms[i] - dram_ms[i]
        if idle > 0.0:
            _drain(now, idle, -1, remaining, copy_end, read_q, write_q, state, copy_bytes_per_ms)
        now += gpu_ms[i]
        op_end[i] = now
    return op_start, op_end, op_stall, copy_start, copy_end, copy_stall, now
