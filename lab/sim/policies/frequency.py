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

The state is three arrays (a per-tensor record, the integers, the floats) rather than ``structures.Heap``
and ``Lists``: a tensor's key, seq and count share a cache line, and a hit touches nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.compiled import kernel
from lab.sim.policy import Policy, param, register
from lab.sim.structures import NONE

IN_HEAP = -2  # where a tensor is filed: its ring entry (>= 0), IN_HEAP, WAITING, or NONE (not resident)
WAITING = -3  # to enter the heap at the next eviction
ARITY = 4

# columns of the per-tensor record (float64; access indices are exact up to 2**53)
KEY = 0  # the current key
SEQ = 1  # the access that set it
COUNT = 2  # accesses since insertion (LFUDA, GDSF)
SIZE = 3  # bytes (GDSF)

# the integers, for k tensors: [0, k) where each tensor is filed; [k, 2k) the heap's codes and [2k, 3k) their
# seqs, per heap slot; [3k, 4k) each tensor's heap slot; then these scalars (at 4k + ...); then [4k + PEND,
# 5k + PEND) the tensors waiting to enter the heap; then the ring, two per entry (code, seq as filed), entry j
# at 5k + RING + 2 * (j & mask).
FRONT = 0  # the ring's oldest entry (entries only grow)
BACK = 1  # one past its newest
HEAP_SIZE = 2
USED = 3  # resident bytes (GDSF)
N_WAITING = 4  # tensors waiting to enter the heap
PEND = 5
RING = 5
# the floats: [0, k) the heap's keys, per slot; then these scalars (at k + ...)
LAST = 0  # the key of the ring's newest entry
AGE = 1  # L: the key of the last victim (LFUDA, GDSF)
INCOMING = 2  # the H of the tensor being inserted (GDSF with incoming_competes)
N_FLOATS = 3


def new_ranked_arrays(n_tensors: int, columns: int):
    """(rec, ints, floats, mask): the three arrays of an empty ranking over ``n_tensors`` tensors."""
    k = n_tensors
    slots = 1 << int(2 * k).bit_length()  # every tensor once, plus one dead entry per removed tensor
    ints = np.zeros(5 * k + RING + 2 * slots, np.int64)
    ints[:k] = NONE
    ints[3 * k:4 * k] = NONE
    return np.zeros((k, columns), np.float64), ints, np.zeros(k + N_FLOATS, np.float64), slots - 1


# --- the heap: codes, seqs and slots in ints, keys in floats ---------------------------------------------


@kernel
def _sift_up(s, j, c, key, seq):
    """Place (c, key, seq) at heap slot ``j`` or above."""
    ints = s.ints
    keys = s.floats
    k = s.k
    while j > 0:
        parent = (j - 1) // ARITY
        pk = keys[parent]
        if not (key < pk or (key == pk and seq < ints[2 * k + parent])):
            break
        pc = ints[k + parent]
        ints[k + j] = pc
        keys[j] = pk
        ints[2 * k + j] = ints[2 * k + parent]
        ints[3 * k + pc] = j
        j = parent
    ints[k + j] = c
    keys[j] = key
    ints[2 * k + j] = seq
    ints[3 * k + c] = j


@kernel
def _sift_down(s, j, c, key, seq, size):
    """Place (c, key, seq) at heap slot ``j`` or below, in a heap of ``size`` slots."""
    ints = s.ints
    keys = s.floats
    k = s.k
    while True:
        first = ARITY * j + 1
        if first >= size:
            break
        best = first
        bk = keys[first]
        bs = ints[2 * k + first]
        last = min(first + ARITY, size)
        for child in range(first + 1, last):
            ck = keys[child]
            cs = ints[2 * k + child]
            if ck < bk or (ck == bk and cs < bs):
                best = child
                bk = ck
                bs = cs
        if not (bk < key or (bk == key and bs < seq)):
            break
        bc = ints[k + best]
        ints[k + j] = bc
        keys[j] = bk
        ints[2 * k + j] = bs
        ints[3 * k + bc] = j
        j = best
    ints[k + j] = c
    keys[j] = key
    ints[2 * k + j] = seq
    ints[3 * k + c] = j


@kernel
def _heap_push(s, c, key, seq):
    """Add ``c`` (not in the heap) under (key, seq)."""
    size = s.ints[4 * s.k + HEAP_SIZE]
    s.ints[4 * s.k + HEAP_SIZE] = size + 1
    _sift_up(s, size, c, key, seq)


@kernel
def _heap_remove(s, c):
    """Take ``c`` (in the heap) out."""
    ints = s.ints
    keys = s.floats
    k = s.k
    j = ints[3 * k + c]
    last = ints[4 * k + HEAP_SIZE] - 1
    ints[4 * k + HEAP_SIZE] = last
    ints[3 * k + c] = NONE
    if j < last:
        mc = ints[k + last]
        mk = keys[last]
        ms = ints[2 * k + last]
        if mk < keys[j] or (mk == keys[j] and ms < ints[2 * k + j]):
            _sift_up(s, j, mc, mk, ms)
        else:
            _sift_down(s, j, mc, mk, ms, last)


@kernel
def _heap_admit(s):
    """Push the tensors waiting to enter the heap (removed ones are no longer waiting)."""
    k = s.k
    for j in range(s.ints[4 * k + N_WAITING]):
        c = s.ints[4 * k + PEND + j]
        if s.ints[c] == WAITING:
            _heap_push(s, c, s.rec[c, KEY], np.int64(s.rec[c, SEQ]))
            s.ints[c] = IN_HEAP
    s.ints[4 * k + N_WAITING] = 0


