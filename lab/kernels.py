"""Compiled hot loops of the cache simulator (numba, ``cache=True``).

One mechanism serves every policy: the buffer evicts the resident tensor with
the highest eviction priority, ties going to the earliest inserted. A policy
supplies the priority each access gives its tensor. Policies whose priority is
simply "older is evicted first" (LRU, FIFO) are kept in an O(1) doubly linked
queue instead of a heap: the two give the same order, the queue is faster.
"""

from __future__ import annotations

import numpy as np
from numba import njit

NEVER = -1  # next-access position of a tensor that is not accessed again


@njit(cache=True)
def previous_access_positions(codes, n_tensors):
    """Position of the previous access to the same tensor, for each access (NEVER when none). O(n)."""
    n = codes.shape[0]
    prev = np.empty(n, np.int64)
    last = np.full(n_tensors, NEVER, np.int64)
    for i in range(n):
        c = codes[i]
        prev[i] = last[c]
        last[c] = i
    return prev


@njit(cache=True)
def next_access_positions(codes, n_tensors):
    """Position of the next access to the same tensor, for each access (NEVER when none). O(n)."""
    n = codes.shape[0]
    nxt = np.empty(n, np.int64)
    last = np.full(n_tensors, NEVER, np.int64)
    for i in range(n - 1, -1, -1):
        c = codes[i]
        nxt[i] = last[c]
        last[c] = i
    return nxt


# The heap stores each entry's key and insertion sequence beside its code, so
# that comparisons read contiguous memory instead of chasing codes.


@njit(cache=True)
def _evict_before(key_a, seq_a, key_b, seq_b):
    """True when entry a must leave the buffer before entry b."""
    return key_a > key_b or (key_a == key_b and seq_a < seq_b)


@njit(cache=True)
def _heap_place(heap, hkey, hseq, pos, j, code, key, seq):
    heap[j] = code
    hkey[j] = key
    hseq[j] = seq
    pos[code] = j


@njit(cache=True)
def _sift_up(heap, hkey, hseq, pos, j):
    code, key, seq = heap[j], hkey[j], hseq[j]
    while j > 0:
        parent = (j - 1) >> 1
        if not _evict_before(key, seq, hkey[parent], hseq[parent]):
            break
        _heap_place(heap, hkey, hseq, pos, j, heap[parent], hkey[parent], hseq[parent])
        j = parent
    _heap_place(heap, hkey, hseq, pos, j, code, key, seq)
    return j


@njit(cache=True)
def _sift_down(heap, hkey, hseq, pos, j, size):
    code, key, seq = heap[j], hkey[j], hseq[j]
    while True:
        child = 2 * j + 1
        if child >= size:
            break
        if child + 1 < size and _evict_before(hkey[child + 1], hseq[child + 1], hkey[child], hseq[child]):
            child += 1
        if not _evict_before(hkey[child], hseq[child], key, seq):
            break
        _heap_place(heap, hkey, hseq, pos, j, heap[child], hkey[child], hseq[child])
        j = child
    _heap_place(heap, hkey, hseq, pos, j, code, key, seq)


@njit(cache=True)
def simulate_buffer(codes, tensor_bytes, capacity_bytes, use_queue, refresh_on_hit, priority):
    """Replay a trace through a buffer of ``capacity_bytes``.

    Takes: ``codes`` (int64 tensor code per access), ``tensor_bytes`` (int64
    size per tensor), ``capacity_bytes`` (int), ``use_queue`` (True: evict the
    oldest by insertion, or by last access when ``refresh_on_hit``; False:
    evict the highest ``priority``), ``refresh_on_hit`` (a hit re-ranks the
    tensor), ``priority`` (float64 per access; ignored with ``use_queue``).

    Returns ``(hit, evictions, resident_bytes, victim_access, victim_code)``:
    per access a hit flag, the number of tensors evicted and the bytes resident
    after the access; then, per eviction, the access that caused it and the
    evicted tensor's code.
    """
    n = codes.shape[0]
    k = tensor_bytes.shape[0]
    hit = np.zeros(n, np.bool_)
    evictions = np.zeros(n, np.int32)
    resident = np.empty(n, np.int64)
    victim_access = np.empty(n, np.int64)
    victim_code = np.empty(n, np.int64)
    n_victims = 0
    cached = np.zeros(k, np.bool_)
    used = 0
    qk = k if use_queue else 0
    hk = 0 if use_queue else k
    # queue: doubly linked list, head = next victim
    prev = np.full(qk, -1, np.int64)
    nxt = np.full(qk, -1, np.int64)
    head = -1
    tail = -1
    # heap: binary heap of tensor codes with their keys, root = next victim
    heap = np.empty(hk, np.int64)
    hkey = np.empty(hk, np.float64)
    hseq = np.empty(hk, np.int64)
    pos = np.empty(hk, np.int64)
    heap_size = 0

    for i in range(n):
        c = codes[i]
        if cached[c]:
            hit[i] = True
            if refresh_on_hit:
                if use_queue:
                    if c != tail:  # unlink c, append at tail
                        p, q = prev[c], nxt[c]
                        if p >= 0:
                            nxt[p] = q
                        else:
                            head = q
                        prev[q] = p
                        prev[c] = tail
                        nxt[c] = -1
                        nxt[tail] = c
                        tail = c
                else:
                    j = pos[c]
                    hkey[j] = priority[i]
                    j = _sift_up(heap, hkey, hseq, pos, j)
                    _sift_down(heap, hkey, hseq, pos, j, heap_size)
        else:
            size = tensor_bytes[c]
            if size <= capacity_bytes:
                n_evicted = 0
                while used + size > capacity_bytes:
                    if use_queue:
                        v = head
                        head = nxt[v]
                        if head >= 0:
                            prev[head] = -1
                        else:
                            tail = -1
                    else:
                        v = heap[0]
                        heap_size -= 1
                        if heap_size > 0:
                            last = heap_size
                            _heap_place(heap, hkey, hseq, pos, 0, heap[last], hkey[last], hseq[last])
                            _sift_down(heap, hkey, hseq, pos, 0, heap_size)
                    cached[v] = False
                    used -= tensor_bytes[v]
                    victim_access[n_victims] = i
                    victim_code[n_victims] = v
                    n_victims += 1
                    n_evicted += 1
                evictions[i] = n_evicted
                cached[c] = True
                used += size
                if use_queue:
                    prev[c] = tail
                    nxt[c] = -1
                    if tail >= 0:
                        nxt[tail] = c
                    else:
                        head = c
                    tail = c
                else:
                    _heap_place(heap, hkey, hseq, pos, heap_size, c, priority[i], i)
                    heap_size += 1
                    _sift_up(heap, hkey, hseq, pos, heap_size - 1)
        resident[i] = used
    return hit, evictions, resident, victim_access[:n_victims].copy(), victim_code[:n_victims].copy()
