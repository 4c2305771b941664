"""A hand sweeping a queue: SIEVE and CLOCK."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.compiled import kernel
from lab.sim.policy import Policy, param, register
from lab.sim.structures import NONE, Lists, new_lists, push_head, unlink


@register
@dataclass(frozen=True)
class SIEVE(Policy):
    """SIEVE: a FIFO queue whose hand moves from the oldest towards the newest tensor, clearing visited bits;
    the first unvisited tensor it meets is evicted, the others keep their place. A hit sets the bit.

    New tensors enter at the head; the hand wraps from the head back to the tail.
    """

    name = "SIEVE"
    featured = True
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


@kernel
def _clock_laps(counter, queue, where, mask, front, back):
    """Lower the counter of every tensor in the ring's entries [front, back) by the smallest of them: that many
    laps of the hand, none reaching a 0 before the last, and none changing the order. Called, not inlined."""
    smallest = np.int64(-1)
    for j in range(front, back):
        v = queue[j & mask]
        if where[v] == j and (smallest < 0 or counter[v] < smallest):
            smallest = np.int64(counter[v])
    if smallest > 0:
        for j in range(front, back):
            v = queue[j & mask]
            if where[v] == j:
                counter[v] = counter[v] - smallest


@register
@dataclass(frozen=True)
class CLOCK(Policy):
    """CLOCK: a FIFO queue whose oldest tensor is examined on eviction; one with a nonzero reference counter
    has it decremented and goes back in at the newest end (a hand sweeping a circle passes over it), the
    first one with counter 0 is evicted. A hit increments the counter, saturating at ``2**bits - 1``; a new
    tensor enters at the newest end with counter ``initial_frequency``.

    ``bits=1``, ``initial_frequency=0`` is the classic CLOCK (second chance, FIFO-Reinsertion). As in
    libCacheSim, ``initial_frequency`` is not capped at ``2**bits - 1`` (hits then leave the counter as it
    is). The queue is a ring of codes read and written in order, so the sweep chases no pointers. A whole
    lap of the hand without a counter at 0 lowers every counter by one and leaves the order as it was: after
    one, the hand takes the laps until the smallest counter reaches 0 at once (the same victim as lap by lap,
    in time linear in the tensors resident, whatever the counters).
    """

    name = "CLOCK"
    libcachesim = "Clock"
    reference = ("Corbató, 'A paging experiment with the Multics system', in Feshbach and Ingard (eds.), "
                 "In Honor of Philip M. Morse, MIT Press 1969 (MIT Project MAC report MAC-M-384, 1968)")

    bits: int = param(1, low=1, high=30, integer=True, doc="bits of the reference counter")
    initial_frequency: int = param(0, low=0, high=2**30, integer=True, doc="counter of a newly inserted tensor")

    def libcachesim_params(self):
        return {"n_bit_counter": self.bits, "init_freq": self.initial_frequency}

    class State(NamedTuple):
        counter: np.ndarray  # uint8 (int32 when a counter can exceed 255) per tensor: its reference counter
        queue: np.ndarray  # int64 ring: entry j (slot j & mask) holds a code, the oldest at ends[0]
        where: np.ndarray  # int64 per tensor: the entry that holds it (entries of removed tensors are stale)
        ends: np.ndarray  # int64[3]: the oldest entry, one past the newest (they only grow); tensors resident
        mask: int  # ring slots - 1: room for every tensor once, plus one stale entry per removed tensor
        max_count: int  # 2**bits - 1
        initial: int  # counter of a new tensor

    def init_state(self, workload, capacity_bytes):
        k = workload.n_tensors
        max_count = (1 << self.bits) - 1
        small = max(max_count, self.initial_frequency) <= 255
        slots = 1 << int(2 * k).bit_length()
        return self.State(np.zeros(k, np.uint8 if small else np.int32), np.zeros(slots, np.int64),
                          np.full(k, NONE, np.int64), np.zeros(3, np.int64), slots - 1, max_count,
                          self.initial_frequency)

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            counter = s.counter
            n = counter[c]
            counter[c] = n + (n < s.max_count)  # no branch: whether a counter is full is unpredictable
        return NONE

    @staticmethod
    def insert(s, c, i):
        back = s.ends[1]
        s.queue[back & s.mask] = c
        s.where[c] = back
        s.counter[c] = s.initial
        s.ends[1] = back + 1
        s.ends[2] += 1

    @staticmethod
    def evict(s, c, i):
        counter = s.counter
        queue = s.queue
        where = s.where
        mask = s.mask
        front = s.ends[0]
        back = s.ends[1]
        live = s.ends[2]
        seen = 0
        while True:
            j = front
            v = queue[j & mask]
            front = j + 1
            if where[v] == j:  # else a stale entry: v was removed (and maybe inserted again since)
                n = counter[v]
                if n == 0:
                    break
                counter[v] = n - 1
                queue[back & mask] = v
                where[v] = back
                back += 1
                seen += 1
                if seen == live:  # a lap without a 0: take the next laps up to the smallest counter at once
                    _clock_laps(counter, queue, where, mask, front, back)
                    seen = 0
        where[v] = NONE
        s.ends[0] = front
        s.ends[1] = back
        s.ends[2] = live - 1
        return v

    @staticmethod
    def remove(s, c):
        s.where[c] = NONE
        s.ends[2] -= 1
