"""Replay an oracleGeneral file in libCacheSim (the reference C simulator), access by access."""

from __future__ import annotations

import libcachesim as lcs
import numpy as np

LIBCACHESIM_POLICIES = {"LRU": lcs.LRU, "FIFO": lcs.FIFO, "Belady": lcs.Belady}


def libcachesim_replay(path, policy: str, capacity_bytes: int, unit_sizes: bool = False):
    """Return (hit flags, evictions per access) from libCacheSim for the trace at ``path``.

    Evictions per access are read off the object count: before + inserted - after.
    """
    reader = lcs.TraceReader(
        str(path), lcs.TraceType.ORACLE_GENERAL_TRACE, lcs.ReaderInitParam(ignore_obj_size=unit_sizes)
    )
    cache = LIBCACHESIM_POLICIES[policy](capacity_bytes)
    hits, evictions = [], []
    for req in reader:
        before = cache.get_n_obj()
        hit = cache.get(req)
        inserted = 0 if hit or req.obj_size > capacity_bytes else 1
        hits.append(hit)
        evictions.append(before + inserted - cache.get_n_obj())
    return np.array(hits, dtype=bool), np.array(evictions)
