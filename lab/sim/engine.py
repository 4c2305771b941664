"""The policy engine: one compiled driver owns the loop, a policy supplies a few hooks.

On each access, as libCacheSim's ``cache_get_base`` does:

1. ``find(state, c, i, hit)``: the policy's bookkeeping for access ``i`` to
   tensor ``c`` (``hit``: it is resident). It returns NO_VICTIM, or a tensor
   it evicted on its own; then ``spill(state, c, i)`` gives any further
   ones, until NO_VICTIM. After ``can_insert`` and after ``insert`` too,
   ``spill`` gives the tensors the policy evicted on its own there.
2. On a miss, if the tensor fits the buffer at all and ``can_insert(state, c,
   i)`` admits it: ``evict(state, c, i)`` until it fits, each call returning
   one victim, then ``insert(state, c, i)``, then ``spill`` until NO_VICTIM
   (a policy made of sub-caches of fixed sizes may overflow one). ``evict``
   may return ``c`` itself: the policy bypasses the incoming tensor (it is
   not inserted; what was evicted for it stays evicted).
3. With reads and writes, after a tensor's last use: ``remove(state, c)``.

The driver keeps residency, occupancy, dirty bits, victims, per-access
results and the counters behind the metrics, once for every policy; a policy
keeps only its own state, a ``NamedTuple`` of arrays and scalars. Hooks are
plain functions that the driver calls or inlines (``lab.sim.policy.INLINED_HOOKS``)
at compile time (numba overloads of the stubs below, chosen by the state's
type), so each policy compiles to one specialized loop, cached on disk like
every kernel (see ``lab.compiled``).

The loop is compiled without numba's reference counting (``_nrt=False``):
every array is allocated in Python, and no atomic reference-count updates
are left in the loop (with data-dependent branches in inlined hooks numba
kept one per state array per access, 10-20x slower).
"""

from __future__ import annotations

import types

from numba import njit

from lab.compiled import kernel, module_file

NO_VICTIM = -1

# Counter slots of the driver's ``counts`` output.
(HITS, HIT_BYTES, READ_BYTES, WRITE_BYTES, EVICTIONS, WRITEBACKS, DROPS, PEAK_BYTES, INSERTIONS, READ_HITS,
 WRITE_ALLOCATIONS, WRITEBACKS_SKIPPED, PERSIST_WRITE_BYTES) = range(13)
N_COUNTS = 13
# Bits of the per-access outcome.
SERVED, INSERTED, DROPPED, STREAMED, PERSISTED = 1, 2, 4, 8, 16


# Hook stubs: never called from Python. ``lab.sim.policy.register`` implements them for each policy's State.
def find(state, c, i, hit):
    """Bookkeeping for access ``i`` to tensor ``c``; returns a tensor evicted meanwhile, or NO_VICTIM."""


def can_insert(state, c, i):
    """Admission: True to insert tensor ``c`` (which fits the buffer) after access ``i`` missed."""


def evict(state, c, i):
    """Choose and forget one resident tensor to make room for ``c`` at access ``i``; returns its code, or ``c``
    to bypass: ``c`` is then not inserted."""


def insert(state, c, i):
    """Record that tensor ``c`` entered the buffer at access ``i``."""


def remove(state, c):
    """Forget resident tensor ``c``, dropped because it is dead (its last use has passed)."""


def spill(state, c, i):
    """Another tensor the policy evicted on its own at access ``i`` (in ``find``, ``can_insert`` or ``insert``),
    or NO_VICTIM: the engine calls it after each of those until NO_VICTIM."""


HOOK_STUBS = {"find": find, "can_insert": can_insert, "evict": evict, "insert": insert, "remove": remove,
              "spill": spill}


