"""Policies that read the future of the trace: Belady's MIN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.sim.policy import Policy, register
from lab.sim.structures import Heap, heap_pop, heap_push, heap_remove, heap_seq, heap_update, new_heap


@register
@dataclass(frozen=True)
class Belady(Policy):
    """Belady's MIN: evict the resident tensor whose next access is furthest away (never again = furthest).

    Optimal in misses only when every tensor has the same size and the
    incoming tensor may bypass the buffer; with demand fetching (the tensor
    missed is always inserted) and with varied sizes other policies can beat
    it. Ties (tensors never used again) go to the earliest inserted. Needs
    the whole trace in advance.
    """

    name = "Belady"
    aliases = ("OPT", "MIN")
    libcachesim = "Belady"
    offline = True
    reference = "Belady, 'A study of replacement algorithms for a virtual-storage computer', IBM Systems Journal 1966"

    class State(NamedTuple):
        heap: Heap  # key: minus the next use (never = -inf), so the furthest is on top; seq: insertion
        next_use: np.ndarray  # int64 per access

    def init_state(self, workload, capacity_bytes):
        return self.State(new_heap(workload.n_tensors), workload.next_use)

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            nxt = s.next_use[i]
            heap_update(s.heap, c, -np.inf if nxt < 0 else -np.float64(nxt), heap_seq(s.heap, c))
        return -1

    @staticmethod
    def insert(s, c, i):
        nxt = s.next_use[i]
        heap_push(s.heap, c, -np.inf if nxt < 0 else -np.float64(nxt), i)

    @staticmethod
    def evict(s, c, i):
        return heap_pop(s.heap)

    @staticmethod
    def remove(s, c):
        heap_remove(s.heap, c)
