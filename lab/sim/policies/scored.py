"""Score-driven eviction: the ML policy evicts by a scorer's eviction_score (see lab.learn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.compiled import kernel_array
from lab.sim.policy import Policy, param, register
from lab.sim.structures import Heap, heap_pop, heap_push, heap_remove, heap_replace_top, heap_update, new_heap

SCORE_HINT = ("The ML policy evicts by score: score the trace first (lab.score(trace)) or add an eviction_score "
              "column")


@register
@dataclass(frozen=True)
class ML(Policy):
    """Score-driven: evict the resident tensor whose most recent access has the highest ``eviction_score``;
    among equal scores, the least recently used.

    The scores come from the trace's ``eviction_score`` column (``lab.score(trace, scorer)``). The residents
    sit in a 4-ary heap keyed by (-score, time of their latest access). With ``bypass=True`` a missed tensor
    whose access scores higher than every resident one is not inserted (it would be the next victim anyway:
    the learned scorer predicts that the optimum does not keep it, ``lab.learn.learned``); tensors already
    evicted for it stay evicted, as with Belady's bypass. With ``resolution`` > 0 scores are compared rounded
    to its multiples: a learned score is a noisy probability, and scores closer than that tie and fall back
    on recency (LRU).
    """

    name = "ML"
    featured = True
    needs_scores = True
    reference = "the seed's eviction scorer; learned scores in the spirit of Parrot (Liu et al., ICML 2020)"

    bypass: bool = param(False, doc="a missed tensor scoring higher than every resident one is not inserted")
    resolution: float = param(0.0, low=0.0, high=1.0,
                              doc="scores count rounded to multiples of this (0: as they are): closer ones tie, "
                                  "and ties go to the least recently used")

    class State(NamedTuple):
        heap: Heap  # the residents, keyed by (-score of their latest access, its index)
        neg_score: np.ndarray  # float64 per access
        pending: np.ndarray  # int64[1]: 1 while the heap's top is a victim handed to the engine, not yet replaced
        bypass: np.bool_

    def init_state(self, workload, capacity_bytes):
        score = workload.column("eviction_score", hint=SCORE_HINT)
        if self.resolution > 0:
            with np.errstate(over="ignore"):
                steps = score / self.resolution
            # a resolution finer than a score's float spacing rounds nothing: keep the score (and no overflow)
            score = np.where(np.abs(steps) < 2.0**52, np.round(steps) * self.resolution, score)
        neg_score = kernel_array(-score, np.float64)
        return self.State(new_heap(workload.n_tensors), neg_score, np.zeros(1, np.int64), np.bool_(self.bypass))

    # A miss evicts the top and inserts the new tensor: evict leaves the victim on top (pending) and insert
    # replaces it, one sift instead of two. Any other hook first takes a pending victim out.
    @staticmethod
    def find(s, c, i, hit):
        if hit:
            if s.pending[0]:
                heap_pop(s.heap)
                s.pending[0] = 0
            heap_update(s.heap, c, s.neg_score[i], i)
        return -1

    @staticmethod
    def insert(s, c, i):
        if s.pending[0]:
            heap_replace_top(s.heap, c, s.neg_score[i], i)
            s.pending[0] = 0
        else:
            heap_push(s.heap, c, s.neg_score[i], i)

    @staticmethod
    def evict(s, c, i):
        if s.pending[0]:  # a second victim for the same access (sizes differ)
            heap_pop(s.heap)
            s.pending[0] = 0
        if s.bypass and (s.heap.size[0] == 0 or s.neg_score[i] < s.heap.keys[0]):  # scores above every resident
            return c
        s.pending[0] = 1
        return s.heap.codes[0]

    @staticmethod
    def remove(s, c):
        if s.pending[0]:
            heap_pop(s.heap)
            s.pending[0] = 0
        heap_remove(s.heap, c)
