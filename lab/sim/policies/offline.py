"""Policies that read the future of the trace: Belady's MIN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.sim.policy import Policy, param, register
from lab.sim.structures import KeySet, keyset_add, keyset_discard, keyset_max, new_keyset


@register
@dataclass(frozen=True)
class Belady(Policy):
    """Belady's MIN: evict the resident tensor whose next access is furthest away (never again = furthest).

    Optimal in misses only when every tensor has the same size and the
    incoming tensor may bypass the buffer (``bypass=True``: a missed tensor
    whose next use is further than every resident one's, or that is never
    used again, is not inserted). With demand fetching (the default, as in
    libCacheSim: the tensor missed is always inserted) and with varied sizes
    other policies can beat it; ``lab.optimal`` gives the true optimum. Ties
    (tensors never used again) go to the earliest inserted. Needs the whole
    trace in advance.

    Each resident tensor's priority is a distinct integer: its next use
    (< n), or for one never used again ``2n - 1 - (when it was inserted)``, so
    the largest is the victim, found in a 64-ary bitmap tree.
    """

    name = "Belady"
    aliases = ("OPT", "MIN")
    libcachesim = "Belady"
    offline = True
    reference = "Belady, 'A study of replacement algorithms for a virtual-storage computer', IBM Systems Journal 1966"

    bypass: bool = param(False, doc="a missed tensor used furthest in the future is not inserted")

    class State(NamedTuple):
        keys: KeySet  # the priorities of the resident tensors
        tensor_of_key: np.ndarray  # int64 per priority
        key_of_tensor: np.ndarray  # int64 per tensor
        inserted_at: np.ndarray  # int64 per tensor
        next_use: np.ndarray  # int64 per access
        never: np.int64  # 2n - 1: priorities of tensors never used again count down from here
        bypass: np.bool_

    def init_state(self, workload, capacity_bytes):
        n = workload.n_accesses
        return self.State(new_keyset(2 * n), np.zeros(2 * n, np.int64), np.zeros(workload.n_tensors, np.int64),
                          np.zeros(workload.n_tensors, np.int64), workload.next_use, np.int64(2 * n - 1),
                          np.bool_(self.bypass))

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            keyset_discard(s.keys, s.key_of_tensor[c])
            nxt = s.next_use[i]
            key = nxt if nxt >= 0 else s.never - s.inserted_at[c]
            keyset_add(s.keys, key)
            s.tensor_of_key[key] = c
            s.key_of_tensor[c] = key
        return -1

    @staticmethod
    def insert(s, c, i):
        nxt = s.next_use[i]
        key = nxt if nxt >= 0 else s.never - i
        keyset_add(s.keys, key)
        s.tensor_of_key[key] = c
        s.key_of_tensor[c] = key
        s.inserted_at[c] = i

    @staticmethod
    def evict(s, c, i):
        key = keyset_max(s.keys)
        # keys below n are next uses; above, the resident furthest is never used again and goes first
        if s.bypass and (s.next_use[i] < 0 or (key < len(s.next_use) and s.next_use[i] > key)):
            return c
        keyset_discard(s.keys, key)
        return s.tensor_of_key[key]

    @staticmethod
    def remove(s, c):
        keyset_discard(s.keys, s.key_of_tensor[c])
