"""A small, obviously correct pure-Python cache simulator: the reference the compiled engine is checked against.

Quadratic and slow on purpose: every decision is the policy's definition read
off directly, with no data structure to get wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class _Entry:
    size: int
    inserted: int
    last_access: int
    score: float


def _next_access(tensor_ids, tensor, after):
    for j in range(after + 1, len(tensor_ids)):
        if tensor_ids[j] == tensor:
            return j
    return math.inf


def reference_simulate(tensor_ids, sizes, capacity, policy, scores=None):
    """Return (hits, evictions, victims): a hit flag and an eviction count per access, and (access, victim) pairs.

    ``sizes`` and ``capacity`` are integer bytes; ``policy`` is LRU, FIFO, ML
    (needs ``scores``) or Belady.
    """
    cache: dict = {}
    used = 0
    hits, evictions, victims = [], [], []
    for i, (tensor, size) in enumerate(zip(tensor_ids, sizes)):
        score = scores[i] if scores is not None else 0.0
        if tensor in cache:
            entry = cache[tensor]
            entry.last_access = i
            entry.score = score
            hits.append(True)
            evictions.append(0)
            continue
        hits.append(False)
        evicted = 0
        if size <= capacity:
            while used + size > capacity:
                victim = _choose_victim(cache, policy, tensor_ids, i)
                used -= cache.pop(victim).size
                victims.append((i, victim))
                evicted += 1
            cache[tensor] = _Entry(size=size, inserted=i, last_access=i, score=score)
            used += size
        evictions.append(evicted)
    return hits, evictions, victims


def _choose_victim(cache, policy, tensor_ids, now):
    if policy == "LRU":
        return min(cache, key=lambda t: cache[t].last_access)
    if policy == "FIFO":
        return min(cache, key=lambda t: cache[t].inserted)
    if policy == "ML":
        return max(cache, key=lambda t: (cache[t].score, -cache[t].inserted))
    if policy == "Belady":
        return max(cache, key=lambda t: (_next_access(tensor_ids, t, now), -cache[t].inserted))
    raise ValueError(policy)
