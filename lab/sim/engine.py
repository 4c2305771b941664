"""The policy engine: one compiled driver owns the loop, a policy supplies a few hooks.

On each access, as libCacheSim's ``cache_get_base`` does:

1. ``find(state, c, i, hit)``: the policy's bookkeeping for access ``i`` to
   tensor ``c`` (``hit``: it is resident). It may evict one tensor itself (as
   ARC does on a ghost hit) and return it, else ``NO_VICTIM``.
2. On a miss, if the tensor fits the buffer at all and ``can_insert(state, c,
   i)`` admits it: ``evict(state, c, i)`` until it fits, each call returning
   one victim, then ``insert(state, c, i)``.
3. With reads and writes, after a tensor's last use: ``remove(state, c)``.

The driver keeps residency, occupancy, dirty bits, victims, per-access
results and the counters behind the metrics, once for every policy; a policy
keeps only its own state, a ``NamedTuple`` of arrays and scalars. Hooks are
plain functions that the driver inlines at compile time (numba overloads of
the stubs below, chosen by the state's type), so each policy compiles to one
specialized loop, cached on disk like every kernel (see ``lab.compiled``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lab.compiled import kernel

NO_VICTIM = -1

# Counter slots of the driver's ``counts`` output.
HITS, HIT_BYTES, READ_BYTES, WRITE_BYTES, EVICTIONS, WRITEBACKS, DROPS, PEAK_BYTES, INSERTIONS = range(9)
N_COUNTS = 9
# Bits of the per-access outcome.
SERVED, INSERTED, DROPPED, STREAMED = 1, 2, 4, 8


# Hook stubs: never called from Python. ``lab.sim.policy.register`` implements them for each policy's State.
def find(state, c, i, hit):
    """Bookkeeping for access ``i`` to tensor ``c``; returns a tensor evicted meanwhile, or NO_VICTIM."""


def can_insert(state, c, i):
    """Admission: True to insert tensor ``c`` (which fits the buffer) after access ``i`` missed."""


def evict(state, c, i):
    """Choose and forget one resident tensor to make room for ``c`` at access ``i``; returns its code."""


def insert(state, c, i):
    """Record that tensor ``c`` entered the buffer at access ``i``."""


def remove(state, c):
    """Forget resident tensor ``c``, dropped because it is dead (its last use has passed)."""


HOOK_STUBS = {"find": find, "can_insert": can_insert, "evict": evict, "insert": insert, "remove": remove}


@kernel
def _account(v, i, sizes, dirty, rw, record, counts, victim_access, victim_code, victim_written_back, n_victims):
    """The bookkeeping of victim ``v`` at access ``i`` beyond residency: its writeback when dirty (returns the
    bytes written) and, when ``record``, the per-eviction outputs. Out of line: the plain, counters-only loop
    never calls it."""
    written = 0
    if rw and dirty[v]:  # still live (dead tensors were dropped): write it back
        dirty[v] = False
        written = sizes[v]
        counts[WRITEBACKS] += 1
    if record:
        victim_access[n_victims] = i
        victim_code[n_victims] = v
        victim_written_back[n_victims] = written > 0
    return written


def _drive(state, codes, sizes, total_bytes, capacity, is_write, next_use, record):
    """Replay integer-coded accesses through a buffer of ``capacity`` bytes under the policy in ``state``.

    Takes ``codes`` (int64 tensor per access), ``sizes`` (int64 bytes per
    tensor), ``total_bytes`` (bytes of all accesses), ``capacity`` (bytes),
    ``is_write`` and ``next_use`` (one per access, or both empty for a plain
    trace) and ``record`` (False: counters only, the other outputs empty).

    With reads and writes a write allocates without a DRAM read and dirties
    the tensor, evicting a dirty tensor writes it back, a tensor is dropped
    without writeback after its last use, and a write that is not inserted
    goes straight to DRAM.

    Returns ``(counts, outcome, victim_access, victim_code,
    victim_written_back)``: ``counts`` (int64, the slots named above); when
    ``record``, per access an ``outcome`` (uint8 bits: ``SERVED`` on chip
    without a DRAM read, ``INSERTED`` its tensor, ``DROPPED`` its tensor after
    it, ``STREAMED`` a write to DRAM) and per eviction the access that caused
    it, the victim and whether it was written back.
    """
    n = codes.shape[0]
    k = sizes.shape[0]
    rw = is_write.shape[0] == n and n > 0
    rn = n if record else 0
    outcome = np.zeros(rn, np.uint8)
    victim_access = np.empty(rn, np.int64)  # untouched pages cost nothing: sized for the worst case
    victim_code = np.empty(rn, np.int64)
    victim_written_back = np.empty(rn, np.bool_)
    counts = np.zeros(N_COUNTS, np.int64)
    resident = np.zeros(k, np.bool_)
    dirty = np.zeros(k if rw else 0, np.bool_)
    used = 0
    peak = 0
    n_victims = 0
    n_hits = 0
    n_inserted = 0
    read_bytes = 0
    streamed = 0
    written = 0
    for i in range(n):
        c = codes[i]
        if resident[c]:
            v = find(state, c, i, True)
            if v != NO_VICTIM:
                if v < 0 or v >= k or not resident[v]:
                    raise RuntimeError("a policy's find hook returned a victim that is not resident")
                resident[v] = False
                used -= sizes[v]
                if rw or record:
                    written += _account(v, i, sizes, dirty, rw, record, counts, victim_access, victim_code,
                                        victim_written_back, n_victims)
                n_victims += 1
            n_hits += 1
            if rw and is_write[i]:
                dirty[c] = True
            if record:
                outcome[i] = SERVED
        else:
            v = find(state, c, i, False)
            if v != NO_VICTIM:
                if v < 0 or v >= k or not resident[v]:
                    raise RuntimeError("a policy's find hook returned a victim that is not resident")
                resident[v] = False
                used -= sizes[v]
                if rw or record:
                    written += _account(v, i, sizes, dirty, rw, record, counts, victim_access, victim_code,
                                        victim_written_back, n_victims)
                n_victims += 1
            size = sizes[c]
            write = rw and is_write[i]
            if size <= capacity and can_insert(state, c, i):
                while used + size > capacity:
                    v = evict(state, c, i)
                    if v < 0 or v >= k or not resident[v]:
                        raise RuntimeError("a policy's evict hook returned a victim that is not resident")
                    resident[v] = False
                    used -= sizes[v]
                    if rw or record:
                        written += _account(v, i, sizes, dirty, rw, record, counts, victim_access, victim_code,
                                            victim_written_back, n_victims)
                    n_victims += 1
                insert(state, c, i)
                resident[c] = True
                used += size
                n_inserted += 1
                if rw:
                    dirty[c] = write
                if write:  # produced on chip: no DRAM read
                    n_hits += 1
                else:
                    read_bytes += size
                if record:
                    outcome[i] = INSERTED | SERVED if write else INSERTED
            elif write:  # not inserted: written straight out to DRAM
                written += size
                streamed += size
                if record:
                    outcome[i] = STREAMED
            else:
                read_bytes += size
            if used > peak and not (rw and next_use[i] < 0):
                peak = used
        if rw and next_use[i] < 0 and resident[c]:  # dead from here on: drop, no writeback
            remove(state, c)
            resident[c] = False
            dirty[c] = False
            used -= sizes[c]
            counts[DROPS] += 1
            if record:
                outcome[i] |= DROPPED
    counts[HITS] = n_hits
    counts[HIT_BYTES] = total_bytes - read_bytes - streamed  # every access is a hit, a read miss or a streamed write
    counts[READ_BYTES] = read_bytes
    counts[WRITE_BYTES] = written
    counts[EVICTIONS] = n_victims
    counts[PEAK_BYTES] = peak
    counts[INSERTIONS] = n_inserted
    m = n_victims if record else 0
    return (counts, outcome, victim_access[:m].copy(), victim_code[:m].copy(), victim_written_back[:m].copy())


# Policies defined inside lab run the cached driver; a policy defined elsewhere (a notebook, a test) runs
# an uncached copy, because numba's disk cache cannot key compiled code on a class it cannot import again.
drive = kernel(_drive)
drive_uncached = njit(nogil=True)(_drive)