@kernel(_nrt=False)
def _release(v, i, k, sizes, resident, dirty, upcoming, is_write, rw, record, counts,
             victim_access, victim_code, victim_written_back):
    """Take victim ``v`` out of the buffer at access ``i``: residency, its writeback when dirty (counted in
    ``counts``) unless its next access (``upcoming[v]``) overwrites it whole, and when ``record`` the
    per-eviction outputs. Returns its size in bytes. Called, not inlined: the loop calls it from five places,
    and inlining each made every policy's compile 30-50 % slower."""
    if v < 0 or v >= k or not resident[v]:
        raise RuntimeError("a policy hook returned a victim that is not resident")
    resident[v] = False
    size = sizes[v]
    if rw or record:
        written_back = False
        if rw and dirty[v]:  # still live (dead tensors were dropped)
            dirty[v] = False
            after = upcoming[v]
            if 0 <= after < is_write.shape[0] and is_write[after]:  # its next access overwrites it: no writeback
                counts[WRITEBACKS_SKIPPED] += 1
            else:
                counts[WRITEBACKS] += 1
                counts[WRITE_BYTES] += size
                written_back = True
        if record:
            m = counts[EVICTIONS]
            victim_access[m] = i
            victim_code[m] = v
            victim_written_back[m] = written_back
    counts[EVICTIONS] += 1
    return size


def _drive(state, codes, sizes, total_bytes, capacity, is_write, next_use, is_persist, record, counts, resident,
           dirty, upcoming, outcome, victim_access, victim_code, victim_written_back):
    """Replay integer-coded accesses through a buffer of ``capacity`` bytes under the policy in ``state``.

    Takes ``codes`` (int64 tensor per access), ``sizes`` (int64 bytes per
    tensor), ``total_bytes`` (bytes of all accesses), ``capacity`` (bytes),
    ``is_write`` and ``next_use`` (one per access, or both empty for a plain
    trace), ``is_persist`` (bool per access, or empty: rows that only say the
    tensor's data must reach DRAM after the trace) and ``record`` (False:
    counters only). Fills, all allocated by the
    caller: ``counts`` (int64, the slots named above, zeros), ``resident``
    and ``dirty`` (bool per tensor, False; ``dirty`` empty for a plain
    trace), ``upcoming`` (int64 per tensor: the next access of each tensor
    after its latest, kept by the driver; empty for a plain trace), and when
    ``record`` ``outcome`` (uint8 bits per access:
    ``SERVED`` on chip without a DRAM read, ``INSERTED`` its tensor,
    ``DROPPED`` its tensor after it, ``STREAMED`` a write to DRAM) and per
    eviction the access that caused it, the victim and whether it was
    written back (``counts[EVICTIONS]`` of them).

    With reads and writes a write allocates without a DRAM read and dirties
    the tensor, evicting a dirty tensor writes it back unless its next
    access overwrites it, a tensor is dropped without writeback after its
    last use, and a write that is not inserted goes straight to DRAM. A hit
    is an access to a resident tensor; a write that allocates its tensor is
    not a hit (``WRITE_ALLOCATIONS``). A persist row is no access: its tensor,
    when resident, leaves the buffer, written back when dirty
    (``PERSIST_WRITE_BYTES``; outcome ``DROPPED``, with ``PERSISTED`` when
    written back, ``SERVED`` never).
    """
    n = codes.shape[0]
    k = sizes.shape[0]
    rw = is_write.shape[0] == n and n > 0
    marks = is_persist.shape[0] == n and n > 0
    persist_bytes = 0
    used = 0
    peak = 0
    n_hits = 0
    n_read_hits = 0
    hit_bytes = 0
    n_allocated = 0
    n_inserted = 0
    read_bytes = 0
    streamed = 0
    for i in range(n):
        c = codes[i]
        if marks and is_persist[i]:  # not an access: the data must be in DRAM from here on
            if resident[c]:
                size = sizes[c]
                written = rw and dirty[c]
                if written:
                    counts[WRITEBACKS] += 1
                    counts[WRITE_BYTES] += size
                    persist_bytes += size
                    dirty[c] = False
                remove(state, c)
                resident[c] = False
                used -= size
                if record:
                    outcome[i] = DROPPED | PERSISTED if written else DROPPED
            continue
        if rw:
            upcoming[c] = next_use[i]
        if resident[c]:
            v = find(state, c, i, True)
            if v == NO_VICTIM:
                v = spill(state, c, i)
            while v != NO_VICTIM:
                used -= _release(v, i, k, sizes, resident, dirty, upcoming, is_write, rw, record, counts,
                                 victim_access, victim_code, victim_written_back)
                v = spill(state, c, i)
            n_hits += 1
            hit_bytes += sizes[c]
            if rw and is_write[i]:
                dirty[c] = True
            else:
                n_read_hits += 1
            if record:
                outcome[i] = SERVED
        else:
            v = find(state, c, i, False)
            if v == NO_VICTIM:
                v = spill(state, c, i)
            while v != NO_VICTIM:
                used -= _release(v, i, k, sizes, resident, dirty, upcoming, is_write, rw, record, counts,
                                 victim_access, victim_code, victim_written_back)
                v = spill(state, c, i)
            size = sizes[c]
            write = rw and is_write[i]
            admitted = size <= capacity and can_insert(state, c, i)
            v = spill(state, c, i)  # admission may have evicted (LIRS's stack pruning does)
            while v != NO_VICTIM:
                if v == c:
                    raise RuntimeError("a policy's spill hook evicted the tensor being served")
                used -= _release(v, i, k, sizes, resident, dirty, upcoming, is_write, rw, record, counts,
                                 victim_access, victim_code, victim_written_back)
                v = spill(state, c, i)
            if admitted:
                while used + size > capacity:
                    v = evict(state, c, i)
                    if v == c:  # the policy prefers to bypass the incoming tensor: it is not inserted
                        admitted = False
                        break
                    used -= _release(v, i, k, sizes, resident, dirty, upcoming, is_write, rw, record, counts,
                                     victim_access, victim_code, victim_written_back)
            if admitted:
                insert(state, c, i)
                resident[c] = True
                used += size
                n_inserted += 1
                v = spill(state, c, i)
                while v != NO_VICTIM:
                    if v == c:
                        raise RuntimeError("a policy's spill hook evicted the tensor it has just inserted")
                    used -= _release(v, i, k, sizes, resident, dirty, upcoming, is_write, rw, record, counts,
                                     victim_access, victim_code, victim_written_back)
                    v = spill(state, c, i)
                if rw:
                    dirty[c] = write
                if write:  # produced on chip: no DRAM read
                    n_allocated += 1
                else:
                    read_bytes += size
                if record:
                    outcome[i] = INSERTED | SERVED if write else INSERTED
            elif write:  # not inserted: written straight out to DRAM
                counts[WRITE_BYTES] += size
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
    counts[PERSIST_WRITE_BYTES] = persist_bytes
    counts[HITS] = n_hits
    counts[READ_HITS] = n_read_hits
    counts[WRITE_ALLOCATIONS] = n_allocated
    counts[HIT_BYTES] = hit_bytes
    counts[READ_BYTES] = read_bytes
    counts[PEAK_BYTES] = peak
    counts[INSERTIONS] = n_inserted