@kernel
def _heap_settle(s):
    """Move stale tops down to their current pairs until the top is current; returns the top."""
    ints = s.ints
    rec = s.rec
    k = s.k
    size = ints[4 * k + HEAP_SIZE]
    t = ints[k]
    seq = np.int64(rec[t, SEQ])
    while ints[2 * k] != seq:
        _sift_down(s, 0, t, rec[t, KEY], seq, size)
        t = ints[k]
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
    front = s.ints[4 * k + FRONT]
    back = s.ints[4 * k + BACK]
    waiting = s.ints[4 * k + N_WAITING]
    where = WAITING
    if front == back or key >= s.floats[k + LAST]:
        slot = 5 * k + RING + 2 * (back & s.mask)
        s.ints[slot] = c
        s.ints[slot + 1] = seq
        s.floats[k + LAST] = key
        where = back
        back += 1
    else:
        s.ints[4 * k + PEND + waiting] = c
        waiting += 1
    s.ints[c] = where
    s.ints[4 * k + BACK] = back
    s.ints[4 * k + N_WAITING] = waiting


@kernel(_nrt=False)
def ranked_min(s):
    """The resident code with the smallest current (key, seq); stale entries met on the way are refiled."""
    k = s.k
    mask = s.mask
    if s.ints[4 * k + N_WAITING] > 0:
        _heap_admit(s)
    front = s.ints[4 * k + FRONT]
    back = s.ints[4 * k + BACK]
    v = NONE
    while front != back:
        slot = 5 * k + RING + 2 * (front & mask)
        u = s.ints[slot]
        if s.ints[u] == front:
            seq = np.int64(s.rec[u, SEQ])
            if seq == s.ints[slot + 1]:
                v = u
                break
            _heap_push(s, u, s.rec[u, KEY], seq)  # hit since it was filed: refiled under its current pair
            s.ints[u] = IN_HEAP
        front += 1  # refiled, or dead (removed)
    s.ints[4 * k + FRONT] = front
    if s.ints[4 * k + HEAP_SIZE] > 0:
        t = s.ints[k]
        if s.ints[2 * k] != np.int64(s.rec[t, SEQ]):
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
    front = s.ints[4 * k + FRONT]
    if w == IN_HEAP:
        _heap_remove(s, c)
    elif w == front:
        front += 1
    s.ints[c] = NONE
    s.ints[4 * k + FRONT] = front


def _evict_hook(aged: bool, sized: bool):
    """The evict hook of a ranking: the smallest (key, seq) leaves. ``aged``: L becomes the victim's key;
    ``sized``: resident bytes are kept (GDSF)."""

    def evict(s, c, i):
        v = ranked_min(s)
        ranked_remove(s, v)
        if aged:
            s.floats[s.k + AGE] = s.rec[v, KEY]
        if sized:
            s.ints[4 * s.k + USED] -= np.int64(s.rec[v, SIZE])
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
        k: int
        mask: int

    def init_state(self, workload, capacity_bytes):
        rec, ints, floats, mask = new_ranked_arrays(workload.n_tensors, 2)
        return self.State(rec, ints, floats, workload.n_tensors, mask)

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
        k: int
        mask: int
        cost: float  # the paper's C (K = C * F + L): 1 in LFU-DA. Also keeps this state's field types apart
        #              from LFU's: numba runs a compiled driver for any state whose field types match.

    def init_state(self, workload, capacity_bytes):
        rec, ints, floats, mask = new_ranked_arrays(workload.n_tensors, 3)
        return self.State(rec, ints, floats, workload.n_tensors, mask, 1.0)

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            rec = s.rec
            f = rec[c, COUNT] + 1.0
            rec[c, COUNT] = f
            rec[c, KEY] = s.floats[s.k + AGE] + s.cost * f
            rec[c, SEQ] = i
        return NONE

    @staticmethod
    def insert(s, c, i):
        s.rec[c, COUNT] = 1.0
        ranked_add(s, c, s.floats[s.k + AGE] + s.cost, i)

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
    h = s.floats[k + AGE] + np.divide(COST, s.rec[c, SIZE])
    s.floats[k + INCOMING] = h
    if s.ints[4 * k + USED] + np.int64(s.rec[c, SIZE]) <= s.capacity:
        return True
    v = ranked_min(s)
    if h < s.rec[v, KEY]:
        s.floats[k + AGE] = h
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
        k: int
        mask: int
        capacity: int
        competes: bool

    def init_state(self, workload, capacity_bytes):
        rec, ints, floats, mask = new_ranked_arrays(workload.n_tensors, 4)
        rec[:, SIZE] = workload.tensor_bytes
        return self.State(rec, ints, floats, workload.n_tensors, mask, int(capacity_bytes),
                          bool(self.incoming_competes))

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            rec = s.rec
            f = rec[c, COUNT] + 1.0
            rec[c, COUNT] = f
            rec[c, KEY] = s.floats[s.k + AGE] + np.divide(f * COST, rec[c, SIZE])
            rec[c, SEQ] = i
        return NONE

    @staticmethod
    def can_insert(s, c, i):
        return not s.competes or _gdsf_admits(s, c)

    @staticmethod
    def insert(s, c, i):
        k = s.k
        h = s.floats[k + AGE] + np.divide(COST, s.rec[c, SIZE])
        if s.competes:
            h = s.floats[k + INCOMING]
        s.rec[c, COUNT] = 1.0
        s.ints[4 * k + USED] += np.int64(s.rec[c, SIZE])
        ranked_add(s, c, h, i)

    evict = staticmethod(_evict_hook(aged=True, sized=True))

    @staticmethod
    def remove(s, c):
        s.ints[4 * s.k + USED] -= np.int64(s.rec[c, SIZE])
        ranked_remove(s, c)
