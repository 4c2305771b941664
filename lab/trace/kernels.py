"""Compiled passes over a trace: integer coding of ids and sizes, and each access's previous and next use."""

from __future__ import annotations

import numpy as np

from lab.compiled import kernel
from lab.units import BYTES_PER_MB

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


@kernel
def factorize_dense(ids, low, span):
    """Codes of integer ids in order of first appearance, for ids in [low, low + span) (a direct-address table
    of ``span`` entries instead of a hash table). Returns (codes int64 per access, first position of each code)."""
    n = ids.shape[0]
    table = np.full(span, NEVER, np.int64)
    codes = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    k = 0
    for i in range(n):
        slot = ids[i] - low
        c = table[slot]
        if c == NEVER:
            c = k
            table[slot] = k
            first[k] = i
            k += 1
        codes[i] = c
    return codes, first[:k].copy()


@kernel
def encode_sizes(codes, size_mb, n_tensors, max_size_mb):
    """Bytes per access and per tensor from sizes in MB (rounded, at least 1 byte), with the first bad row.

    Returns (access_bytes, tensor_bytes, bad_row, mismatch_row): ``bad_row`` is
    the first access whose size is not finite or not in (0, max_size_mb]
    (NEVER if none), ``mismatch_row`` the first access whose tensor was seen
    before with another size (NEVER if none).
    """
    n = codes.shape[0]
    access_bytes = np.empty(n, np.int64)
    tensor_bytes = np.zeros(n_tensors, np.int64)
    bad_row = NEVER
    mismatch_row = NEVER
    for i in range(n):
        mb = size_mb[i]
        if not (mb > 0.0 and mb <= max_size_mb):  # also false for NaN
            if bad_row == NEVER:
                bad_row = i
            access_bytes[i] = 1
            continue
        b = np.int64(np.rint(mb * BYTES_PER_MB))
        if b < 1:
            b = 1
        access_bytes[i] = b
        c = codes[i]
        if tensor_bytes[c] == 0:
            tensor_bytes[c] = b
        elif tensor_bytes[c] != b and mismatch_row == NEVER:
            mismatch_row = i
    return access_bytes, tensor_bytes, bad_row, mismatch_row