# Policies defined in a module of lab run a cached driver; a policy defined elsewhere (a notebook, a test) runs
# an uncached copy: numba's disk cache cannot key compiled code on a class it cannot import again, and the
# cache stamp covers lab's files only, so an edit of its hooks would not be seen.
drive_uncached = njit(nogil=True, _nrt=False)(_drive)
_DRIVERS: dict[type, object] = {}


def driver_name(policy_cls) -> str:
    """The name of ``policy_cls``'s own copy of the loop (``_drive_basic_LRU``): numba names its cache files
    after it."""
    return f"_drive_{policy_cls.__module__.rsplit('.', 1)[-1]}_{policy_cls.__name__}"


def driver_for(policy_cls):
    """The compiled loop for a policy class: each policy defined in lab's modules has its own dispatcher (the
    same loop under its own name, so its own cache files on disk: loops compiled in parallel processes never
    write to the same index, see ``lab.sim.precompile``); others share ``drive_uncached``."""
    modules = [c.__module__ for c in policy_cls.__mro__[:-1]]  # the policy's, its parents' (not object's)
    if not all(module_file(module) for module in modules):
        return drive_uncached
    if policy_cls not in _DRIVERS:
        name = driver_name(policy_cls)
        function = types.FunctionType(_drive.__code__, _drive.__globals__, name, _drive.__defaults__,
                                      _drive.__closure__)
        function.__qualname__ = name
        function.__doc__ = _drive.__doc__
        # the loop compiles in the policy's hooks: its cache stamp covers the modules that define them (with what
        # they import) besides this one, not the other policies' files
        _DRIVERS[policy_cls] = kernel(function, _nrt=False, depends=modules)
    return _DRIVERS[policy_cls]
