"""Score-driven eviction: the ML policy evicts by a scorer's eviction_score (see lab.learn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.sim.policy import Policy, register
from lab.sim.structures import Heap, heap_pop, heap_push, heap_remove, heap_seq, heap_update, new_heap


@register
@dataclass(frozen=True)
class ML(Policy):
    """Score-driven: evict the resident tensor whose most recent access has the highest ``eviction_score``.

    Ties go to the earliest inserted. The scores come from the trace's
    ``eviction_score`` column (``lab.score(trace, scorer)``).
    """

    name = "ML"
    reference = "the seed's eviction scorer; learned scores in the spirit of Parrot (Liu et al., ICML 2020)"

    class State(NamedTuple):
        heap: Heap  # key: minus the score of the latest access; seq: insertion
        score: np.ndarray  # float64 per access

    def init_state(self, workload, capacity_bytes):
        score = workload.column("eviction_score", hint="The ML policy evicts by score: score the trace first "
                                "(lab.score(trace)) or add an eviction_score column")
        return self.State(new_heap(workload.n_tensors), score)

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            heap_update(s.heap, c, -s.score[i], heap_seq(s.heap, c))
        return -1

    @staticmethod
    def insert(s, c, i):
        heap_push(s.heap, c, -s.score[i], i)

    @staticmethod
    def evict(s, c, i):
        return heap_pop(s.heap)

    @staticmethod
    def remove(s, c):
        heap_remove(s.heap, c)
