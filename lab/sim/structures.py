"""Shared compiled data structures for policy states, indexed by tensor code (0..n_tensors-1).

- ``Lists``: several doubly linked queues over the same codes (each code in at
  most one at a time), with item and byte counts: LRU/FIFO queues, segments,
  ghost lists. ``head`` is the newest end, ``tail`` the oldest.
- ``Heap``: an indexed 4-ary min-heap on (key, seq); the policy picks what
  key and tie-break seq mean. The one heap of the policies (scored, frequency, LeCaR).
- ``KeySet``: a set of distinct integer keys with the largest in a few
  branch-free word operations (a 64-ary tree of bitmaps).
- ``Pool``: a dense set for uniform random sampling (swap-remove).
- ``Rng``: a seeded splitmix64 generator kept in the state, so a randomized
  policy is reproducible and independent of numba's global generator (the one
  generator of the policies: ``rng_next``, ``splitmix_mix``, ``rng_scale``).
- ``size_granularity`` and ``share_bytes``: a policy's sub-queue shares of the
  buffer in whole blocks (see below), so that no decision depends on the unit of the sizes.

Constructors run in Python; every other function is compiled and called from hooks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros

from lab.compiled import kernel

NONE = -1


# --- shares of the buffer ----------------------------------------------------------------------
#
# A policy is unit-free when a trace whose sizes and capacity are all multiplied by one factor (bytes, KiB, MiB)
# gets the same decisions. A byte count compared with a share of the buffer rounded down to whole bytes (as
# libCacheSim's ``(int64_t)(cache_size * ratio)``) is not: the rounding is a constant in the trace's unit. The
# papers count blocks; here a block is the trace's size granularity, the largest size of which every tensor's
# is a whole multiple (the gcd of the sizes): a tensor on a trace of equal sizes, a byte when the sizes are
# arbitrary byte counts (then the shares are libCacheSim's exactly).


SHARE_LIMIT = 2**62  # a share (a ghost list of 64 buffers of 2**40 MiB) stays an int64 that sums cannot overflow


def size_granularity(workload) -> int:
    """The block of ``workload``'s sizes: the gcd of its tensors' sizes in bytes (1 when it has none);
    computed once per workload."""
    def gcd() -> int:
        sizes = workload.tensor_bytes
        return max(1, int(np.gcd.reduce(sizes))) if sizes.shape[0] else 1

    return workload.memo("size_granularity", gcd)


def share_bytes(capacity_bytes: int, ratio: float, block: int) -> int:
    """``ratio`` of a buffer of ``capacity_bytes`` rounded down to whole ``block``s, in bytes.

    Computed as ``ratio * (capacity / block)`` with the quotient and remainder taken apart, so that multiplying
    the capacity and the block by one integer gives the same number of blocks exactly; with ``block`` 1 it is
    ``int(capacity_bytes * ratio)``, libCacheSim's share.
    """
    capacity_bytes = int(capacity_bytes)
    blocks = capacity_bytes // block + (capacity_bytes % block) / block
    return min(block * int(ratio * blocks), SHARE_LIMIT)



# --- linked queues ---------------------------------------------------------------------------


class Lists(NamedTuple):
    older: np.ndarray  # int64 per code: the next code towards the tail, NONE at the tail
    newer: np.ndarray  # int64 per code: the next code towards the head, NONE at the head
    owner: np.ndarray  # int8 per code: the list it is in, NONE when in none
    head: np.ndarray  # int64 per list: newest code, NONE when empty
    tail: np.ndarray  # int64 per list: oldest code, NONE when empty
    count: np.ndarray  # int64 per list: codes in it
    nbytes: np.ndarray  # int64 per list: their bytes
    sizes: np.ndarray  # int64 per code: bytes (the workload's tensor_bytes)


def new_lists(n_lists: int, sizes: np.ndarray) -> Lists:
    """``n_lists`` empty queues over the codes of ``sizes`` (int64 bytes per tensor)."""
    k = sizes.shape[0]
    return Lists(np.full(k, NONE, np.int64), np.full(k, NONE, np.int64), np.full(k, NONE, np.int8),
                 np.full(n_lists, NONE, np.int64), np.full(n_lists, NONE, np.int64), np.zeros(n_lists, np.int64),
                 np.zeros(n_lists, np.int64), sizes)


@kernel(_nrt=False)
def push_head(q, lst, c):
    """Put ``c`` (in no list) at the head (newest end) of list ``lst``."""
    h = q.head[lst]
    t = q.tail[lst]
    q.older[c] = h
    q.newer[c] = NONE
    if h != NONE:
        q.newer[h] = c
    else:
        t = c
    q.head[lst] = c
    q.tail[lst] = t
    q.owner[c] = lst
    q.count[lst] += 1
    q.nbytes[lst] += q.sizes[c]



@kernel(_nrt=False)
def unlink(q, c):
    """Take ``c`` out of its list; returns that list (NONE, and nothing changes, when it is in none)."""
    lst = np.int64(q.owner[c])
    if lst == NONE:
        return NONE
    o = q.older[c]
    w = q.newer[c]
    h = q.head[lst]
    t = q.tail[lst]
    if o != NONE:
        q.newer[o] = w
    else:
        t = w
    if w != NONE:
        q.older[w] = o
    else:
        h = o
    q.head[lst] = h
    q.tail[lst] = t
    q.owner[c] = NONE
    q.count[lst] -= 1
    q.nbytes[lst] -= q.sizes[c]
    return lst


@kernel(_nrt=False)
def move_to_head(q, lst, c):
    """Move ``c`` (in any list or none) to the head of list ``lst``."""
    if q.owner[c] == lst and q.head[lst] == c:
        return
    unlink(q, c)
    push_head(q, lst, c)


@kernel(_nrt=False)
def pop_tail(q, lst):
    """Take the oldest code out of list ``lst`` and return it (NONE when the list is empty)."""
    c = q.tail[lst]
    if c != NONE:
        unlink(q, c)
    return c


# --- indexed min-heap --------------------------------------------------------------------------


class Heap(NamedTuple):
    """An indexed ARITY-ary min-heap of codes on (key, seq).

    Slots past the last hold key +inf, so that a slot's children are compared
    without bounds checks and without branches (the comparisons of a heap are
    unpredictable: branch mispredictions, not memory, bound it).
    """

    codes: np.ndarray  # int64 per slot
    keys: np.ndarray  # float64 per slot (+inf past the last)
    seqs: np.ndarray  # int64 per slot: tie-break, smaller first (PAD_SEQ past the last; a real seq is smaller)
    pos: np.ndarray  # int64 per code: its slot, NONE when absent
    size: np.ndarray  # int64[1]


PAD_SEQ = np.iinfo(np.int64).max  # seq of the slots past the last: a real entry with key +inf still comes first
ARITY = 4  # a 4-ary heap: half the depth of a binary one, and a slot's children share a cache line


def new_heap(n_codes: int) -> Heap:
    """An empty heap with room for every one of ``n_codes`` codes."""
    slots = n_codes + ARITY + 1
    return Heap(np.zeros(slots, np.int64), np.full(slots, np.inf), np.full(slots, PAD_SEQ, np.int64),
                np.full(n_codes, NONE, np.int64), np.zeros(1, np.int64))


@kernel(_nrt=False)
def _sift_up(h, j, c, key, seq):
    """Place (c, key, seq) at slot ``j`` or above."""
    codes = h.codes
    keys = h.keys
    seqs = h.seqs
    pos = h.pos
    while j > 0:
        parent = (j - 1) // ARITY
        pk = keys[parent]
        ps = seqs[parent]
        if pk < key or (pk == key and ps < seq):
            break
        pc = codes[parent]
        codes[j] = pc
        keys[j] = pk
        seqs[j] = ps
        pos[pc] = j
        j = parent
    codes[j] = c
    keys[j] = key
    seqs[j] = seq
    pos[c] = j


@kernel(_nrt=False)
def _sift_down(h, j, c, key, seq, size):
    """Place (c, key, seq) at slot ``j`` or below in a heap of ``size`` slots (keys past it are +inf)."""
    codes = h.codes
    keys = h.keys
    seqs = h.seqs
    pos = h.pos
    while True:
        first = ARITY * j + 1
        if first >= size:
            break
        k0 = keys[first]
        k1 = keys[first + 1]
        k2 = keys[first + 2]
        k3 = keys[first + 3]
        s0 = seqs[first]
        s1 = seqs[first + 1]
        s2 = seqs[first + 2]
        s3 = seqs[first + 3]
        lower01 = k0 < k1 or (k0 == k1 and s0 <= s1)
        a = first if lower01 else first + 1
        ka = k0 if lower01 else k1
        sa = s0 if lower01 else s1
        lower23 = k2 < k3 or (k2 == k3 and s2 <= s3)
        b = first + 2 if lower23 else first + 3
        kb = k2 if lower23 else k3
        sb = s2 if lower23 else s3
        lower = ka < kb or (ka == kb and sa <= sb)
        child = a if lower else b
        ck = ka if lower else kb
        cs = sa if lower else sb
        if key < ck or (key == ck and seq < cs):
            break
        cc = codes[child]
        codes[j] = cc
        keys[j] = ck
        seqs[j] = cs
        pos[cc] = j
        j = child
    codes[j] = c
    keys[j] = key
    seqs[j] = seq
    pos[c] = j


@kernel(_nrt=False)
def heap_push(h, c, key, seq):
    """Add code ``c`` (absent) with ``key`` and tie-break ``seq``."""
    j = h.size[0]
    h.size[0] = j + 1
    _sift_up(h, j, c, key, seq)


@kernel(_nrt=False)
def heap_update(h, c, key, seq):
    """Give code ``c`` (present) a new ``key`` and ``seq``."""
    j = h.pos[c]
    old_key = h.keys[j]
    if key < old_key or (key == old_key and seq < h.seqs[j]):
        _sift_up(h, j, c, key, seq)
    else:
        _sift_down(h, j, c, key, seq, h.size[0])


@kernel(_nrt=False)
def heap_remove(h, c):
    """Take code ``c`` (present) out of the heap."""
    j = h.pos[c]
    last = h.size[0] - 1
    h.size[0] = last
    h.pos[c] = NONE
    mc = h.codes[last]
    mk = h.keys[last]
    ms = h.seqs[last]
    h.keys[last] = np.inf
    h.seqs[last] = PAD_SEQ
    if j < last:
        old_key = h.keys[j]
        if mk < old_key or (mk == old_key and ms < h.seqs[j]):
            _sift_up(h, j, mc, mk, ms)
        else:
            _sift_down(h, j, mc, mk, ms, last)


@kernel(_nrt=False)
def heap_pop(h):
    """Take out and return the code with the smallest (key, seq)."""
    c = h.codes[0]
    heap_remove(h, c)
    return c


@kernel(_nrt=False)
def heap_replace_top(h, c, key, seq):
    """Take out the code with the smallest (key, seq) and add code ``c`` (absent) with ``key`` and ``seq``: one
    sift instead of a pop's and a push's."""
    h.pos[h.codes[0]] = NONE
    _sift_down(h, 0, c, key, seq, h.size[0])



# --- integer key set ------------------------------------------------------------------------------


class KeySet(NamedTuple):
    """A set of distinct integer keys in [0, universe): add, discard and the largest in a few word
    operations (a 64-ary tree of bitmaps: each bit of a level-l word says whether a word below is non-empty).

    No comparison branches to mispredict, unlike a heap: for policies whose priorities are distinct integers
    (Belady's next-use positions).
    """

    words: np.ndarray  # uint64: all levels, leaves first
    offsets: np.ndarray  # int64 per level: where its words start in ``words``
    depth: np.ndarray  # int64[1]: number of levels


def new_keyset(universe: int) -> KeySet:
    """An empty set for keys in [0, universe)."""
    sizes = [max(1, -(-universe // 64))]
    while sizes[-1] > 1:
        sizes.append(-(-sizes[-1] // 64))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return KeySet(np.zeros(int(sum(sizes)), np.uint64), offsets, np.array([len(sizes)], np.int64))


@kernel(_nrt=False)
def keyset_add(q, key):
    """Add ``key`` (absent)."""
    words = q.words
    offsets = q.offsets
    depth = q.depth[0]
    k = key
    for level in range(depth):
        w = offsets[level] + (k >> 6)
        before = words[w]
        words[w] = before | (np.uint64(1) << np.uint64(k & 63))
        if before != 0:
            break
        k = k >> 6


@kernel(_nrt=False)
def keyset_discard(q, key):
    """Remove ``key`` (present)."""
    words = q.words
    offsets = q.offsets
    depth = q.depth[0]
    k = key
    for level in range(depth):
        w = offsets[level] + (k >> 6)
        after = words[w] & ~(np.uint64(1) << np.uint64(k & 63))
        words[w] = after
        if after != 0:
            break
        k = k >> 6


@kernel(_nrt=False)
def keyset_max(q):
    """The largest key (the set must not be empty)."""
    words = q.words
    offsets = q.offsets
    k = 0
    for level in range(q.depth[0] - 1, -1, -1):
        bits = words[offsets[level] + k]
        k = k * 64 + (63 - np.int64(leading_zeros(bits)))
    return k



# --- random sampling -----------------------------------------------------------------------------


class Pool(NamedTuple):
    members: np.ndarray  # int64: the codes in the pool, densely packed
    index: np.ndarray  # int64 per code: its place in members, NONE when absent
    count: np.ndarray  # int64[1]


def new_pool(n_codes: int) -> Pool:
    """An empty pool with room for every one of ``n_codes`` codes."""
    return Pool(np.empty(n_codes, np.int64), np.full(n_codes, NONE, np.int64), np.zeros(1, np.int64))


@kernel(_nrt=False)
def pool_add(p, c):
    """Add code ``c`` (absent)."""
    j = p.count[0]
    p.members[j] = c
    p.index[c] = j
    p.count[0] = j + 1


@kernel(_nrt=False)
def pool_remove(p, c):
    """Remove code ``c`` (present): the last member takes its place."""
    j = p.index[c]
    last = p.count[0] - 1
    moved = p.members[last]
    p.members[j] = moved
    p.index[moved] = j
    p.index[c] = NONE
    p.count[0] = last


@kernel(_nrt=False)
def pool_remove_with_slots(members, index, count, slots, c):
    """``pool_remove`` on a Pool's arrays (``members``, ``index``, ``count``) that also moves the row of
    ``slots`` (one row per pool slot) of the last member into the slot it takes over."""
    j = index[c]
    last = count[0] - 1
    moved = members[last]
    for col in range(slots.shape[1]):
        slots[j, col] = slots[last, col]
    members[j] = moved
    index[moved] = j
    index[c] = NONE
    count[0] = last


class Rng(NamedTuple):
    state: np.ndarray  # uint64[1]


SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment of the state per number


def new_rng(seed: int) -> Rng:
    """A splitmix64 generator seeded with ``seed`` (an int >= 0)."""
    return Rng(np.array([np.uint64(seed % 2**64)], np.uint64))


@kernel(inline="always")
def splitmix_mix(z):
    """splitmix64's output function of the state ``z`` (uint64; Steele, Lea and Flood, OOPSLA 2014): the
    generator's next number is ``splitmix_mix(z + SPLITMIX_GAMMA)`` with ``z + SPLITMIX_GAMMA`` the new state. A
    loop may keep the state in a local this way and store it back once."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@kernel(inline="always")
def rng_next(state):
    """The next 64 random bits (uint64) of the generator whose state is ``state`` (an ``Rng``'s uint64[1]
    array), which advances."""
    z = state[0] + SPLITMIX_GAMMA
    state[0] = z
    return splitmix_mix(z)


@kernel(inline="always")
def rng_scale(bits, n):
    """A uniform integer in [0, n) from 64 random ``bits`` (uint64), for 1 <= n < 2**32: the top 32 bits times n,
    shifted down (Lemire's multiply-shift; no division)."""
    return np.int64(((bits >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))
