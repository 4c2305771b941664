"""Several queues, one buffer: S3-FIFO, 2Q and SLRU (segmented LRU).

Each policy keeps its queues in one ``structures.Lists`` (a tensor is in at
most one queue at a time); ghost queues, which remember tensors no longer
resident, are lists of the same structure. Sub-queue shares are in bytes,
rounded down to whole blocks of the trace's size granularity
(``structures.share_bytes``): a tensor when all sizes are equal, a byte (as
libCacheSim's ``int(capacity * ratio)``) when sizes are arbitrary byte counts,
so that the decisions do not depend on the unit of the sizes.

libCacheSim's versions of 2Q and SLRU are made of sub-caches of fixed sizes
that evict on their own (SLRU on a hit, 2Q's Am after the incoming tensor
fits): those victims are queued in ``pend`` and handed to the engine by the
``spill`` hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.compiled import kernel
from lab.sim.policy import Policy, param, register
from lab.sim.structures import (NONE, Lists, move_to_head, new_lists, pop_tail, push_head, share_bytes,
                                size_granularity, unlink)


@kernel(_nrt=False)
def _pend_push(pend, ends, v):
    """Queue victim ``v`` (``ends``: int64[2], read and write positions in ``pend``)."""
    k = ends[1]
    pend[k] = v
    ends[1] = k + 1


@kernel(_nrt=False)
def _pend_pop(pend, ends):
    """The next queued victim, NONE when none (the queue restarts at 0 once drained)."""
    r = ends[0]
    w = ends[1]
    v = NONE
    if r < w:
        v = pend[r]
        r += 1
    if r == w:
        r = 0
        w = 0
    ends[0] = r
    ends[1] = w
    return v


@kernel(_nrt=False)
def _ghost_put(q, g, cap, c):
    """Remember non-resident ``c`` at the head of ghost FIFO ``g`` of ``cap`` bytes (libCacheSim's FIFO get on
    a miss): older entries leave from the tail until it fits; a tensor larger than the ghost is not kept."""
    size = q.sizes[c]
    if size <= cap:
        while q.nbytes[g] + size > cap:
            pop_tail(q, g)
        push_head(q, g, c)


# --- S3-FIFO -------------------------------------------------------------------------------------

SMALL, MAIN, GHOST = 0, 1, 2


@register
@dataclass(frozen=True)
class S3FIFO(Policy):
    """S3-FIFO: a small FIFO (``small_ratio`` of the buffer) filters one-hit wonders, a main FIFO with
    2-bit CLOCK reinsertion holds the rest, and a ghost FIFO (``ghost_ratio`` of the buffer, in bytes)
    remembers what left the small FIFO unused.

    A new tensor enters the small FIFO, or the main FIFO when the ghost remembers it (or, as libCacheSim's
    S3FIFO.c does, while the small FIFO is full before the first eviction ever). A hit counts an access.
    To make room: when the main FIFO is over its share or the small one is empty, the main FIFO's tail is
    evicted unless it was accessed (then it goes back to the head, its count lowered: min(count, 3) - 1);
    otherwise the small FIFO's tail moves to the main FIFO if accessed ``move_to_main_threshold`` times or
    more, else it is evicted into the ghost. Tensors larger than the small FIFO are never inserted.

    The small FIFO's share is ``small_ratio`` of the buffer and the main FIFO's the rest, the ghost's
    ``ghost_ratio`` of the buffer, each rounded down to whole blocks of the trace's size granularity (see
    ``lab.sim.structures.share_bytes``): the same decisions whatever the unit of the sizes.

    Differences from libCacheSim (libcachesim 0.3.5): libCacheSim refuses a small FIFO of 0 bytes (it aborts;
    lab then caches nothing), and declines a tensor exactly the size of the small FIFO after evicting for it
    (its S3FIFO_insert); lab inserts that tensor, as the paper's algorithm does. libCacheSim rounds the shares
    down to whole bytes, lab to whole blocks: they differ where the sizes have a common factor (a trace of
    MiB-sized tensors of equal size) and the shares are not whole blocks; libCacheSim's decisions then change
    with the unit of the sizes.
    """

    name = "S3-FIFO"
    aliases = ("S3FIFO",)
    libcachesim = "S3FIFO"
    reference = ("Yang, Zhang, Qiu, Yue and Vinayak, 'FIFO queues are all you need for cache eviction', "
                 "SOSP 2023")

    small_ratio: float = param(0.1, low=0.0, high=1.0, doc="share of the buffer for the small FIFO")
    ghost_ratio: float = param(0.9, low=0.0, high=64.0, doc="ghost FIFO size, as a share of the buffer")
    move_to_main_threshold: int = param(2, low=1, high=1_000_000, integer=True,
                                        doc="accesses in the small FIFO that move a tensor to the main FIFO")

    class State(NamedTuple):
        q: Lists  # SMALL, MAIN (resident) and GHOST (not resident)
        freq: np.ndarray  # int64 per tensor: accesses since inserted (small) or since last looked at (main)
        flags: np.ndarray  # int64[2]: [the access being served hit the ghost, an eviction has happened]
        small_cap: int
        main_cap: int
        ghost_cap: int
        threshold: int

    def libcachesim_params(self):
        return {"small_size_ratio": self.small_ratio, "ghost_size_ratio": self.ghost_ratio,
                "move_to_main_threshold": self.move_to_main_threshold}

    def libcachesim_supports(self, capacity_bytes, workload):
        small = int(capacity_bytes * self.small_ratio)  # libCacheSim aborts on 0; declines a tensor of size small
        # and its shares are in whole bytes (the ghost's too, but byte counts compared with it by > and <= decide
        # alike whether it is rounded to bytes or to blocks)
        return (small >= 1 and not (workload.tensor_bytes == small).any()
                and share_bytes(capacity_bytes, self.small_ratio, size_granularity(workload)) == small)

    def admission_limit(self, capacity_bytes, workload):
        # the nominal share: every size is a whole number of blocks, so a tensor fits it iff it fits the share the
        # engine uses (rounded down to whole blocks)
        return int(capacity_bytes * self.small_ratio), "S3-FIFO's small queue"

    def init_state(self, workload, capacity_bytes):
        block = size_granularity(workload)
        small = share_bytes(capacity_bytes, self.small_ratio, block)
        return self.State(new_lists(3, workload.tensor_bytes), np.zeros(workload.n_tensors, np.int64),
                          np.zeros(2, np.int64), small, capacity_bytes - small,
                          share_bytes(capacity_bytes, self.ghost_ratio, block), self.move_to_main_threshold)

    @staticmethod
    def find(s, c, i, hit):
        freq = s.freq
        if hit:
            freq[c] += 1
        return NONE

    @staticmethod
    def can_insert(s, c, i):
        # the ghost is checked here rather than in find: it is the miss path, and a tensor the ghost remembers
        # is never larger than the small FIFO, so it always reaches can_insert
        q = s.q
        ghost = np.int64(q.owner[c]) == GHOST
        if ghost:  # c leaves the ghost
            unlink(q, c)
        s.flags[0] = ghost
        return q.sizes[c] <= s.small_cap

    @staticmethod
    def evict(s, c, i):
        q = s.q
        freq = s.freq
        threshold = s.threshold
        v = NONE
        # libCacheSim's S3FIFO_evict: from main when main is over its share or small is empty, else from small
        # until small evicts one tensor or runs empty (then main)
        from_main = q.nbytes[MAIN] > s.main_cap or q.count[SMALL] == 0
        while v == NONE:
            if q.count[SMALL] == 0:
                from_main = True
            if from_main:
                t = pop_tail(q, MAIN)
                f = freq[t]
                if f >= 1:  # 2-bit CLOCK: back to the head of main, its count lowered
                    freq[t] = min(f, 3) - 1
                    push_head(q, MAIN, t)
                else:
                    v = t
            else:
                t = pop_tail(q, SMALL)
                if freq[t] >= threshold:  # accessed enough in small: to the head of main
                    freq[t] = 0
                    push_head(q, MAIN, t)
                else:  # evicted, remembered by the ghost (unless larger than it)
                    v = t
                    _ghost_put(q, GHOST, s.ghost_cap, t)
        s.flags[1] = 1
        return v

    @staticmethod
    def insert(s, c, i):
        q = s.q
        flags = s.flags
        lst = SMALL
        if flags[0] != 0 or (flags[1] == 0 and q.nbytes[SMALL] >= s.small_cap):
            lst = MAIN
        push_head(q, lst, c)
        s.freq[c] = 0
        flags[0] = 0

    @staticmethod
    def remove(s, c):
        unlink(s.q, c)


# --- 2Q ------------------------------------------------------------------------------------------

AIN, AM, AOUT = 0, 1, 2


@register
@dataclass(frozen=True)
class TwoQ(Policy):
    """2Q: new tensors enter Ain, a FIFO of ``ain_ratio`` of the buffer, and only those missed again while
    Aout (a ghost FIFO of what left Ain) remembers them enter Am, an LRU queue for the rest of the buffer.
    A hit in Ain changes nothing. Aout holds ``aout_ratio`` of the buffer, in bytes. To make room: Ain's
    oldest while Ain is over its share, else Am's least recently used. Tensors larger than Ain are never
    inserted.

    As in libCacheSim, Am is an LRU cache of its own size: after the incoming tensor fits the buffer, Am
    evicts until it also fits Am (handed to the engine by ``spill``). Ain's and Aout's shares are rounded down
    to whole blocks of the trace's size granularity (see ``lab.sim.structures.share_bytes``): the same
    decisions whatever the unit of the sizes.

    Differences from libCacheSim (libcachesim 0.3.5): libCacheSim rounds the shares down to whole bytes, lab
    to whole blocks (they differ where the sizes have a common factor and Ain's share is not a whole number of
    blocks). A tensor that comes back from Aout larger than Am's share (possible when ``ain_ratio`` is over
    one half) enters Am alone, Am evicting all else; libCacheSim's Am declines it (after the buffer evicted
    for it).
    """

    name = "2Q"
    aliases = ("TwoQ",)
    libcachesim = "TwoQ"
    reference = ("Johnson and Shasha, '2Q: a low overhead high performance buffer management replacement "
                 "algorithm', VLDB 1994")

    ain_ratio: float = param(0.25, low=0.0, high=1.0, doc="Kin: share of the buffer for the Ain FIFO")
    aout_ratio: float = param(0.5, low=0.0, high=64.0,
                              doc="Kout: size of the Aout ghost FIFO, as a share of the buffer")

    class State(NamedTuple):
        q: Lists  # AIN, AM (resident) and AOUT (not resident)
        flags: np.ndarray  # int64[1]: the access being served hit Aout
        pend: np.ndarray  # int64 per tensor: Am's own victims, handed out by spill
        ends: np.ndarray  # int64[2]: read and write positions in pend
        ain_cap: int
        am_cap: int
        aout_cap: int

    def libcachesim_params(self):
        return {"a_in_size_ratio": self.ain_ratio, "a_out_size_ratio": self.aout_ratio}

    def libcachesim_supports(self, capacity_bytes, workload):
        ain = int(capacity_bytes * self.ain_ratio)  # libCacheSim's shares, in whole bytes
        aout = int(capacity_bytes * self.aout_ratio)
        sizes = workload.tensor_bytes
        return (share_bytes(capacity_bytes, self.ain_ratio, size_granularity(workload)) == ain
                and not ((sizes > capacity_bytes - ain) & (sizes <= min(ain, aout))).any())

    def admission_limit(self, capacity_bytes, workload):
        return int(capacity_bytes * self.ain_ratio), "2Q's Ain queue"  # nominal, as S3-FIFO's

    def init_state(self, workload, capacity_bytes):
        block = size_granularity(workload)
        ain = share_bytes(capacity_bytes, self.ain_ratio, block)
        return self.State(new_lists(3, workload.tensor_bytes), np.zeros(1, np.int64),
                          np.empty(workload.n_tensors + 1, np.int64), np.zeros(2, np.int64), ain,
                          capacity_bytes - ain, share_bytes(capacity_bytes, self.aout_ratio, block))

    @staticmethod
    def find(s, c, i, hit):
        q = s.q
        owner = np.int64(q.owner[c])
        if hit:
            if owner == AM:
                move_to_head(q, AM, c)
        else:
            s.flags[0] = owner == AOUT
        return NONE

    @staticmethod
    def can_insert(s, c, i):
        q = s.q
        if np.int64(q.owner[c]) == AOUT:  # forget it in Aout
            unlink(q, c)
        return q.sizes[c] <= s.ain_cap

    @staticmethod
    def evict(s, c, i):
        # libCacheSim's TwoQ_evict: Ain's oldest (remembered in Aout) while Ain is over its share, else Am's
        # least recently used
        q = s.q
        if q.nbytes[AIN] > s.ain_cap or q.count[AM] == 0:
            v = pop_tail(q, AIN)
            _ghost_put(q, AOUT, s.aout_cap, v)
        else:
            v = pop_tail(q, AM)
        return v

    @staticmethod
    def insert(s, c, i):
        q = s.q
        flags = s.flags
        lst = AIN
        if flags[0] != 0:
            lst = AM
            size = q.sizes[c]
            am_cap = s.am_cap
            while q.nbytes[AM] + size > am_cap and q.count[AM] > 0:  # Am's own evictions, handed out by spill
                _pend_push(s.pend, s.ends, pop_tail(q, AM))
        push_head(q, lst, c)
        flags[0] = 0

    @staticmethod
    def spill(s, c, i):
        return _pend_pop(s.pend, s.ends)

    @staticmethod
    def remove(s, c):
        unlink(s.q, c)


# --- SLRU ----------------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class SLRU(Policy):
    """Segmented LRU: ``n_segments`` LRU segments of equal share; a hit promotes a tensor one segment up, and
    a segment over its share demotes its least recently used tensor one down, the lowest evicting it. A new
    tensor enters the lowest segment with room for it (the lowest when none has); a hit moves a tensor to the
    head of the next segment up (the top segment: to its head), and a demoted tensor goes to the head of the
    segment below. To make room: the least recently used tensor of the lowest non-empty segment. Tensors
    larger than a segment are never inserted.

    As libCacheSim (4 segments, its default, which its Python class cannot change): a segment's share is
    ``capacity // n_segments`` bytes, and the lowest segment may hold more than its share while the buffer
    has room, so a hit can evict: until the lowest segment is back within its share, which can be several
    tensors (``find`` returns the first, ``spill`` the others).
    """

    name = "SLRU"
    libcachesim = "SLRU"
    reference = ("Karedla, Love and Wherry, 'Caching strategies to improve disk system performance', "
                 "IEEE Computer 1994")

    n_segments: int = param(4, low=1, high=64, integer=True, doc="segments (libCacheSim: 4)")

    class State(NamedTuple):
        q: Lists  # one list per segment, 0 the lowest (probationary)
        seg_cap: np.ndarray  # int64 per segment: its share in bytes
        pend: np.ndarray  # int64 per tensor: victims of a hit, handed out by find and spill
        ends: np.ndarray  # int64[2]: read and write positions in pend
        top: int

    def init_state(self, workload, capacity_bytes):
        n = self.n_segments
        return self.State(new_lists(n, workload.tensor_bytes), np.full(n, capacity_bytes // n, np.int64),
                          np.empty(workload.n_tensors + 1, np.int64), np.zeros(2, np.int64), n - 1)

    @staticmethod
    def find(s, c, i, hit):
        v = NONE
        if hit:
            q = s.q
            seg_cap = s.seg_cap
            k = np.int64(q.owner[c])
            up = min(k + 1, s.top)
            move_to_head(q, up, c)
            if k != up:
                # libCacheSim's while (bytes[up] > max[up]) SLRU_cool(up), its recursion unrolled: an over-full
                # segment passes its tail to the head of the segment below, which settles in turn; the lowest
                # evicts its tail (the victims go to pend: find returns the first, spill the rest)
                n = 0
                lvl = up
                while True:
                    if q.nbytes[lvl] > seg_cap[lvl]:
                        t = pop_tail(q, lvl)
                        if lvl == 0:
                            _pend_push(s.pend, s.ends, t)
                            n += 1
                        else:  # for the head of segment lvl - 1
                            lvl -= 1
                            push_head(q, lvl, t)
                    elif lvl == up:
                        break
                    else:
                        lvl += 1
                if n > 0:
                    v = _pend_pop(s.pend, s.ends)
        return v

    @staticmethod
    def can_insert(s, c, i):
        return s.q.sizes[c] <= s.seg_cap[0]

    @staticmethod
    def evict(s, c, i):
        q = s.q
        k = 0
        while q.count[k] == 0:
            k += 1
        return pop_tail(q, k)

    @staticmethod
    def insert(s, c, i):
        q = s.q
        seg_cap = s.seg_cap
        size = q.sizes[c]
        lst = 0
        for k in range(s.top + 1):
            if q.nbytes[k] + size <= seg_cap[k]:
                lst = k
                break
        push_head(q, lst, c)

    @staticmethod
    def spill(s, c, i):
        return _pend_pop(s.pend, s.ends)

    @staticmethod
    def remove(s, c):
        unlink(s.q, c)
