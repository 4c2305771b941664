"""Score-driven eviction: the ML policy evicts by a scorer's eviction_score (see lab.learn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.compiled import kernel_array
from lab.sim.policy import Policy, register
from lab.sim.structures import KeySet, keyset_add, keyset_discard, keyset_max, new_keyset

SCORE_HINT = ("The ML policy evicts by score: score the trace first (lab.score(trace)) or add an eviction_score "
              "column")


def score_order(workload):
    """Each access's place (int64, 0..n-1) in the order (eviction_score ascending, then latest first), and the
    tensor whose access is at each place: the ML policy evicts the resident tensor whose latest access has the highest place."""
    score = workload.column("eviction_score", hint=SCORE_HINT)
    n = score.shape[0]
    order = np.lexsort((-np.arange(n), score))
    place = np.empty(n, np.int64)
    place[order] = np.arange(n)
    return kernel_array(place, np.int64), kernel_array(workload.codes[order], np.int64)


@register
@dataclass(frozen=True)
class ML(Policy):
    """Score-driven: evict the resident tensor whose most recent access has the highest ``eviction_score``;
    among equal scores, the least recently used.

    The scores come from the trace's ``eviction_score`` column (``lab.score(trace, scorer)``). Each access's
    (score, recency) is ranked once per workload, so priorities are distinct integers kept in a 64-ary bitmap
    tree.
    """

    name = "ML"
    featured = True
    reference = "the seed's eviction scorer; learned scores in the spirit of Parrot (Liu et al., ICML 2020)"

    class State(NamedTuple):
        keys: KeySet  # the places of the resident tensors' latest accesses
        place: np.ndarray  # int64 per access: its place in (score, recency) order
        tensor_of_place: np.ndarray  # int64 per place
        latest: np.ndarray  # int64 per tensor: the place of its latest access

    def init_state(self, workload, capacity_bytes):
        place, tensor_of_place = workload.memo("ml_score_order", lambda: score_order(workload))
        return self.State(new_keyset(workload.n_accesses), place, tensor_of_place,
                          np.zeros(workload.n_tensors, np.int64))

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            keyset_discard(s.keys, s.latest[c])
            key = s.place[i]
            keyset_add(s.keys, key)
            s.latest[c] = key
        return -1

    @staticmethod
    def insert(s, c, i):
        key = s.place[i]
        keyset_add(s.keys, key)
        s.latest[c] = key

    @staticmethod
    def evict(s, c, i):
        key = keyset_max(s.keys)
        keyset_discard(s.keys, key)
        return s.tensor_of_place[key]

    @staticmethod
    def remove(s, c):
        keyset_discard(s.keys, s.latest[c])
