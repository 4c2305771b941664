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
def _heap_remove(heap, hkey, hseq, pos, j, size):
    """Remove the entry at heap index ``j`` from a heap of ``size`` entries; returns the new size."""
    size -= 1
    if j < size:
        _heap_place(heap, hkey, hseq, pos, j, heap[size], hkey[size], hseq[size])
        j = _sift_up(heap, hkey, hseq, pos, j)
        _sift_down(heap, hkey, hseq, pos, j, size)
    return size


@njit(cache=True)
def _unlink(prev, nxt, c, head, tail):
    """Take ``c`` out of the queue; returns the new (head, tail)."""
    p, q = prev[c], nxt[c]
    if p >= 0:
        nxt[p] = q
    else:
        head = q
    if q >= 0:
        prev[q] = p
    else:
        tail = p
    return head, tail


@njit(cache=True)
def _append(prev, nxt, c, head, tail):
    """Put ``c`` at the tail of the queue (evicted last); returns the new (head, tail)."""
    prev[c] = tail
    nxt[c] = -1
    if tail >= 0:
        nxt[tail] = c
    else:
        head = c
    return head, c


@njit(cache=True)
def simulate_buffer(codes, tensor_bytes, capacity_bytes, use_queue, refresh_on_hit, priority, is_write, next_use):
    """Replay a trace through a buffer of ``capacity_bytes``.

    Takes: ``codes`` (int64 tensor code per access), ``tensor_bytes`` (int64
    size per tensor), ``capacity_bytes`` (int), ``use_queue`` (True: evict the
    oldest by insertion, or by last access when ``refresh_on_hit``; False:
    evict the highest ``priority``), ``refresh_on_hit`` (a hit re-ranks the
    tensor), ``priority`` (float64 per access; ignored with ``use_queue``).

    ``is_write`` and ``next_use`` (one per access, or both empty) switch on
    reads and writes: a write allocates the tensor without a DRAM read and
    marks it dirty; evicting a dirty tensor writes it back; a tensor whose
    access has no next use (``next_use == NEVER``) is dropped from the buffer
    after it, without writeback; a write of a tensor larger than the buffer
    goes straight to DRAM.

    Returns ``(hit, inserted, dropped, evictions, resident_bytes,
    write_bytes, victim_access, victim_code, victim_written_back)``: per
    access whether it was served on chip without a DRAM read, whether it put
    its tensor into the buffer, whether it dropped its (dead) tensor after,
    the number of tensors evicted, the bytes resident after it and the bytes
    written to DRAM; per eviction the access that caused it, the evicted
    tensor's code and whether it was written back. Without reads and writes,
    ``dropped``, ``write_bytes`` and ``victim_written_back`` come back empty.
    """
    n = codes.shape[0]
    k = tensor_bytes.shape[0]
    rw = is_write.shape[0] == n and n > 0
    rw_n = n if rw else 0  # reads-and-writes outputs: empty without an access column
    hit = np.zeros(n, np.bool_)
    inserted = np.zeros(n, np.bool_)
    dropped = np.zeros(rw_n, np.bool_)
    evictions = np.zeros(n, np.int32)
    resident = np.empty(n, np.int64)
    write_bytes = np.zeros(rw_n, np.int64)
    victim_access = np.empty(n, np.int64)
    victim_code = np.empty(n, np.int64)
    victim_written_back = np.zeros(rw_n, np.bool_)
    n_victims = 0
    cached = np.zeros(k, np.bool_)
    dirty = np.zeros(k, np.bool_)
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
        write = rw and is_write[i]
        if cached[c]:
            hit[i] = True
            if write:
                dirty[c] = True
            if refresh_on_hit:
                if use_queue:
                    if c != tail:
                        head, tail = _unlink(prev, nxt, c, head, tail)
                        head, tail = _append(prev, nxt, c, head, tail)
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
                        head, tail = _unlink(prev, nxt, v, head, tail)
                    else:
                        v = heap[0]
                        heap_size = _heap_remove(heap, hkey, hseq, pos, 0, heap_size)
                    cached[v] = False
                    used -= tensor_bytes[v]
                    if rw and dirty[v]:  # still live (dead tensors were dropped): write it back
                        dirty[v] = False
                        write_bytes[i] += tensor_bytes[v]
                        victim_written_back[n_victims] = True
                    victim_access[n_victims] = i
                    victim_code[n_victims] = v
                    n_victims += 1
                    n_evicted += 1
                evictions[i] = n_evicted
                inserted[i] = True
                cached[c] = True
                dirty[c] = write
                hit[i] = write  # a write is produced on chip: no DRAM read
                used += size
                if use_queue:
                    head, tail = _append(prev, nxt, c, head, tail)
                else:
                    _heap_place(heap, hkey, hseq, pos, heap_size, c, priority[i], i)
                    heap_size += 1
                    _sift_up(heap, hkey, hseq, pos, heap_size - 1)
            elif write:
                write_bytes[i] += size  # too large for the buffer: streamed out to DRAM
        if rw and next_use[i] == NEVER and cached[c]:  # dead from here on: drop, no writeback
            if use_queue:
                head, tail = _unlink(prev, nxt, c, head, tail)
            else:
                heap_size = _heap_remove(heap, hkey, hseq, pos, pos[c], heap_size)
            cached[c] = False
            dirty[c] = False
            used -= tensor_bytes[c]
            dropped[i] = True
        resident[i] = used
    return (hit, inserted, dropped, evictions, resident, write_bytes, victim_access[:n_victims].copy(),
            victim_code[:n_victims].copy(), victim_written_back[:n_victims].copy() if rw else victim_written_back)
