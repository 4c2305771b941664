"""A hand sweeping a queue: SIEVE (and CLOCK)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.sim.policy import Policy, register
from lab.sim.structures import NONE, Lists, new_lists, push_head, unlink


@register
@dataclass(frozen=True)
class SIEVE(Policy):
    """SIEVE: a FIFO queue whose hand moves from the oldest towards the newest tensor, clearing visited bits;
    the first unvisited tensor it meets is evicted, the others keep their place. A hit sets the bit.

    New tensors enter at the head; the hand wraps from the head back to the tail.
    """

    name = "SIEVE"
    libcachesim = "Sieve"
    reference = "Zhang, Yang, Yue, Vigfusson and Rashmi, 'SIEVE is simpler than LRU', NSDI 2024"

    class State(NamedTuple):
        queue: Lists
        visited: np.ndarray  # bool per tensor
        hand: np.ndarray  # int64[1]: the next tensor the hand looks at, NONE = start at the tail

    def init_state(self, workload, capacity_bytes):
        return self.State(new_lists(1, workload.tensor_bytes), np.zeros(workload.n_tensors, np.bool_),
                          np.full(1, NONE, np.int64))

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            s.visited[c] = True
        return NONE

    @staticmethod
    def insert(s, c, i):
        push_head(s.queue, 0, c)
        s.visited[c] = False

    @staticmethod
    def evict(s, c, i):
        visited = s.visited
        newer = s.queue.newer
        tail = s.queue.tail[0]
        v = s.hand[0]
        if v == NONE:
            v = tail
        while visited[v]:
            visited[v] = False
            v = newer[v]
            if v == NONE:
                v = tail
        s.hand[0] = newer[v]
        unlink(s.queue, v)
        return v

    @staticmethod
    def remove(s, c):
        if s.hand[0] == c:
            s.hand[0] = s.queue.newer[c]
        unlink(s.queue, c)
