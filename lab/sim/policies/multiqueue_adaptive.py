"""Adaptive multi-queue policies that keep history beyond the buffer: ARC and LIRS, as libCacheSim implements them.

Both are written for the engine's loop: the common hit is a store or two, inlined; lists are kept as
positions in logs rather than linked lists, so that cursors only move forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.compiled import kernel
from lab.sim.policy import Policy, param, register
from lab.sim.structures import NONE, share_bytes, size_granularity

# --- ARC -----------------------------------------------------------------------------------------
#
# T1 and T2 are LRU lists, B1 and B2 FIFO lists of keys: each is kept as positions in a log rather than as
# links. T1 and T2 use the trace itself (the access that put a tensor at the head of its list), B1 and B2
# a log of the tensors in the order they became ghosts. ``key[c]`` packs the list and the position,
# ``position * 4 + list`` (NONE: in no list); the LRU end of a list is the first position at or after that
# list's cursor that is still some member's key. Cursors only move forward, and a hit is two stores.

T1, T2, B1, B2 = 0, 1, 2, 3  # ARC's lists (the paper's names); also slots of ARC.State.nbytes and cursor
GHOST_LEN, GHOST_HIT = 4, 5  # further slots of ARC.State.cursor: ghost log length, ghost list the miss hit


@kernel(_nrt=False)
def _arc_tail(where, key, j, which):
    """The position of the LRU end of list ``which`` (non-empty): the first position from ``j`` along ``where``
    (the trace for T1 and T2, the ghost log for B1 and B2) that is still its tensor's key."""
    while key[where[j]] != j * 4 + which:
        j += 1
    return j


