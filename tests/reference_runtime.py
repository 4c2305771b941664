"""A plain-Python runtime simulator of a prefetching schedule, XLA's ``RuntimeSimulator`` rules written out
directly (lists as queues, one event at a time), for tests of ``lab.planning.runtime.simulate_copies``."""

import math


def simulate_reference(gpu_ms, dram_ms, host_ms, latency_ms, eager, kind, nbytes, issue_op, need_op, rate):
    """Same arguments and results as ``simulate_copies`` (lists instead of arrays)."""
    n, m = len(gpu_ms), len(nbytes)
    left = [float(b) for b in nbytes]
    c_start, c_end, c_stall = [0.0] * m, [0.0] * m, [0.0] * m
    queues = {0: [], 1: []}  # waiting copies, in FIFO order
    pending = sorted(range(m), key=lambda c: (issue_op[c], c))
    o_start, o_end, o_stall = [0.0] * n, [0.0] * n, [0.0] * n
    clock = [0.0]

    def move(duration, target=None):
        """Advance the queues for ``duration`` or until ``target`` is done; return the time spent."""
        spent = 0.0
        while (target is None or left[target] > 0) and spent < duration:
            busy = [q for q in (0, 1) if queues[q]]
            if not busy:
                break
            speed = rate / len(busy)
            step = min([left[queues[q][0]] / speed for q in busy] + [duration - spent])
            for q in busy:
                c = queues[q][0]
                if left[c] / speed <= step:
                    left[c] = 0.0
                    c_end[c] = clock[0] + spent + step
                    queues[q].pop(0)
                else:
                    left[c] -= step * speed
            spent += step
        return spent

    def enqueue(before_op):
        while pending and issue_op[pending[0]] <= before_op - 1:
            c = pending.pop(0)
            c_start[c] = clock[0]
            if left[c] <= 0:
                c_end[c] = clock[0]
            else:
                queues[kind[c]].append(c)

    host = 0.0
    for i in range(n):
        enqueue(i)
        if eager:
            host += host_ms[i]
            ready = host + latency_ms
            if ready > clock[0]:
                move(ready - clock[0])
                clock[0] = ready
        waited = 0.0
        for c in sorted((c for c in range(m) if need_op[c] == i), key=lambda c: (issue_op[c], c)):
            if left[c] > 0:
                spent = move(math.inf, c)
                c_stall[c] = spent
                clock[0] += spent
                waited += spent
        o_stall[i], o_start[i] = waited, clock[0]
        if gpu_ms[i] - dram_ms[i] > 0:
            move(gpu_ms[i] - dram_ms[i])
        clock[0] += gpu_ms[i]
        o_end[i] = clock[0]
    enqueue(n)
    clock[0] += move(math.inf)
    return o_start, o_end, o_stall, c_start, c_end, c_stall, clock[0]
