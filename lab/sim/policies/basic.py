"""Recency and insertion order: LRU, FIFO, MRU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.sim.policy import Policy, register
from lab.sim.structures import KeySet, keyset_add, keyset_discard, keyset_max, new_keyset

NOT_RESIDENT = -1


@register
@dataclass(frozen=True)
class LRU(Policy):
    """Least recently used: evict the tensor whose last access is the oldest.

    The recency queue is the trace itself: ``stamp[c]`` is the position of
    ``c``'s last access, and the victim is the first position at or after the
    eviction cursor that is still some resident tensor's stamp. A hit is one
    store; the cursor only moves forward, so evictions cost O(n) in all.
    """

    name = "LRU"
    featured = True
    one_pass_curve = "lru"
    libcachesim = "LRU"
    reference = "Mattson, Gecsei, Slutz and Traiger, 'Evaluation techniques for storage hierarchies', IBM Systems Journal 1970"

    class State(NamedTuple):
        stamp: np.ndarray  # int64 per tensor: position of its last access (insertion for FIFO), or NOT_RESIDENT
        cursor: np.ndarray  # int64[1]: no victim lies before this position
        codes: np.ndarray  # the workload's codes: the queue in access order

    def init_state(self, workload, capacity_bytes):
        return self.State(np.full(workload.n_tensors, NOT_RESIDENT, np.int64), np.zeros(1, np.int64), workload.codes)

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            s.stamp[c] = i
        return -1

    @staticmethod
    def insert(s, c, i):
        s.stamp[c] = i

    @staticmethod
    def evict(s, c, i):
        stamp = s.stamp
        codes = s.codes
        j = s.cursor[0]
        while stamp[codes[j]] != j:
            j += 1
        s.cursor[0] = j + 1
        v = codes[j]
        stamp[v] = NOT_RESIDENT
        return v

    @staticmethod
    def remove(s, c):
        s.stamp[c] = NOT_RESIDENT


@register
@dataclass(frozen=True)
class FIFO(LRU):
    """First in, first out: evict the tensor inserted longest ago; a hit changes nothing.

    The same queue as LRU, stamped at insertion only.
    """

    name = "FIFO"
    featured = True
    libcachesim = "FIFO"
    reference = "Belady, 'A study of replacement algorithms for a virtual-storage computer', IBM Systems Journal 1966"

    @staticmethod
    def find(s, c, i, hit):
        return -1


@register
@dataclass(frozen=True)
class MRU(Policy):
    """Most recently used: evict the resident tensor accessed last (good for loops larger than the buffer).

    The victim is the resident tensor with the latest access position: positions are distinct integers, kept in a
    64-ary bitmap tree that gives the largest in a few word operations.
    """

    name = "MRU"
    reference = "Chou and DeWitt, 'An evaluation of buffer management strategies for relational database systems', VLDB 1985"

    class State(NamedTuple):
        stamps: KeySet  # the last-access positions of the resident tensors
        stamp: np.ndarray  # int64 per tensor: its last access position
        codes: np.ndarray  # the workload's codes: whose access each position is

    def init_state(self, workload, capacity_bytes):
        return self.State(new_keyset(workload.n_accesses), np.zeros(workload.n_tensors, np.int64), workload.codes)

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            keyset_discard(s.stamps, s.stamp[c])
            keyset_add(s.stamps, i)
            s.stamp[c] = i
        return -1

    @staticmethod
    def insert(s, c, i):
        keyset_add(s.stamps, i)
        s.stamp[c] = i

    @staticmethod
    def evict(s, c, i):
        j = keyset_max(s.stamps)
        keyset_discard(s.stamps, j)
        return s.codes[j]

    @staticmethod
    def remove(s, c):
        keyset_discard(s.stamps, s.stamp[c])