@register
@dataclass(frozen=True)
class ARC(Policy):
    """Adaptive Replacement Cache: two LRU lists, T1 (seen once recently) and T2 (seen at least twice), each
    with a ghost list of the keys it evicted (B1, B2). A hit moves the tensor to the head of T2; a miss
    that hits a ghost list moves the target size p of T1 towards that side (by max(|B2|/|B1|, 1) blocks after
    a B1 hit, by max(|B1|/|B2|, 1) after a B2 hit) and inserts into T2, any other miss inserts into T1. The
    victim is the LRU end of T1 when T1 is larger than p, else of T2; it moves to its ghost list. On a
    miss in all four lists, when T1 + B1 would exceed the buffer, B1's oldest key is dropped first (or,
    with B1 empty, T1's LRU end is evicted outright), and when all four lists hold twice the buffer,
    B2's oldest key is dropped.

    As libCacheSim's ARC: all sizes are bytes, p and the ghost lists included (p is a float, clamped to [0,
    buffer]; |B2|/|B1| is a ratio of bytes); a ghost hit only adapts p, and the evictions that make room for
    the block it brings back are all taken by REPLACE. The paper's step of p counts blocks; with sizes in
    bytes lab takes the block to be the tensor missed: p moves by max(|B2|/|B1|, 1) times its size.

    Differences from libCacheSim (libcachesim 0.3.5): libCacheSim moves p by max(|B2|/|B1|, 1) bytes, so
    with sizes in bytes p barely moves (by one byte where tensors are MiB) and its decisions change with the
    unit of the sizes; lab's are the same in any unit, and the same as libCacheSim's where all sizes are 1.
    """

    name = "ARC"
    libcachesim = "ARC"
    reference = ("Megiddo and Modha, 'ARC: A self-tuning, low overhead replacement cache', "
                 "USENIX FAST 2003")

    class State(NamedTuple):
        key: np.ndarray  # int64 per tensor: position * 4 + list (see above), NONE in no list
        codes: np.ndarray  # the workload's codes: T1 and T2 in order
        ghosts: np.ndarray  # int64: the ghost log, tensors in the order they entered B1 or B2
        cursor: np.ndarray  # int64[6]: per list where its LRU end search starts; GHOST_LEN; GHOST_HIT
        nbytes: np.ndarray  # int64[4]: bytes per list
        p: np.ndarray  # float64[1]: target bytes of T1
        sizes: np.ndarray  # int64 per tensor: bytes
        capacity: int  # bytes

    def init_state(self, workload, capacity_bytes):
        cursor = np.zeros(6, np.int64)
        cursor[GHOST_HIT] = NONE
        return self.State(np.full(workload.n_tensors, NONE, np.int64), workload.codes,
                          np.empty(workload.n_accesses + 1, np.int64), cursor, np.zeros(4, np.int64),
                          np.zeros(1, np.float64), workload.tensor_bytes, int(capacity_bytes))

    @staticmethod
    def find(s, c, i, hit):
        if hit:  # to the head of T2, branch-free
            key = s.key
            moved = s.sizes[c] * ((key[c] & 3) == T1)
            key[c] = i * 4 + T2
            nbytes = s.nbytes
            nbytes[T1] -= moved
            nbytes[T2] += moved
        return NONE

    @staticmethod
    def can_insert(s, c, i):
        # A miss: libCacheSim's lookup adapts p when the key is in B1 or B2, and forgets the key. Done here and
        # branch-free (see the module's docstring); the engine calls can_insert on every miss that fits.
        k = s.key[c]
        ghost = np.int64(k != NONE)
        which = k & 3
        in_b1 = ghost * np.int64(which == B1)
        in_b2 = ghost - in_b1
        nb = s.nbytes
        b1 = nb[B1]
        b2 = nb[B2]
        p = s.p[0]
        size = s.sizes[c]
        # the step in blocks of c's size (the paper's pages); max(.., 1) in the divisors only guards the branch
        # not taken: the list c is in holds at least its bytes
        after_b1 = min(p + max(b2 / max(b1, 1), 1.0) * size, np.float64(s.capacity))
        after_b2 = max(p - max(b1 / max(b2, 1), 1.0) * size, 0.0)
        s.p[0] = p * (1 - ghost) + after_b1 * in_b1 + after_b2 * in_b2
        nb[B1] = b1 - size * in_b1
        nb[B2] = b2 - size * in_b2
        s.key[c] = NONE
        s.cursor[GHOST_HIT] = ghost * (which + 1) - 1
        return True

    @staticmethod
    def evict(s, c, i):
        nb = s.nbytes
        t1 = nb[T1]
        t2 = nb[T2]
        b1 = nb[B1]
        b2 = nb[B2]
        ghost = s.cursor[GHOST_HIT]
        capacity = s.capacity
        outright = False
        if ghost == NONE:
            if t1 + b1 + s.sizes[c] > capacity:  # the paper's case A: T1 and B1 hold a whole buffer
                if b1 > 0:  # drop B1's oldest key
                    j = _arc_tail(s.ghosts, s.key, s.cursor[B1], B1)
                    s.cursor[B1] = j
                    g = s.ghosts[j]
                    b1 -= s.sizes[g]
                    s.key[g] = NONE
                else:  # B1 is empty: T1 alone is too large, its LRU end leaves without a ghost
                    outright = True
            elif t1 + b1 + t2 + b2 >= 2 * capacity and b2 > 0:  # drop B2's oldest key
                j = _arc_tail(s.ghosts, s.key, s.cursor[B2], B2)
                s.cursor[B2] = j
                g = s.ghosts[j]
                b2 -= s.sizes[g]
                s.key[g] = NONE
        # REPLACE: the LRU end of T1 when T1 is over its target p, else of T2, to its ghost list
        p = s.p[0]
        if outright or (t1 > 0 and (t1 > p or (t1 == p and ghost == B2))) or t2 == 0:
            src = T1
        else:
            src = T2
        j = _arc_tail(s.codes, s.key, s.cursor[src], src)
        s.cursor[src] = j
        v = s.codes[j]
        size = s.sizes[v]
        if src == T1:
            t1 -= size
            b1 += size * (not outright)
        else:
            t2 -= size
            b2 += size
        n = s.cursor[GHOST_LEN]
        s.ghosts[n] = v
        s.key[v] = NONE if outright else n * 4 + src + 2
        s.cursor[GHOST_LEN] = n + (not outright)
        nb[T1] = t1
        nb[T2] = t2
        nb[B1] = b1
        nb[B2] = b2
        return v

    @staticmethod
    def insert(s, c, i):
        to = T1 + (s.cursor[GHOST_HIT] != NONE)
        s.key[c] = i * 4 + to
        s.nbytes[to] += s.sizes[c]
        s.cursor[GHOST_HIT] = NONE

    @staticmethod
    def remove(s, c):
        key = s.key
        s.nbytes[key[c] & 3] -= s.sizes[c]
        key[c] = NONE


