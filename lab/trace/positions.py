"""Compiled passes over integer-coded accesses: each access's previous and next use of the same tensor."""

from __future__ import annotations

import numpy as np

from lab.compiled import kernel

NEVER = -1  # position of a previous or next use that does not exist


@kernel
def previous_access_positions(codes, n_tensors):
    """Position of the previous access to the same tensor, for each access (NEVER when none). O(n)."""
    n = codes.shape[0]
    prev = np.empty(n, np.int64)
    last = np.full(n_tensors, NEVER, np.int64)
    for i in range(n):
        c = codes[i]
        prev[i] = last[c]
        last[c] = i
    return prev


@kernel
def next_access_positions(codes, n_tensors):
    """Position of the next access to the same tensor, for each access (NEVER when none). O(n)."""
    n = codes.shape[0]
    nxt = np.empty(n, np.int64)
    last = np.full(n_tensors, NEVER, np.int64)
    for i in range(n - 1, -1, -1):
        c = codes[i]
        nxt[i] = last[c]
        last[c] = i
    return nxt
