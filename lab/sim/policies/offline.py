"""Policies that read the future of the trace: Belady's MIN and libCacheSim's sampled, size-aware BeladySize."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab.compiled import kernel
from lab.sim.policies.randomized import MAX_SAMPLES
from lab.sim.policy import Policy, param, register
from lab.sim.structures import (NONE, SPLITMIX_GAMMA, KeySet, Pool, Rng, keyset_add, keyset_discard, keyset_max,
                                new_keyset, new_pool, new_rng, pool_add, pool_remove_with_slots, rng_scale,
                                splitmix_mix)

SIZE, NEXT = 0, 1  # columns of BeladySize's per-slot rows


@kernel
def _belady_size_evict(members, index, count, slots, dead, n_dead, rng_state, n_samples, i):
    """A tensor with no further use if any (leaving the pool if it is there), else the largest size x
    (accesses before its next one) among ``n_samples`` sampled residents; returns it."""
    n = n_dead[0]
    if n > 0:
        n_dead[0] = n - 1
        v = dead[n - 1]
        if index[v] != NONE:
            pool_remove_with_slots(members, index, count, slots, v)
        return v
    k = np.uint64(count[0])
    now = i + 1
    best = np.int64(-1)  # the tensor needed next (score 0; -inf in libCacheSim) wins only alone
    best_j = np.int64(0)
    state = rng_state[0]
    for _ in range(n_samples):
        state = state + SPLITMIX_GAMMA
        j = rng_scale(splitmix_mix(state), k)
        score = slots[j, SIZE] * (slots[j, NEXT] - now)
        if score > best:
            best = score
            best_j = j
    rng_state[0] = state
    v = members[best_j]
    pool_remove_with_slots(members, index, count, slots, v)
    return v


@kernel
def _belady_size_remove(members, index, count, slots, dead, n_dead, c):
    if index[c] != NONE:
        pool_remove_with_slots(members, index, count, slots, c)
    n = n_dead[0] - 1
    j = n
    while j >= 0 and dead[j] != c:
        j -= 1
    if j >= 0:
        dead[j] = dead[n]
        n_dead[0] = n


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

    Differences from libCacheSim (libcachesim 0.3.5): with varied sizes
    libCacheSim breaks the ties among tensors never used again in another
    order; with equal sizes the two agree miss for miss.
    """

    name = "Belady"
    featured = True
    aliases = ("MIN",)  # not "OPT": with sizes that differ Belady is not the optimum (lab.optimal is)
    libcachesim = "Belady"
    offline = True
    one_pass_curve = "belady"
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


@register
@dataclass(frozen=True)
class BeladySize(Policy):
    """Sampled, size-aware Belady (libCacheSim's BeladySize): evict, among ``n_samples`` residents drawn
    uniformly at random with replacement, the one with the largest size times time to its next access.

    At access ``i`` a resident with next access ``n`` and ``size`` bytes
    scores ``size * (n - i - 1)`` (the accesses strictly before its next
    one): libCacheSim's ``size * (next_access_vtime - n_req)`` on the
    oracleGeneral file lab writes (0-based next access, 1-based request
    count). libCacheSim compares the scores in log form, so the tensor needed
    at the very next access scores -inf and it samples again if that is all
    it drew; lab takes it only then. The first sampled of equal scores wins.
    Sampling is with replacement, as libCacheSim's (a random bucket of its
    hash table, again and again), even with fewer residents than samples: the
    furthest is missed with probability (1 - 1/k) ** n_samples among k
    residents, so the policy is randomized, never exact.

    libCacheSim drops a tensor at a hit on its last access, and does not
    store a tensor missed on its last access (though it still evicts room for
    it first). Lab keeps such tensors, with no further use, and evicts them
    before any other when room is next needed: they free the same bytes
    before any live tensor is chosen, so the misses are the same, but lab
    counts their evictions later (when room is needed) and its occupancy
    includes them meanwhile, as Belady's. Needs the trace's future.
    """

    name = "BeladySize"
    aliases = ("Belady-Size",)
    libcachesim = "BeladySize"
    randomized = True
    offline = True
    reference = ("libCacheSim's BeladySize (Yang et al., libCacheSim); after Belady, 'A study of replacement "
                 "algorithms for a virtual-storage computer', IBM Systems Journal 1966")

    n_samples: int = param(128, low=1, high=MAX_SAMPLES, integer=True,
                           doc="residents sampled (with replacement) per eviction (each costs time per eviction)")
    seed: int = param(0, low=0, integer=True)

    class State(NamedTuple):
        pool: Pool  # live residents (next access known)
        slots: np.ndarray  # int64 [slot, 2]: SIZE, NEXT access of the pool member in that slot
        dead: np.ndarray  # int64 stack (and a spare): resident tensors with no further use, evicted first
        n_dead: np.ndarray  # int64[1]
        next_use: np.ndarray  # int64 per access
        sizes: np.ndarray  # int64 per tensor
        rng: Rng
        n_samples: int

    def libcachesim_params(self):
        return {"n_samples": self.n_samples}

    def init_state(self, workload, capacity_bytes):
        k = workload.n_tensors
        return self.State(new_pool(k), np.zeros((k, 2), np.int64), np.empty(k + 1, np.int64), np.zeros(1, np.int64),
                          workload.next_use, workload.tensor_bytes, new_rng(self.seed), self.n_samples)

    # find and insert are straight-line code (kept inline): a tensor with no further use also goes on the
    # stack of dead tensors, and leaves the pool when evict pops it (the pool is never sampled meanwhile)
    @staticmethod
    def find(s, c, i, hit):
        if hit:
            nxt = s.next_use[i]
            s.slots[s.pool.index[c], NEXT] = nxt
            n = s.n_dead[0]
            s.dead[n] = c
            s.n_dead[0] = n + np.int64(nxt < 0)
        return NONE

    @staticmethod
    def insert(s, c, i):
        nxt = s.next_use[i]
        j = s.pool.count[0]
        pool_add(s.pool, c)
        s.slots[j, SIZE] = s.sizes[c]
        s.slots[j, NEXT] = nxt
        n = s.n_dead[0]
        s.dead[n] = c
        s.n_dead[0] = n + np.int64(nxt < 0)

    @staticmethod
    def evict(s, c, i):
        return _belady_size_evict(s.pool.members, s.pool.index, s.pool.count, s.slots, s.dead, s.n_dead,
                                  s.rng.state, s.n_samples, i)

    @staticmethod
    def remove(s, c):
        _belady_size_remove(s.pool.members, s.pool.index, s.pool.count, s.slots, s.dead, s.n_dead, c)