# --- LIRS ----------------------------------------------------------------------------------------
#
# All of LIRS's state is one int64 array, ``mem`` (a hook that branches or calls costs the engine's loop an
# atomic increment and decrement of every array in the state, so there is one):
#  - a node per tensor, NODE_COLUMNS slots (a cache line): its place in each ordered set, flags, size;
#  - a copy of the trace's codes: the stack S is ordered by the trace itself (a block enters or moves to
#    the top of S only when it is accessed), ``S_AT`` is the access that put it there, and the bottom of S
#    is the first position from S's cursor that is still some member's place;
#  - logs for the queue Q, the non-resident list and the pending victims, ordered the same way (a member's
#    place in its log), compacted when full;
#  - registers: LIRS's byte counts, the sets' counts and cursors.
# A hit on an LIR block off the bottom of S is one store, inlined into the engine's loop; every other step
# runs out of line and without reference counting (``_nrt=False``).

S_AT, Q_AT, NH_AT, PENDING_AT, FLAGS, SIZE = range(6)  # node slots; a log member's place is at 1 + its log
NODE_COLUMNS = 8
Q_LOG, NH_LOG, PENDING_LOG = 0, 1, 2  # the logs
LIR, RESIDENT, COUNTED, HELD = 1, 2, 4, 8  # flag bits: its S entry is LIR / resident (libCacheSim's is_LIR,
# in_cache); LIRS counts it resident; the engine holds it
LIR_BYTES, HIR_BYTES, OCCUPIED, S_BYTES, S_COUNT, S_BOTTOM, ADMIT_AT = range(7)  # registers
LOG_LEN, LOG_CURSOR, LOG_COUNT = 7, 10, 13  # + log
PRUNED = 16  # register: 1 when the bottom of S is an LIR block or S holds under two blocks (pruning is a no-op)
N_REG = 17


@kernel(_nrt=False)
def _log_compact(s, r):
    """Move the members of log ``r`` to its front, keeping their order; returns the new length."""
    m = s.mem
    base = s.log0 + r * s.log_len
    col = 1 + r
    j = m[s.reg0 + LOG_CURSOR + r]
    n = m[s.reg0 + LOG_LEN + r]
    w = 0
    while j < n:
        x = m[base + j]
        if m[x * NODE_COLUMNS + col] == j:
            m[base + w] = x
            m[x * NODE_COLUMNS + col] = w
            w += 1
        j += 1
    m[s.reg0 + LOG_CURSOR + r] = 0
    m[s.reg0 + LOG_LEN + r] = w
    return w


@kernel(_nrt=False)
def _log_push(s, r, v):
    """Append ``v`` (not a member) to log ``r``, its newest end."""
    m = s.mem
    n = m[s.reg0 + LOG_LEN + r]
    if n == s.log_len:
        n = _log_compact(s, r)
    m[s.log0 + r * s.log_len + n] = v
    m[v * NODE_COLUMNS + 1 + r] = n
    m[s.reg0 + LOG_LEN + r] = n + 1
    m[s.reg0 + LOG_COUNT + r] += 1


@kernel(_nrt=False)
def _log_drop(s, r, v):
    """Take ``v`` out of log ``r`` if it is a member."""
    m = s.mem
    if m[v * NODE_COLUMNS + 1 + r] != NONE:
        m[v * NODE_COLUMNS + 1 + r] = NONE
        m[s.reg0 + LOG_COUNT + r] -= 1


@kernel(_nrt=False)
def _log_oldest(s, r):
    """The oldest member of log ``r``, or NONE when it has none."""
    m = s.mem
    if m[s.reg0 + LOG_COUNT + r] == 0:
        return NONE
    base = s.log0 + r * s.log_len
    col = 1 + r
    j = m[s.reg0 + LOG_CURSOR + r]
    while m[m[base + j] * NODE_COLUMNS + col] != j:
        j += 1
    m[s.reg0 + LOG_CURSOR + r] = j
    return m[base + j]


@kernel(_nrt=False)
def _s_seek_bottom(s):
    """Move S's cursor to its bottom entry (S is not empty)."""
    m = s.mem
    j = m[s.reg0 + S_BOTTOM]
    while m[m[s.codes0 + j] * NODE_COLUMNS + S_AT] != j:
        j += 1
    m[s.reg0 + S_BOTTOM] = j


@kernel(_nrt=False)
def _s_bottom(s):
    """The block at the bottom of S (S is not empty)."""
    return s.mem[s.codes0 + s.mem[s.reg0 + S_BOTTOM]]


