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
    dirty: bool = False


def _next_access(tensor_ids, tensor, after):
    for j in range(after + 1, len(tensor_ids)):
        if tensor_ids[j] == tensor:
            return j
    return math.inf


def reference_simulate(tensor_ids, sizes, capacity, policy, scores=None, access=None):
    """Return (hits, evictions, victims): a hit flag and an eviction count per access, and (access, victim) pairs.

    ``sizes`` and ``capacity`` are integer bytes; ``policy`` is LRU, FIFO, MRU,
    ML (needs ``scores``) or Belady. With ``access`` (``read``/``write`` per
    access) see ``reference_simulate_rw``.
    """
    hits, evictions, victims, _, _, _, allocated = reference_simulate_rw(tensor_ids, sizes, capacity, policy, scores,
                                                                          access)
    return [h or a for h, a in zip(hits, allocated)], [len(e) for e in evictions], victims


def reference_simulate_rw(tensor_ids, sizes, capacity, policy, scores=None, access=None):
    """The same, with reads and writes; returns (hits, evicted per access, victims, written-back victims,
    DRAM bytes written per access, resident bytes per access, write allocations per access).

    A write allocates without a DRAM read and dirties the tensor (not a hit:
    the tensor was not resident); a dirty victim is written back unless its
    next access writes it (overwrites it whole); after a tensor's last access
    it leaves the buffer with no writeback; a write of a tensor larger than
    the buffer goes to DRAM.
    """
    cache: dict = {}
    used = 0
    hits, evictions, victims, written_back, write_bytes, resident, allocated = [], [], [], [], [], [], []
    for i, (tensor, size) in enumerate(zip(tensor_ids, sizes)):
        score = scores[i] if scores is not None else 0.0
        write = access is not None and access[i] == "write"
        evicted, written = [], 0
        if tensor in cache:
            entry = cache[tensor]
            entry.last_access = i
            entry.score = score
            entry.dirty = entry.dirty or write
            hits.append(True)
            allocated.append(False)
        else:
            hits.append(False)
            allocated.append(write and size <= capacity)
            if size <= capacity:
                while used + size > capacity:
                    victim = _choose_victim(cache, policy, tensor_ids, i)
                    gone = cache.pop(victim)
                    used -= gone.size
                    victims.append((i, victim))
                    after = _next_access(tensor_ids, victim, i)
                    overwritten = after != math.inf and access is not None and access[after] == "write"
                    written_back.append(gone.dirty and not overwritten)
                    written += gone.size if gone.dirty and not overwritten else 0
                    evicted.append(victim)
                cache[tensor] = _Entry(size=size, inserted=i, last_access=i, score=score, dirty=write)
                used += size
            elif write:
                written += size
        if access is not None and tensor in cache and _next_access(tensor_ids, tensor, i) == math.inf:
            used -= cache.pop(tensor).size
        evictions.append(evicted)
        write_bytes.append(written)
        resident.append(used)
    return hits, evictions, victims, written_back, write_bytes, resident, allocated


def _choose_victim(cache, policy, tensor_ids, now):
    if policy == "LRU":
        return min(cache, key=lambda t: cache[t].last_access)
    if policy == "FIFO":
        return min(cache, key=lambda t: cache[t].inserted)
    if policy == "MRU":
        return max(cache, key=lambda t: cache[t].last_access)
    if policy == "ML":
        return max(cache, key=lambda t: (cache[t].score, -cache[t].last_access))
    if policy == "Belady":
        return max(cache, key=lambda t: (_next_access(tensor_ids, t, now), -cache[t].inserted))
    raise ValueError(policy)
