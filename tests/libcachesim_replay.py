"""Replay a trace in libCacheSim (the reference C simulator) through a lab policy's counterpart."""

from __future__ import annotations

import libcachesim as lcs
import numpy as np

import lab


# libCacheSim's hash table starts at 2**hashpower buckets and doubles as it fills. Its default, 24, allocates and
# clears 128 MB per cache: 0.09 s for each of the suite's ~1,000 caches, against 0.1 ms at 16 (65,536 buckets,
# more than the test traces' objects). Only the sampling policies (Random, LHD, Hyperbolic, BeladySize) see the
# table's layout, and they are compared statistically.
HASHPOWER = 16


def libcachesim_cache(policy, capacity_bytes: int):
    """The libCacheSim cache that ``policy`` (a lab Policy with a ``libcachesim`` counterpart) names."""
    policy = lab.get_policy(policy)
    return getattr(lcs, policy.libcachesim)(capacity_bytes, hashpower=HASHPOWER, **policy.libcachesim_params())


def libcachesim_replay(path, policy, capacity_bytes: int, unit_sizes: bool = False):
    """Return (hit flags, evictions per access) from libCacheSim for the oracleGeneral trace at ``path``.

    Evictions per access are read off the object count: before + inserted - after, where a miss counts as
    inserted when the object is in the cache afterwards (a policy may decline one that fits).
    """
    reader = lcs.TraceReader(
        str(path), lcs.TraceType.ORACLE_GENERAL_TRACE, lcs.ReaderInitParam(ignore_obj_size=unit_sizes)
    )
    cache = libcachesim_cache(policy, capacity_bytes)
    hits, evictions = [], []
    for req in reader:
        before = cache.get_n_obj()
        hit = cache.get(req)
        inserted = 0 if hit or cache.find(req, False) is None else 1
        hits.append(hit)
        evictions.append(before + inserted - cache.get_n_obj())
    return np.array(hits, dtype=bool), np.array(evictions)


def libcachesim_miss_ratio(path, policy, capacity_bytes: int, unit_sizes: bool = False) -> float:
    """libCacheSim's miss ratio (misses / requests) for the oracleGeneral trace at ``path``."""
    reader = lcs.TraceReader(
        str(path), lcs.TraceType.ORACLE_GENERAL_TRACE, lcs.ReaderInitParam(ignore_obj_size=unit_sizes)
    )
    miss_ratio, _ = libcachesim_cache(policy, capacity_bytes).process_trace(reader)
    return float(miss_ratio)