@kernel(_nrt=False)
def _s_top(s, c, i):
    """Put ``c`` on top of S at access ``i`` (entering S, or moving up)."""
    m = s.mem
    g = s.reg0
    old = m[c * NODE_COLUMNS + S_AT]
    m[c * NODE_COLUMNS + S_AT] = i
    if old == NONE:
        m[g + S_COUNT] += 1
        m[g + S_BYTES] += m[c * NODE_COLUMNS + SIZE]
        if m[g + S_COUNT] == 1:
            m[g + S_BOTTOM] = i
    elif old == m[g + S_BOTTOM]:
        _s_seek_bottom(s)


@kernel(_nrt=False)
def _s_out(s, v):
    """Take ``v`` out of S if it is in it."""
    m = s.mem
    g = s.reg0
    at = m[v * NODE_COLUMNS + S_AT]
    if at != NONE:
        m[v * NODE_COLUMNS + S_AT] = NONE
        m[g + S_COUNT] -= 1
        m[g + S_BYTES] -= m[v * NODE_COLUMNS + SIZE]
        if at == m[g + S_BOTTOM] and m[g + S_COUNT] > 0:
            _s_seek_bottom(s)


@kernel(_nrt=False)
def _lirs_gone(s, v):
    """LIRS stopped counting ``v`` as resident: if the engine still holds it, it becomes a pending victim."""
    m = s.mem
    f = m[v * NODE_COLUMNS + FLAGS]
    m[v * NODE_COLUMNS + FLAGS] = f & ~COUNTED
    if f & HELD and m[v * NODE_COLUMNS + PENDING_AT] == NONE:
        _log_push(s, PENDING_LOG, v)


@kernel(_nrt=False)
def _lirs_back(s, v):
    """LIRS counts ``v`` as resident again: it is no longer a pending victim."""
    s.mem[v * NODE_COLUMNS + FLAGS] |= COUNTED
    _log_drop(s, PENDING_LOG, v)


@kernel(_nrt=False)
def _lirs_prune(s):
    """Stack pruning: take the HIR entries off the bottom of S until an LIR block is there (never its top)."""
    m = s.mem
    while m[s.reg0 + S_COUNT] >= 2:
        t = _s_bottom(s)
        f = m[t * NODE_COLUMNS + FLAGS]
        if f & LIR:
            break
        if not f & RESIDENT:
            _log_drop(s, NH_LOG, t)
        _s_out(s, t)


@kernel(_nrt=False)
def _lirs_evict_hir(s):
    """Evict the resident HIR block at the front of Q; its entry in S, if any, becomes non-resident."""
    m = s.mem
    g = s.reg0
    v = _log_oldest(s, Q_LOG)
    size = m[v * NODE_COLUMNS + SIZE]
    m[g + HIR_BYTES] -= size
    _log_drop(s, Q_LOG, v)
    if m[v * NODE_COLUMNS + S_AT] != NONE:
        m[v * NODE_COLUMNS + FLAGS] &= ~RESIDENT
        _log_drop(s, NH_LOG, v)
        _log_push(s, NH_LOG, v)
    m[g + OCCUPIED] -= size
    if m[v * NODE_COLUMNS + FLAGS] & COUNTED:
        _lirs_gone(s, v)


@kernel(_nrt=False)
def _lirs_evict_lir(s):
    """Demote the block at the bottom of S (an LIR block) to a resident HIR block at the end of Q, evicting
    from Q to make room (all of Q for a block larger than Q's share). Then prune S."""
    m = s.mem
    g = s.reg0
    v = _s_bottom(s)
    size = m[v * NODE_COLUMNS + SIZE]
    m[g + LIR_BYTES] -= size
    _s_out(s, v)
    m[g + OCCUPIED] -= size
    was = m[v * NODE_COLUMNS + FLAGS] & COUNTED
    # Q holds at least one block: one larger than Q's share goes in alone (libCacheSim evicts it instead)
    while m[g + HIR_BYTES] + size > s.hir_limit and m[g + LOG_COUNT + Q_LOG] > 0:
        _lirs_evict_hir(s)
    _log_drop(s, Q_LOG, v)
    _log_push(s, Q_LOG, v)
    m[g + HIR_BYTES] += size
    m[g + OCCUPIED] += size
    if not was:
        _lirs_back(s, v)
    _lirs_prune(s)


