"""Score-driven eviction: the ML policy evicts by a scorer's eviction_score (see lab.learn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.compiled import kernel_array
from lab.sim.policy import Policy, register
from lab.sim.structures import Heap, heap_pop, heap_push, heap_remove, heap_update, new_heap

SCORE_HINT = ("The ML policy evicts by score: score the trace first (lab.score(trace)) or add an eviction_score "
              "column")


@register
@dataclass(frozen=True)
class ML(Policy):
    """Score-driven: evict the resident tensor whose most recent access has the highest ``eviction_score``;
    among equal scores, the least recently used.

    The scores come from the trace's ``eviction_score`` column (``lab.score(trace, scorer)``). The residents
    sit in a 4-ary heap keyed by (-score, time of their latest access).
    """

    name = "ML"
    featured = True
    reference = "the seed's eviction scorer; learned scores in the spirit of Parrot (Liu et al., ICML 2020)"

    class State(NamedTuple):
        heap: Heap  # the residents, keyed by (-score of their latest access, its index)
        neg_score: np.ndarray  # float64 per access

    def init_state(self, workload, capacity_bytes):
        neg_score = kernel_array(-workload.column("eviction_score", hint=SCORE_HINT), np.float64)
        return self.State(new_heap(workload.n_tensors), neg_score)

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            heap_update(s.heap, c, s.neg_score[i], i)
        return -1

    @staticmethod
    def insert(s, c, i):
        heap_push(s.heap, c, s.neg_score[i], i)

    @staticmethod
    def evict(s, c, i):
        return heap_pop(s.heap)

    @staticmethod
    def remove(s, c):
        heap_remove(s.heap, c)
