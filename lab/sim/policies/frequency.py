"""Frequency: LFU, LFU with dynamic aging (LFUDA), Greedy-Dual-Size-Frequency (GDSF).

All three evict the resident tensor with the smallest (key, seq), where seq is the access that last set the
key, and a hit only ever raises a tensor's key and seq. So a hit just records them (one cache line) and moves
nothing: each resident tensor stays filed under the (key, seq) of some earlier access of it, never above its
current pair, either in a ring (a FIFO whose entries are in (key, seq) order: a new tensor goes there when its
key is at least the newest entry's, as every new tensor of LFU and LFUDA and every new tensor of equal size in
GDSF does) or else in a 4-ary min-heap. The smallest current pair is at the ring's front or the heap's top once
that entry is current: a stale front (hit since it was filed) moves to the heap under its current pair, a
stale top moves down to it. A hit costs O(1), most evictions take the ring's front in O(1), and each hit
causes at most one O(log n) heap move.

The state is three arrays (a per-tensor record, the integers, the floats) and the heap (a ``structures.Heap``)
rather than ``Lists``: a tensor's key, seq and count share a cache line, and a hit touches nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.compiled import kernel
from lab.sim.policy import Policy, param, register
from lab.sim.structures import NONE, Heap, heap_push, heap_remove, heap_update, new_heap

IN_HEAP = -2  # where a tensor is filed: its ring entry (>= 0), IN_HEAP, WAITING, or NONE (not resident)
WAITING = -3  # to enter the heap at the next eviction

# columns of the per-tensor record (float64; access indices are exact up to 2**53)
KEY = 0  # the current key
SEQ = 1  # the access that set it
COUNT = 2  # accesses since insertion (LFUDA, GDSF)
SIZE = 3  # bytes (GDSF)

# the integers, for k tensors: [0, k) where each tensor is filed; then these scalars (at k + ...); then
# [k + PEND, 2k + PEND) the tensors waiting to enter the heap; then the ring, two per entry (code, seq as
# filed), entry j at 2k + RING + 2 * (j & mask).
FRONT = 0  # the ring's oldest entry (entries only grow)
BACK = 1  # one past its newest
USED = 2  # resident bytes (GDSF)
N_WAITING = 3  # tensors waiting to enter the heap
PEND = 4
RING = 4
# the floats: these scalars
LAST = 0  # the key of the ring's newest entry
AGE = 1  # L: the key of the last victim (LFUDA, GDSF)
INCOMING = 2  # the H of the tensor being inserted (GDSF with incoming_competes)
N_FLOATS = 3


def new_ranked_arrays(n_tensors: int, columns: int):
    """(rec, ints, floats, heap, mask): the three arrays and the heap of an empty ranking over ``n_tensors``
    tensors."""
    k = n_tensors
    slots = 1 << int(2 * k).bit_length()  # every tensor once, plus one dead entry per removed tensor
    ints = np.zeros(2 * k + RING + 2 * slots, np.int64)
    ints[:k] = NONE
    return np.zeros((k, columns), np.float64), ints, np.zeros(N_FLOATS, np.float64), new_heap(k), slots - 1


# --- the heap (a structures.Heap) ----------------------------------------------------------------------


@kernel
def _heap_admit(s):
    """Push the tensors waiting to enter the heap (removed ones are no longer waiting)."""
    k = s.k
    for j in range(s.ints[k + N_WAITING]):
        c = s.ints[k + PEND + j]
        if s.ints[c] == WAITING:
            heap_push(s.heap, c, s.rec[c, KEY], np.int64(s.rec[c, SEQ]))
            s.ints[c] = IN_HEAP
    s.ints[k + N_WAITING] = 0


@kernel
def _heap_settle(s):
    """Move stale tops down to their current pairs until the top is current; returns the top."""
    h = s.heap
    rec = s.rec
    t = h.codes[0]
    seq = np.int64(rec[t, SEQ])
    while h.seqs[0] != seq:  # a key and seq only grow: the top moves down
        heap_update(h, t, rec[t, KEY], seq)
        t = h.codes[0]
        seq = np.int64(rec[t, SEQ])
    return t


# --- the ranking ------------------------------------------------------------------------------------------


@kernel(_nrt=False)
def ranked_add(s, c, key, seq):
    """File ``c`` (not resident) under (``key``, ``seq``), ``seq`` larger than any before: in the ring when its key
    is at least the newest entry's, else in the heap (it waits there for the next ``ranked_min``, so that an
    insertion stays a few stores)."""
    k = s.k
    s.rec[c, KEY] = key
    s.rec[c, SEQ] = seq
    front = s.ints[k + FRONT]
    back = s.ints[k + BACK]
    waiting = s.ints[k + N_WAITING]
    where = WAITING
    if front == back or key >= s.floats[LAST]:
        slot = 2 * k + RING + 2 * (back & s.mask)
        s.ints[slot] = c
        s.ints[slot + 1] = seq
        s.floats[LAST] = key
        where = back
        back += 1
    else:
        s.ints[k + PEND + waiting] = c
        waiting += 1
    s.ints[c] = where
    s.ints[k + BACK] = back
    s.ints[k + N_WAITING] = waiting


@kernel(_nrt=False)
def ranked_min(s):
    """The resident code with the smallest current (key, seq); stale entries met on the way are refiled."""
    k = s.k
    mask = s.mask
    if s.ints[k + N_WAITING] > 0:
        _heap_admit(s)
    front = s.ints[k + FRONT]
    back = s.ints[k + BACK]
    v = NONE
    while front != back:
        slot = 2 * k + RING + 2 * (front & mask)
        u = s.ints[slot]
        if s.ints[u] == front:
            seq = np.int64(s.rec[u, SEQ])
            if seq == s.ints[slot + 1]:
                v = u
                break
            heap_push(s.heap, u, s.rec[u, KEY], seq)  # hit since it was filed: refiled under its current pair
            s.ints[u] = IN_HEAP
        front += 1  # refiled, or dead (removed)
    s.ints[k + FRONT] = front
    if s.heap.size[0] > 0:
        t = s.heap.codes[0]
        if s.heap.seqs[0] != np.int64(s.rec[t, SEQ]):
            t = _heap_settle(s)
        if v == NONE or s.rec[t, KEY] < s.rec[v, KEY] or (s.rec[t, KEY] == s.rec[v, KEY]
                                                          and s.rec[t, SEQ] < s.rec[v, SEQ]):
            v = t
    return v


@kernel(_nrt=False)
def ranked_remove(s, c):
    """Unfile resident ``c``: the ring's front when it is there (as ``ranked_min`` leaves it), else anywhere
    (a ring entry elsewhere just goes dead)."""
    k = s.k
    w = s.ints[c]
    front = s.ints[k + FRONT]
    if w == IN_HEAP:
        heap_remove(s.heap, c)
    elif w == front:
        front += 1
    s.ints[c] = NONE
    s.ints[k + FRONT] = front


def _evict_hook(aged: bool, sized: bool):
    """The evict hook of a ranking: the smallest (key, seq) leaves. ``aged``: L becomes the victim's key;
    ``sized``: resident bytes are kept (GDSF)."""

    def evict(s, c, i):
        v = ranked_min(s)
        ranked_remove(s, v)
        if aged:
            s.floats[AGE] = s.rec[v, KEY]
        if sized:
            s.ints[s.k + USED] -= np.int64(s.rec[v, SIZE])
        return v

    return evict


# --- LFU -------------------------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class LFU(Policy):
    """Least frequently used: evict the resident tensor with the fewest accesses since it was inserted; among
    equal counts, the one whose count was reached longest ago (its last access is the oldest: LRU).

    The count starts at 1 on insertion and is forgotten on eviction (in-cache LFU), as in libCacheSim's LFU
    (``LFU.c``: one FIFO list per count, a hit moves the object to the newest end of the next; ``LFUCpp``
    breaks ties differently).
    """

    name = "LFU"
    libcachesim = "LFU"
    reference = ("Aho, Denning and Ullman, 'Principles of optimal page replacement', Journal of the ACM 18(1), "
                 "1971 (LFU as the optimal policy under the independent reference model)")

    class State(NamedTuple):  # a ranking (see the module): key = the count, seq = the last access
        rec: np.ndarray
        ints: np.ndarray
        floats: np.ndarray
        heap: Heap
        k: int
        mask: int

    def init_state(self, workload, capacity_bytes):
        rec, ints, floats, heap, mask = new_ranked_arrays(workload.n_tensors, 2)
        return self.State(rec, ints, floats, heap, workload.n_tensors, mask)

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            rec = s.rec
            rec[c, KEY] += 1.0
            rec[c, SEQ] = i
        return NONE

    @staticmethod
    def insert(s, c, i):
        ranked_add(s, c, 1.0, i)

    evict = staticmethod(_evict_hook(aged=False, sized=False))

    @staticmethod
    def remove(s, c):
        ranked_remove(s, c)


# --- LFUDA -----------------------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class LFUDA(Policy):
    """LFU with dynamic aging: each resident tensor has the key ``K = L + F`` (``F``: its accesses since
    insertion, ``L``: the cache age, initially 0), set on insertion (``F = 1``) and on every hit with the
    current ``L``; the victim has the smallest key, and ``L`` becomes that key. Among equal keys the one whose
    key was set longest ago goes first (as in libCacheSim's LFUDA, which keeps one FIFO list per key). Keys are
    integers, held exactly in float64.

    Differences from libCacheSim (libcachesim 0.3.5): lab follows the paper, not libCacheSim's ``LFUDA.c``:
    on a hit libCacheSim adds ``L`` to the key (``freq += min_freq``) instead of recomputing ``L + F``, and
    after emptying its smallest-key list it searches for the next one only up to the largest key a hit has
    reached, which an insertion does not raise, so it then evicts from an empty list: the binary crashes (or
    loops forever) on most traces.
    """

    name = "LFUDA"
    aliases = ("LFU-DA",)
    libcachesim = "LFUDA"
    reference = ("Arlitt, Cherkasova, Dilley, Friedrich and Jin, 'Evaluating content management techniques for "
                 "Web proxy caches', ACM SIGMETRICS Performance Evaluation Review 27(4), 2000")

    class State(NamedTuple):  # a ranking (see the module): key = L + cost * F set at the last access, COUNT = F
        rec: np.ndarray
        ints: np.ndarray
        floats: np.ndarray
        heap: Heap
        k: int
        mask: int
        cost: float  # the paper's C (K = C * F + L): 1 in LFU-DA. Also keeps this state's field types apart
        #              from LFU's: numba runs a compiled driver for any state whose field types match.

    def init_state(self, workload, capacity_bytes):
        rec, ints, floats, heap, mask = new_ranked_arrays(workload.n_tensors, 3)
        return self.State(rec, ints, floats, heap, workload.n_tensors, mask, 1.0)

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            rec = s.rec
            f = rec[c, COUNT] + 1.0
            rec[c, COUNT] = f
            rec[c, KEY] = s.floats[AGE] + s.cost * f
            rec[c, SEQ] = i
        return NONE

    @staticmethod
    def insert(s, c, i):
        s.rec[c, COUNT] = 1.0
        ranked_add(s, c, s.floats[AGE] + s.cost, i)

    evict = staticmethod(_evict_hook(aged=True, sized=False))

    @staticmethod
    def remove(s, c):
        ranked_remove(s, c)


# --- GDSF ------------------------------------------------------------------------------------------------

COST = 1.0e6  # libCacheSim's cost of every object: priorities L + F * 1e6 / size, in double precision
# (np.divide: the same IEEE division without Python's check for a zero divisor and its exception path; a
# 0-byte tensor gets an infinite priority.)


@kernel
def _gdsf_admits(s, c):
    """Whether tensor ``c`` enters when it competes on arrival (``incoming_competes``): not when it would be the
    first victim (on a tie it is the newest: a resident goes first). Called, not inlined."""
    k = s.k
    h = s.floats[AGE] + np.divide(COST, s.rec[c, SIZE])
    s.floats[INCOMING] = h
    if s.ints[k + USED] + np.int64(s.rec[c, SIZE]) <= s.capacity:
        return True
    v = ranked_min(s)
    if h < s.rec[v, KEY]:
        s.floats[AGE] = h
        return False
    return True


@register
@dataclass(frozen=True)
class GDSF(Policy):
    """Greedy-Dual-Size-Frequency: each resident tensor has the priority ``H = L + F * cost / size`` (``F``:
    its accesses since insertion, ``L``: the inflation value, initially 0, ``cost`` = 1e6 as in libCacheSim),
    set on insertion and on every hit with the current ``L``; the victim has the smallest ``H`` (ties: the one
    set longest ago), and ``L`` becomes its ``H``. A new tensor's ``H`` uses ``L`` after the evictions that
    made room for it. Priorities are float64, computed as libCacheSim does (``L + (F * 1e6) / size``): scaling
    every size by a power of two (bytes, KiB, MiB) scales them exactly, so the decisions are the same in any
    of those units.

    Differences from libCacheSim (libcachesim 0.3.5), which lab copies with ``incoming_competes=1``:
    libCacheSim inserts the missed tensor first (its ``H`` with ``L`` from before this miss) and then evicts
    the smallest ``H`` until the buffer fits, the new tensor included: when the new tensor has the smallest
    ``H`` it is not inserted (lab counts no eviction, libCacheSim counts one) and ``L`` becomes its ``H``.
    This is exact with equal sizes; with varied sizes libCacheSim may first evict other tensors and then the
    new one, which lab does not copy (it inserts the new tensor then). The default follows the paper (as
    libCacheSim did up to 2024).
    """

    name = "GDSF"
    libcachesim = "GDSF"
    reference = ("Cherkasova, 'Improving WWW proxies performance with Greedy-Dual-Size-Frequency caching "
                 "policy', HP Laboratories technical report HPL-98-69R1, 1998")

    incoming_competes: int = param(0, low=0, high=1, integer=True,
                                   doc="1: the missed tensor competes for its place (libCacheSim 0.3.5)")

    def libcachesim_params(self):
        return {}

    class State(NamedTuple):  # a ranking (see the module): key = H set at the last access, COUNT = F, SIZE
        rec: np.ndarray
        ints: np.ndarray
        floats: np.ndarray
        heap: Heap
        k: int
        mask: int
        capacity: int
        competes: bool

    def init_state(self, workload, capacity_bytes):
        rec, ints, floats, heap, mask = new_ranked_arrays(workload.n_tensors, 4)
        rec[:, SIZE] = workload.tensor_bytes
        return self.State(rec, ints, floats, heap, workload.n_tensors, mask, int(capacity_bytes),
                          bool(self.incoming_competes))

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            rec = s.rec
            f = rec[c, COUNT] + 1.0
            rec[c, COUNT] = f
            rec[c, KEY] = s.floats[AGE] + np.divide(f * COST, rec[c, SIZE])
            rec[c, SEQ] = i
        return NONE

    @staticmethod
    def can_insert(s, c, i):
        return not s.competes or _gdsf_admits(s, c)

    @staticmethod
    def insert(s, c, i):
        k = s.k
        h = s.floats[AGE] + np.divide(COST, s.rec[c, SIZE])
        if s.competes:
            h = s.floats[INCOMING]
        s.rec[c, COUNT] = 1.0
        s.ints[k + USED] += np.int64(s.rec[c, SIZE])
        ranked_add(s, c, h, i)

    evict = staticmethod(_evict_hook(aged=True, sized=True))

    @staticmethod
    def remove(s, c):
        s.ints[s.k + USED] -= np.int64(s.rec[c, SIZE])
        ranked_remove(s, c)