@kernel(_nrt=False)
def _lirs_lookup(s, c, i):
    """libCacheSim's LIRS_find for ``c`` at access ``i``: promote it in S and Q, apply the hit cases;
    True on an LIRS hit."""
    m = s.mem
    g = s.reg0
    in_s = m[c * NODE_COLUMNS + S_AT] != NONE
    in_q = m[c * NODE_COLUMNS + Q_AT] != NONE
    if in_s:
        _s_top(s, c, i)
    if in_q:
        _log_drop(s, Q_LOG, c)
        _log_push(s, Q_LOG, c)
    f = m[c * NODE_COLUMNS + FLAGS]
    size = m[c * NODE_COLUMNS + SIZE]
    if in_s:
        if f & LIR:  # an LIR block
            _lirs_prune(s)
            return True
        if not f & RESIDENT:  # a non-resident HIR block in S: a miss
            return False
        if in_q:  # a resident HIR block in S becomes LIR
            m[g + HIR_BYTES] -= size
            _log_drop(s, Q_LOG, c)
            m[g + OCCUPIED] -= size
        while m[g + LIR_BYTES] + size > s.lir_limit and m[g + LIR_BYTES] > 0:
            _lirs_evict_lir(s)
        m[c * NODE_COLUMNS + FLAGS] |= LIR
        m[g + LIR_BYTES] += size
        m[g + OCCUPIED] += size
        if not in_q:
            _lirs_back(s, c)
        if m[g + LIR_BYTES] == size:
            _lirs_prune(s)  # c is the only LIR block: S may hold HIR entries below it
        return True
    if in_q:  # a resident HIR block not in S: it stays HIR, and goes on top of S
        while m[g + LIR_BYTES] + size > s.lir_limit and m[g + LIR_BYTES] > 0:
            _lirs_evict_lir(s)
        _s_top(s, c, i)
        m[c * NODE_COLUMNS + FLAGS] = (m[c * NODE_COLUMNS + FLAGS] & ~LIR) | RESIDENT
        return True
    return False


@kernel(_nrt=False)
def _lirs_can_insert(s, c):
    """libCacheSim's LIRS_can_insert for a miss on ``c``: admission, and the evictions it does itself."""
    m = s.mem
    g = s.reg0
    size = m[c * NODE_COLUMNS + SIZE]
    if size > s.capacity:
        return False
    f = m[c * NODE_COLUMNS + FLAGS]
    in_s = m[c * NODE_COLUMNS + S_AT] != NONE
    if in_s and not f & LIR and not f & RESIDENT:  # a non-resident HIR block in S
        while m[g + LIR_BYTES] + size > s.lir_limit and m[g + LIR_BYTES] > 0:
            _lirs_evict_lir(s)
        _log_drop(s, NH_LOG, c)
        return True
    if not in_s and m[c * NODE_COLUMNS + Q_AT] == NONE:  # a block in neither S nor Q
        # (libCacheSim declines a block larger than Q's or the LIR set's share; lab admits it: each set holds
        # at least one block)
        if m[g + LIR_BYTES] + size > s.lir_limit and m[g + HIR_BYTES] + size > s.hir_limit:
            while m[g + HIR_BYTES] + size > s.hir_limit and m[g + LOG_COUNT + Q_LOG] > 0:
                _lirs_evict_hir(s)
        return True
    raise RuntimeError("LIRS: admission check on a block that LIRS holds")


@kernel(_nrt=False)
def _lirs_evict_once(s, c):
    """libCacheSim's LIRS_evict for a miss on ``c``: one pass of its eviction loop."""
    m = s.mem
    g = s.reg0
    f = m[c * NODE_COLUMNS + FLAGS]
    in_s = m[c * NODE_COLUMNS + S_AT] != NONE
    if in_s and not f & LIR and not f & RESIDENT:
        while m[g + HIR_BYTES] >= s.hir_limit:  # (hir_limit > 0: Q is not empty)
            _lirs_evict_hir(s)
        if m[g + LIR_BYTES] > 0:
            _lirs_evict_lir(s)
        elif m[g + LOG_COUNT + Q_LOG] > 0:  # no LIR block to demote (c is larger than the LIR set's share)
            _lirs_evict_hir(s)
    elif not in_s and m[c * NODE_COLUMNS + Q_AT] == NONE:
        # libCacheSim evicts from Q when both sets are full (the LIR set cannot take c, Q not without
        # evicting), which they are whenever the buffer is; in lab a set may hold a single block over its
        # share, and Q may be empty: then lab evicts from Q if it can, else demotes
        if m[g + LOG_COUNT + Q_LOG] > 0:
            _lirs_evict_hir(s)
        elif m[g + LIR_BYTES] > 0:
            _lirs_evict_lir(s)


@kernel(_nrt=False)
def _lirs_insert(s, c, i):
    """libCacheSim's LIRS_insert for a miss on ``c`` at access ``i`` (after its eviction loop)."""
    m = s.mem
    g = s.reg0
    size = m[c * NODE_COLUMNS + SIZE]
    if m[c * NODE_COLUMNS + S_AT] != NONE:  # a non-resident HIR block in S (already on top) becomes LIR
        m[c * NODE_COLUMNS + FLAGS] |= LIR | RESIDENT
        m[g + LIR_BYTES] += size
    elif m[g + LIR_BYTES] + size <= s.lir_limit:  # the LIR set is not full: a new block is LIR
        _s_top(s, c, i)
        m[c * NODE_COLUMNS + FLAGS] |= LIR | RESIDENT
        m[g + LIR_BYTES] += size
    else:  # a new resident HIR block: top of S and end of Q
        _s_top(s, c, i)
        m[c * NODE_COLUMNS + FLAGS] = (m[c * NODE_COLUMNS + FLAGS] & ~LIR) | RESIDENT
        _log_push(s, Q_LOG, c)
        m[g + HIR_BYTES] += size
    m[g + OCCUPIED] += size
    _lirs_back(s, c)
    if m[g + LIR_BYTES] == size and m[c * NODE_COLUMNS + FLAGS] & LIR:
        _lirs_prune(s)  # c is the only LIR block: S may hold HIR entries below it


@kernel(_nrt=False)
def _lirs_miss(s, c, i):
    """LIRS's miss path for ``c``: admission, its loop ``while occupied + size > capacity: evict()`` on its
    own count of bytes, insertion. Returns whether ``c`` was admitted."""
    if not _lirs_can_insert(s, c):
        return False
    m = s.mem
    size = m[c * NODE_COLUMNS + SIZE]
    while m[s.reg0 + OCCUPIED] + size > s.capacity:
        # each pass evicts from Q or demotes an LIR block into Q: one of the two byte counts goes down
        before = m[s.reg0 + OCCUPIED] + m[s.reg0 + LIR_BYTES]
        _lirs_evict_once(s, c)
        if m[s.reg0 + OCCUPIED] + m[s.reg0 + LIR_BYTES] >= before:
            raise RuntimeError("LIRS: eviction makes no progress")
    _lirs_insert(s, c, i)
    return True


@kernel(_nrt=False)
def _lirs_note_pruned(s):
    """Record whether pruning S would change nothing (for find's inlined LIR hit)."""
    m = s.mem
    pruned = 1
    if m[s.reg0 + S_COUNT] >= 2 and not m[_s_bottom(s) * NODE_COLUMNS + FLAGS] & LIR:
        pruned = 0
    m[s.reg0 + PRUNED] = pruned


@kernel(_nrt=False)
def _lirs_pop_pending(s):
    """The oldest pending victim (a tensor LIRS evicted that the engine still holds), or NONE."""
    v = _log_oldest(s, PENDING_LOG)
    if v != NONE:
        _log_drop(s, PENDING_LOG, v)
        s.mem[v * NODE_COLUMNS + FLAGS] &= ~HELD
    return v


@kernel(_nrt=False)
def _lirs_access(s, c, i, hit):
    """Everything LIRS does for access ``i`` to ``c`` (``hit``: the engine holds it) but an LIR hit off the
    bottom of S; returns a victim for the engine, or NONE."""
    m = s.mem
    lirs_hit = _lirs_lookup(s, c, i)
    if not hit:
        if lirs_hit or _lirs_miss(s, c, i):  # the engine will insert c (LIRS holds it already, or admitted it)
            m[s.reg0 + ADMIT_AT] = i
    elif not lirs_hit:  # the engine still holds c as a pending victim, which LIRS evicted: LIRS misses now
        _lirs_miss(s, c, i)
    while m[s.reg0 + S_BYTES] > 2 * s.capacity:  # libCacheSim's limitStack: drop the oldest non-resident
        v = _log_oldest(s, NH_LOG)
        if v == NONE:
            break
        _log_drop(s, NH_LOG, v)
        _s_out(s, v)
    _lirs_note_pruned(s)
    return _lirs_pop_pending(s)


@kernel(_nrt=False)
def _lirs_victim(s):
    """A victim for the engine: the oldest pending one; if none (only after libCacheSim's accounting slips,
    e.g. a block counted resident that the engine never inserted), evict from Q, else demote from S, until
    a tensor the engine holds leaves."""
    m = s.mem
    guard = 0
    while m[s.reg0 + LOG_COUNT + PENDING_LOG] == 0:
        if m[s.reg0 + LOG_COUNT + Q_LOG] > 0:
            _lirs_evict_hir(s)
        elif m[s.reg0 + LIR_BYTES] > 0:
            _lirs_evict_lir(s)
        guard += 1
        if guard > s.n_tensors + 2:
            raise RuntimeError("LIRS: no tensor to evict")
    _lirs_note_pruned(s)
    return _lirs_pop_pending(s)


@kernel(_nrt=False)
def _lirs_remove(s, c):
    """Forget ``c`` entirely (a dead tensor the engine drops)."""
    m = s.mem
    g = s.reg0
    size = m[c * NODE_COLUMNS + SIZE]
    f = m[c * NODE_COLUMNS + FLAGS]
    _log_drop(s, PENDING_LOG, c)
    if f & COUNTED:
        m[g + OCCUPIED] -= size
    if m[c * NODE_COLUMNS + S_AT] != NONE:
        if f & LIR:
            m[g + LIR_BYTES] -= size
        _s_out(s, c)
    _log_drop(s, NH_LOG, c)
    if m[c * NODE_COLUMNS + Q_AT] != NONE:
        m[g + HIR_BYTES] -= size
        _log_drop(s, Q_LOG, c)
    m[c * NODE_COLUMNS + FLAGS] = 0
    _lirs_prune(s)
    _lirs_note_pruned(s)


@register
@dataclass(frozen=True)
class LIRS(Policy):
    """Low Inter-reference Recency Set: blocks with a short reuse distance (LIR) stay, blocks with a long one
    (HIR) get a small share of the buffer. The stack S orders blocks by recency (LIR blocks, resident and
    non-resident HIR blocks) and its bottom is always an LIR block (stack pruning); the queue Q holds the
    resident HIR blocks, and the victim is the front of Q. A block accessed again while still in S (its
    reuse distance is shorter than the oldest LIR block's recency) becomes LIR, and the LIR block at the
    bottom of S is demoted to the end of Q.

    As libCacheSim's LIRS, step for step (sizes are bytes): Q's share is ``hir_ratio`` of the buffer, at least
    one block, and the LIR set's the rest; a new block is LIR while the LIR set has room; a hit on a resident
    HIR block not in S also demotes LIR blocks while the LIR set is full; S is bounded to twice the buffer in
    bytes by dropping its oldest non-resident entries. Unit-free (the same decisions whatever the unit of the
    sizes): Q's share is rounded down to whole blocks of the trace's size granularity (see
    ``lab.sim.structures.share_bytes``: a tensor on a trace of equal sizes, a byte with arbitrary byte
    counts), and each set holds at least one block: a block larger than Q's share enters Q alone, Q evicting
    all else, and one larger than the LIR set's share becomes LIR alone (the paper's blocks have one size).

    Differences from libCacheSim (libcachesim 0.3.5): (1) when Q holds a single block (buffers under 200
    blocks), demoting an LIR block for a hit on a resident HIR block evicts the very block being hit, which
    libCacheSim keeps in S marked resident and counts a hit at its next access without fetching it; lab
    counts that access a miss. (2) libCacheSim can evict several blocks in one lookup or admission check; the
    engine takes one victim per lookup and per eviction call, so lab hands LIRS's victims over as the engine
    asks for room, and those left over (only with variable sizes) leave at the next accesses. (3) In buffers
    of 2 blocks libCacheSim's byte counts can drift from the blocks it holds; lab then evicts from Q to make
    room. (4) libCacheSim never inserts a block larger than Q's share (1 % of the buffer, so on a trace of
    MiB-sized tensors in a buffer of under 100 of them it misses every access) or than the LIR set's; lab
    inserts it, each set holding at least one block. (5) libCacheSim rounds Q's share down to whole bytes with
    a minimum of 1 byte, lab to whole blocks with a minimum of one block: they differ where the sizes have a
    common factor (a trace of equal MiB-sized tensors), and libCacheSim's decisions change with the unit of
    the sizes.
    """

    hir_ratio: float = param(0.01, low=0.0, high=1.0, doc="Q's share of the buffer (the paper's L_hirs)")

    name = "LIRS"
    libcachesim = "LIRS"
    reference = ("Jiang and Zhang, 'LIRS: an efficient low inter-reference recency set replacement policy to "
                 "improve buffer cache performance', SIGMETRICS 2002")

    class State(NamedTuple):
        mem: np.ndarray  # int64: nodes, then registers, then the trace's codes, then the logs (see above)
        n_tensors: int
        reg0: int  # where the registers start in mem
        codes0: int  # where the codes start
        log0: int  # where the logs start
        log_len: int  # slots per log
        lir_limit: int  # bytes
        hir_limit: int  # bytes
        capacity: int  # bytes

    def init_state(self, workload, capacity_bytes):
        k = workload.n_tensors
        n = workload.n_accesses
        log_len = 2 * k + 16
        reg0 = k * NODE_COLUMNS
        codes0 = reg0 + N_REG
        log0 = codes0 + n
        raw = np.empty(log0 + 3 * log_len + NODE_COLUMNS, np.int64)
        skip = (-raw.ctypes.data // 8) % NODE_COLUMNS  # nodes on cache lines
        mem = raw[skip:skip + log0 + 3 * log_len]
        nodes = mem[:reg0].reshape(k, NODE_COLUMNS)
        nodes[:] = NONE
        nodes[:, FLAGS] = 0
        nodes[:, SIZE] = workload.tensor_bytes
        mem[reg0:codes0] = 0
        mem[reg0 + ADMIT_AT] = NONE
        mem[reg0 + PRUNED] = 1
        mem[codes0:log0] = workload.codes
        capacity = int(capacity_bytes)
        hir_limit = self._hir_limit(workload, capacity)
        return self.State(mem, k, reg0, codes0, log0, log_len, capacity - hir_limit, hir_limit, capacity)

    def _hir_limit(self, workload, capacity_bytes):
        """Q's share in bytes: ``hir_ratio`` of the buffer in whole blocks of the trace's size granularity, at
        least one block (at most the buffer)."""
        block = size_granularity(workload)
        return min(max(block, share_bytes(capacity_bytes, self.hir_ratio, block)), max(int(capacity_bytes), 1))

    def libcachesim_supports(self, capacity_bytes, workload):
        # libCacheSim's shares, in whole bytes; it declines a block larger than either
        hir = max(1, int(self.hir_ratio * capacity_bytes))
        largest = int(workload.tensor_bytes.max(initial=0))
        return self._hir_limit(workload, capacity_bytes) == hir and largest <= min(hir, capacity_bytes - hir)

    def libcachesim_params(self):
        if self.hir_ratio != 0.01:
            raise ValueError("libCacheSim's LIRS fixes Q's share at 0.01 of the buffer")
        return {}

    @staticmethod
    def find(s, c, i, hit):
        # An LIR block off the bottom of S, which pruning leaves alone, with no victim pending: it moves to the
        # top of S, nothing else.
        m = s.mem
        g = s.reg0
        at = m[c * NODE_COLUMNS + S_AT]
        fast = (hit & (at != NONE) & (at != m[g + S_BOTTOM]) & ((m[c * NODE_COLUMNS + FLAGS] & LIR) != 0)
                & (m[c * NODE_COLUMNS + Q_AT] == NONE) & (m[g + LOG_COUNT + PENDING_LOG] == 0) & (m[g + PRUNED] != 0))
        if fast:
            m[c * NODE_COLUMNS + S_AT] = i
            return NONE
        return _lirs_access(s, c, i, hit)

    @staticmethod
    def can_insert(s, c, i):
        return s.mem[s.reg0 + ADMIT_AT] == i

    @staticmethod
    def evict(s, c, i):
        return _lirs_victim(s)

    @staticmethod
    def insert(s, c, i):
        s.mem[c * NODE_COLUMNS + FLAGS] |= HELD

    @staticmethod
    def remove(s, c):
        _lirs_remove(s, c)
