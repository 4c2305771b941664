"""Policies that draw random numbers: LeCaR (a regret-weighted coin between LRU and LFU), LHD (least hit
density among sampled candidates) and Hyperbolic (least frequency per time in the buffer among samples).

Each follows libCacheSim's implementation, with its random numbers from a seeded ``structures.Rng``: lab and
libCacheSim agree on miss ratios averaged over seeds, not access by access.

How the code is laid out, for speed (measured on the 2,000,000-access benchmark trace): the hot hooks (hits
and insertions) are short inline code, and a hook that must branch (evict, remove) calls one out-of-line
kernel, which keeps the engine's loop small to compile. Each state packs what evict needs into few arrays
(written when the engine still counted references per array; kept: it is compact). The sampled policies keep
one small row of numbers per pool slot, so that scoring a sampled candidate reads one row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from lab.compiled import kernel
from lab.sim.policy import Policy, param, register
from lab.sim.structures import (NONE, SPLITMIX_GAMMA, Heap, Rng, heap_push, heap_remove, heap_update, new_heap,
                                new_rng, rng_next, rng_scale, splitmix_mix)

# Largest number of candidates a sampled policy may weigh per eviction: each eviction costs that many, so that
# a million evictions at this bound take seconds (libCacheSim's defaults are 32 to 128).
MAX_SAMPLES = 1024


# --- LeCaR -------------------------------------------------------------------------------------------
# LeCaR's evict runs out of line; its state packs what
# evict needs into few arrays, ``aux`` (int64) holding the scalars, the frequency rows, the pending ghost hits
# and the sizes at the offsets below, and ``logs`` holding the links of the frequency lists and the log of
# evictions into ghost lists; the tensors above LISTED wait in a ``structures.Heap``.

NOT_RESIDENT = -1
LRU_GHOSTS, LFU_GHOSTS = 0, 1  # the experts, and their ghost lists
STAMP, FREQ, GHOST, EVICTED = 0, 1, 2, 3  # columns of LeCaR's per-tensor rows
LISTED = 16  # frequencies 1..LISTED have lists of accesses; more frequent tensors go to a heap
OVERFLOW = LISTED + 1  # MIN_FREQ when no listed frequency has a resident; the row listing accesses above LISTED
# aux scalars: CURSOR (no LRU victim before it), MIN_FREQ, N_GHOSTED, GHOST_TAIL + expert (that list's oldest
# end in the log), GHOST_BYTES + expert (bytes in that list), N_PENDING (ghost hits not yet learnt),
# where the pending ghost hits, the sizes and the ghost log start, and N_HELD (resident tensors)
CURSOR, MIN_FREQ, N_GHOSTED, GHOST_TAIL, GHOST_BYTES, N_PENDING = 0, 1, 2, 3, 5, 7
A_PENDING, A_SIZES, A_GLOG, N_HELD = 8, 9, 10, 11
DR, HELD_THEN = 2, 3  # LeCaR.State.w after the two weights: d for the count of resident tensors HELD_THEN
BUCKETS = 16  # aux[BUCKETS + 4 * f + HEAD / TAIL / COUNT]: frequency f's list of accesses and residents
HEAD, TAIL, COUNT = 0, 1, 2
ROWS_END = BUCKETS + 4 * (OVERFLOW + 1)  # where the frequency rows end in aux (and the pending ghost hits start)


@kernel(inline="always")
def _current(rows, codes, next_use, e, i):
    """Whether access ``e`` is still the latest access of a resident tensor at access ``i``: its next access
    (known in advance) has not come yet, and its tensor is resident with that latest access."""
    nxt = next_use[e]
    if nxt >= 0 and nxt <= i:
        return False
    return rows[codes[e], STAMP] == e


@kernel(_nrt=False)
def _bucket_append(aux, logs, f, e):
    """Append access ``e`` to the list of frequency ``f`` and count one more resident there. A list with no
    resident holds only stale entries: it restarts from ``e`` (the old tail's link goes to the spare link at
    the end of the links). Branch-free, for the inline hooks."""
    b = BUCKETS + 4 * f
    n = aux[b + COUNT]
    t = aux[b + TAIL]
    h = aux[b + HEAD]
    restart = np.int64((n == 0) | (t == NONE))
    t = t + (aux[A_GLOG] - 1 - t) * restart
    h = h + (e - h) * restart
    logs[t] = e
    logs[e] = NONE
    aux[b + HEAD] = h
    aux[b + TAIL] = e
    aux[b + COUNT] = n + 1


@kernel(_nrt=False)
def _lfu_forget(rows, aux, heap, c):
    """Take resident ``c`` out of the LRU and LFU orders (its entries go stale, or it leaves the heap); keep
    MIN_FREQ the smallest listed frequency with residents (OVERFLOW when none)."""
    f = rows[c, FREQ]
    rows[c, STAMP] = NOT_RESIDENT
    if f > LISTED:
        if heap.pos[c] != NONE:
            heap_remove(heap, c)
    else:
        n = aux[BUCKETS + 4 * f + COUNT] - 1
        aux[BUCKETS + 4 * f + COUNT] = n
        m = aux[MIN_FREQ]
        if f == m and n == 0:  # the smallest frequency emptied: the next one above with residents
            g = f + 1
            while g <= LISTED and aux[BUCKETS + 4 * g + COUNT] == 0:
                g += 1
            m = g
        aux[MIN_FREQ] = m


@kernel
def _lecar_evict(rows, codes, next_use, logs, aux, heap, w, rng_state, ghost_bytes, lr, discount, learn, i):
    """The penalties of the ghost hits since the last eviction (libCacheSim's update_weight: w_E = w_E *
    exp(-lr * dr**t) + 1e-10, then both renormalized; only evictions read the weights; dr = discount ** (1 /
    the tensors resident now, the buffer being full)), LRU's and LFU's candidates, the coin between them, and
    the victim's ghost entry; returns the victim."""
    pending = aux[A_PENDING]
    held = aux[N_HELD]
    aux[N_HELD] = held - 1
    if learn and aux[N_PENDING] > 0:
        if w[HELD_THEN] != held:  # (a pow per change of the count, not per eviction)
            w[HELD_THEN] = held
            w[DR] = discount ** (1.0 / np.float64(held))
        dr = w[DR]
        for k in range(aux[N_PENDING]):
            o = aux[pending + 2 * k]
            other = 1 - o
            wk = w[o] * np.exp(-lr * dr ** np.float64(aux[pending + 2 * k + 1])) + 1e-10
            total = wk + w[other] + 2e-10
            w[other] = (w[other] + 1e-10) / total
            w[o] = wk / total
    aux[N_PENDING] = 0
    j = aux[CURSOR]
    while not _current(rows, codes, next_use, j, i):
        j += 1
    lru = codes[j]
    f = aux[MIN_FREQ]
    h = NONE
    if f <= LISTED:
        h = aux[BUCKETS + 4 * f + HEAD]
        while not _current(rows, codes, next_use, h, i):
            h = logs[h]
        lfu = codes[h]
    else:  # every resident is more frequent than LISTED: the heap's least
        b = BUCKETS + 4 * OVERFLOW
        e = aux[b + HEAD]
        while e != NONE:  # first, the tensors that came above LISTED since the last time join the heap
            t = codes[e]
            if rows[t, STAMP] != NOT_RESIDENT and rows[t, FREQ] > LISTED and heap.pos[t] == NONE:
                heap_push(heap, t, np.float64(rows[t, FREQ]), rows[t, STAMP])
            e = logs[e]
        aux[b + HEAD] = NONE
        aux[b + TAIL] = NONE
        while True:  # keys only grow, and a hit leaves a key behind: bring the top's up to date
            lfu = heap.codes[0]
            if heap.keys[0] == np.float64(rows[lfu, FREQ]) and heap.seqs[0] == rows[lfu, STAMP]:
                break
            heap_update(heap, lfu, np.float64(rows[lfu, FREQ]), rows[lfu, STAMP])
    expert = NONE
    v = lru
    if lru != lfu:
        coin = np.float64(np.int64(rng_next(rng_state) % np.uint64(100))) / 100.0
        if coin < w[0]:
            expert = LRU_GHOSTS
        else:
            expert = LFU_GHOSTS
            v = lfu
    if f <= LISTED:
        if v == lfu:  # the head of its frequency's list: pop it
            h = logs[h]
            if h == NONE:
                aux[BUCKETS + 4 * f + TAIL] = NONE
        aux[BUCKETS + 4 * f + HEAD] = h
    if v == lru:
        j += 1
    aux[CURSOR] = j
    _lfu_forget(rows, aux, heap, v)
    if expert != NONE:  # at the head of its expert's ghost list; the oldest go while over the byte limit
        glog = aux[A_GLOG]
        sizes = aux[A_SIZES]
        m = aux[N_GHOSTED]
        logs[glog + m] = (i << 32) | (v << 1) | expert
        aux[N_GHOSTED] = m + 1
        rows[v, GHOST] = expert
        rows[v, EVICTED] = i
        nbytes = aux[GHOST_BYTES + expert] + aux[sizes + v]
        t = aux[GHOST_TAIL + expert]
        while nbytes > ghost_bytes:  # an entry is current while its tensor is still that ghost
            entry = logs[glog + t]
            if (entry & 1) == expert:
                g = (entry >> 1) & 0x7FFFFFFF
                if rows[g, GHOST] == expert and rows[g, EVICTED] == (entry >> 32):
                    rows[g, GHOST] = NONE
                    nbytes -= aux[sizes + g]
            t += 1
        aux[GHOST_TAIL + expert] = t
        aux[GHOST_BYTES + expert] = nbytes
    return v


@kernel
def _lecar_remove(rows, aux, heap, c):
    aux[N_HELD] -= 1
    _lfu_forget(rows, aux, heap, c)


@register
@dataclass(frozen=True)
class LeCaR(Policy):
    """LeCaR: two experts, LRU and LFU, each proposing a victim; a coin weighted by the experts' weights picks
    one, and an evicted tensor requested again while in the evicting expert's ghost history penalizes that
    expert (regret minimization).

    Follows libCacheSim's LeCaR: LRU's victim is the least recently used
    tensor, LFU's the least frequently used (accesses since insertion; ties
    to the least recently used). When both propose the same tensor it goes
    without a coin and without a ghost entry. Else a uniform integer k < 100
    picks LRU when k / 100 < w_lru. The victim enters its expert's ghost list
    (newest first; each list keeps at most half the buffer's bytes). A miss on
    a ghost of expert E, t accesses after its eviction, sets w_E = w_E *
    exp(-learning_rate * d**t) with d = discount ** (1 / N), then
    renormalizes both weights. N is the paper's cache size in entries: the
    tensors resident at the eviction that applies the penalty (the buffer is
    full then). As in libCacheSim the initial LFU weight is 0.5 whatever
    ``lru_weight`` is (normalized at the first update); with
    ``update_weight`` False the weights never change.

    Differences from libCacheSim (libcachesim 0.3.5): libCacheSim counts N in
    bytes (the capacity), so that with tensors of many bytes d is almost 1 and
    regrets barely fade, and its decisions change with the unit of the sizes;
    with unit sizes both count the same N.

    Lab keeps the orders without linked lists of tensors: the LRU order is
    the trace itself; each access appends its position to its tensor's new
    frequency's list (frequencies up to 16; more frequent tensors wait in a
    heap by (frequency, latest access) whose keys are brought up to date only
    when they reach its top); a position is current while it is its resident
    tensor's latest access (stale ones are skipped once, most of them told by
    the trace's known next access); and the ghost lists are one log of
    evictions read from the oldest end. Accesses and tensors are counted in
    int32 (at most 2**31 - 1 of each).
    """

    name = "LeCaR"
    libcachesim = "LeCaR"
    randomized = True
    reference = ("Vietri, Rodriguez, Martinez, Lyons, Liu, Rangaswami, Zhao and Narasimhan, 'Driving cache "
                 "replacement with ML-based LeCaR', HotStorage 2018")

    update_weight: bool = field(default=True, metadata={"doc": "learn the weights from ghost hits"})
    lru_weight: float = param(0.5, low=0.0, high=1.0, doc="initial weight (probability) of the LRU expert")
    learning_rate: float = param(0.45, low=0.0, doc="lr: a ghost hit multiplies its expert's weight by "
                                 "exp(-lr * d**t)")
    discount: float = param(0.005, low=0.0, high=1.0, doc="the regret of a ghost hit t accesses after its "
                            "eviction decays as d**t, d = discount ** (1 / tensors in the buffer)")
    seed: int = param(0, low=0, integer=True)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.update_weight, (bool, np.bool_)):
            raise ValueError(f"LeCaR.update_weight must be True or False, got {self.update_weight!r}")

    class State(NamedTuple):
        rows: np.ndarray  # int64 [tensor, 4]: STAMP (latest access, or NOT_RESIDENT), FREQ, GHOST (expert or
        #                   NONE), EVICTED (access that made it a ghost)
        codes: np.ndarray  # the workload's codes: the LRU order is the trace's
        next_use: np.ndarray  # int64 per access: skips stale positions cheaply
        logs: np.ndarray  # int64: per access its link in its frequency's list, a spare, then per eviction into a
        #                   ghost list time << 32 | code << 1 | expert (from aux[A_GLOG])
        aux: np.ndarray  # int64: the scalars, the frequency rows (BUCKETS), the pending ghost
        #                  hits (expert, accesses since the eviction; from aux[A_PENDING]), the sizes (A_SIZES)
        heap: Heap  # the tensors more frequent than LISTED, by (frequency, latest access) as of their filing
        ghost_bytes: int  # each ghost list's limit in bytes
        w: np.ndarray  # float64[4]: weights of LRU, LFU; DR, d = discount ** (1 / HELD_THEN), for that count
        lr: float
        discount: float
        learn: int  # 1: learn the weights, 0: keep them
        rng: Rng

    def libcachesim_params(self):
        return {"update_weight": bool(self.update_weight), "lru_weight": self.lru_weight}

    def init_state(self, workload, capacity_bytes):
        k = workload.n_tensors
        n = workload.n_accesses
        if n >= 2**31 or k >= 2**31:
            raise ValueError(f"LeCaR counts accesses and tensors in int32: at most 2**31 - 1 of each, got {n} "
                             f"accesses of {k} tensors")
        rows = np.full((k, 4), NONE, np.int64)  # STAMP NOT_RESIDENT, GHOST NONE
        rows[:, FREQ] = 0
        pending = ROWS_END
        sizes = pending + 2 * (k + 1)
        aux = np.empty(sizes + k, np.int64)
        aux[:ROWS_END] = 0
        aux[MIN_FREQ] = 1
        aux[A_PENDING] = pending
        aux[A_SIZES] = sizes
        aux[A_GLOG] = n + 1
        aux[BUCKETS + HEAD:ROWS_END:4] = NONE
        aux[BUCKETS + TAIL:ROWS_END:4] = NONE
        aux[sizes:] = workload.tensor_bytes
        return self.State(
            rows, workload.codes, workload.next_use, np.empty(2 * n + 1, np.int64), aux, new_heap(k),
            int(capacity_bytes) // 2,
            np.array([self.lru_weight, 0.5, 0.0, 0.0]), float(self.learning_rate), float(self.discount),
            int(bool(self.update_weight)), new_rng(self.seed))

    # find and insert are straight-line code (kept inline); evict branches (out of line)
    @staticmethod
    def find(s, c, i, hit):
        rows = s.rows
        aux = s.aux
        if hit:  # latest access i, one more access: into the next frequency's list
            f = rows[c, FREQ]
            g = f + 1
            rows[c, STAMP] = i
            rows[c, FREQ] = g
            fr = BUCKETS + 4 * min(f, OVERFLOW) + COUNT
            gr = min(g, OVERFLOW)
            n = aux[fr] - 1
            aux[fr] = n
            _bucket_append(aux, s.logs, gr, i)
            m = aux[MIN_FREQ]
            aux[MIN_FREQ] = m + (gr - m) * np.int64((m == f) & (n == 0) & (f <= LISTED))
        else:  # a ghost comes back: it leaves its list, and its expert's penalty waits for the next eviction
            o = rows[c, GHOST]
            ghost = np.int64(o != NONE)
            n = aux[N_PENDING]
            p = aux[A_PENDING] + 2 * n
            aux[p] = o
            aux[p + 1] = i - rows[c, EVICTED]
            aux[N_PENDING] = n + ghost
            rows[c, GHOST] = NONE
            aux[GHOST_BYTES + max(o, 0)] -= aux[aux[A_SIZES] + c] * ghost
        return NONE

    @staticmethod
    def insert(s, c, i):
        s.rows[c, STAMP] = i
        s.rows[c, FREQ] = 1
        _bucket_append(s.aux, s.logs, 1, i)
        s.aux[MIN_FREQ] = 1
        s.aux[N_HELD] += 1

    @staticmethod
    def evict(s, c, i):
        return _lecar_evict(s.rows, s.codes, s.next_use, s.logs, s.aux, s.heap, s.w, s.rng.state, s.ghost_bytes,
                            s.lr, s.discount, s.learn, i)

    @staticmethod
    def remove(s, c):
        _lecar_remove(s.rows, s.aux, s.heap, c)


# --- LHD ---------------------------------------------------------------------------------------------

MAX_AGE = 20000  # coarsened ages 0..MAX_AGE-1
HIT_AGE_CLASSES = 16
APP_CLASS = 1  # libCacheSim's one application id (DEFAULT_APP_ID): classes 16..31 of the authors' 256
ACCS_PER_RECONFIGURATION = 1 << 20
EXPLORE_INVERSE_PROBABILITY = 32
EARLY_CANDIDATES = 8  # candidates sampled until 50 reconfigurations (the authors' shorter warm-up)
FLT_MAX = np.float32(np.finfo(np.float32).max)
# An explorer's rank: above every density (at most 32 hits per byte and unit of time, with sizes of a byte or
# more), whatever the unit of the sizes; the authors add 1 to its density instead, a constant in that unit.
EXPLORER_RANK = np.float32(2.0**100)
DECAY = np.float32(0.9)  # EWMA_DECAY
# LHD's evict runs out of line; its state is three arrays.
# LHD.slots (int32) [row, 5]: per slot the resident's last access time, code, last two hit ages (LAST |
# LAST_LAST << 16) and class (CLS | EXPLORER << 4), the authors' Tag (16 bytes a row: the sampled rows stay in
# the core's cache); LHD.index (int32) per tensor its slot, NONE when not resident
S_TS, S_CODE, S_AGES, S_META = range(4)
# LHD.ints: scalar integer state, then the ring of recently admitted codes (from ADMITTED, N_ADMIT long)
TIMESTAMP, NEXT_RECONF, N_RECONF, SHIFT, ADMIT_HEAD, N_RESIDENT, N_ADMIT = range(7)
ADMITTED = 7
# LHD.budget (float64[1]): the explorers' budget, bytes: 1 % of the buffer less the explorers' sizes
# LHD.tables (float32, flat): per class and age the hit density, decayed hits and evictions, the float scalars,
# then from F_SIZES each slot's size (the authors keep it as a float)
TABLE = HIT_AGE_CLASSES * MAX_AGE
T_DENSITY, T_HITS, T_EVICTIONS = 0, TABLE, 2 * TABLE
T_EWMA_VICTIM, T_EWMA_OBJECTS, T_EWMA_MASS, T_N_RECONF, T_N_RESIDENT, T_SHIFT = range(3 * TABLE, 3 * TABLE + 6)
F_SIZES = 3 * TABLE + 8
MAX_LHD_ACCESSES = 2**31 - 1  # times are int32


def _hit_age_classes() -> np.ndarray:
    """hitAgeClass(age) for age 0..MAX_AGE (all larger ages are class 0): about log2(MAX_AGE / age), at most 15."""
    table = np.zeros(MAX_AGE + 1, np.int32)
    for age in range(MAX_AGE + 1):
        if age == 0:
            table[age] = HIT_AGE_CLASSES - 1
            continue
        a = age
        log = 0
        while a < MAX_AGE and log < HIT_AGE_CLASSES - 1:
            a <<= 1
            log += 1
        table[age] = log
    return table


HIT_AGE_CLASS = _hit_age_classes()


@kernel(_nrt=False)
def _lhd_age(slots, j, timestamp, shift):
    """Coarsened age of the resident in slot ``j``, at most MAX_AGE - 1 (the authors' getAge)."""
    age = (timestamp - np.int64(slots[j, S_TS])) >> shift
    if age >= MAX_AGE:
        age = MAX_AGE - 1
    return age


@kernel(_nrt=False)
def _lhd_density(slots, tables, j, age):
    """Hit density of the resident in slot ``j`` at coarsened ``age`` (below the oldest age): its class's density
    at that age over its size (the authors' getHitDensity without its explorer bonus)."""
    return tables[T_DENSITY + (slots[j, S_META] & 15) * MAX_AGE + age] / tables[F_SIZES + j]


@kernel(_nrt=False)
def _lhd_rank(slots, tables, j, timestamp, shift):
    """The rank of the resident in slot ``j`` among eviction candidates (the least goes): its density, the
    lowest float at the oldest age, and for an explorer younger than that EXPLORER_RANK (its density added
    rounds away)."""
    age = (timestamp - np.int64(slots[j, S_TS])) >> shift
    if age >= MAX_AGE - 1:
        return -FLT_MAX
    meta = slots[j, S_META]
    d = tables[T_DENSITY + (meta & 15) * MAX_AGE + age] / tables[F_SIZES + j]
    if meta >= 16:
        d = d + EXPLORER_RANK
    return d


@kernel
def _lhd_reconfigure(tables):
    """The authors' reconfigure(): decay the hit and eviction counts, retune the age coarsening (at the 6th
    and 26th reconfiguration), and recompute every class's hit density per age."""
    for k in range(T_HITS, T_EVICTIONS + TABLE):
        tables[k] *= DECAY
    # adaptAgeCoarsening
    objects = tables[T_EWMA_OBJECTS] * DECAY + tables[T_N_RESIDENT]
    mass = tables[T_EWMA_MASS] * DECAY + np.float32(1.0)
    n_reconf = np.int64(tables[T_N_RECONF])
    if n_reconf == 5 or n_reconf == 25:
        optimal = np.float32(objects / mass) / np.float32(np.float32(0.01) * np.float32(MAX_AGE))
        log2 = 1
        while np.float32(1 << log2) < optimal:
            log2 += 1
        delta = log2 - np.int64(tables[T_SHIFT])
        tables[T_SHIFT] = log2
        objects = objects * np.float32(8.0)
        mass = mass * np.float32(8.0)
        for cl in range(HIT_AGE_CLASSES):
            for base in (T_HITS + cl * MAX_AGE, T_EVICTIONS + cl * MAX_AGE):
                if delta < 0:  # stretch
                    d = -delta
                    for a in range(MAX_AGE >> d, MAX_AGE - 1):
                        tables[base + MAX_AGE - 1] += tables[base + a]
                    scale = np.float32(1 << d)
                    for a in range(MAX_AGE - 2, -1, -1):
                        tables[base + a] = tables[base + (a >> d)] / scale
                elif delta > 0:  # compress
                    for a in range(MAX_AGE >> delta):
                        h = tables[base + (a << delta)]
                        for k in range(1, 1 << delta):
                            h += tables[base + (a << delta) + k]
                        tables[base + a] = h
                    for a in range(MAX_AGE >> delta, MAX_AGE - 1):
                        tables[base + a] = 0
    tables[T_EWMA_OBJECTS] = objects
    tables[T_EWMA_MASS] = mass
    # modelHitDensity
    for cl in range(HIT_AGE_CLASSES):
        h0 = T_HITS + cl * MAX_AGE
        e0 = T_EVICTIONS + cl * MAX_AGE
        d0 = T_DENSITY + cl * MAX_AGE
        events = tables[h0 + MAX_AGE - 1] + tables[e0 + MAX_AGE - 1]
        total_hits = tables[h0 + MAX_AGE - 1]
        lifetime = events
        for a in range(MAX_AGE - 2, -1, -1):
            total_hits += tables[h0 + a]
            events += tables[h0 + a] + tables[e0 + a]
            lifetime += events
            if events > np.float32(1e-5):
                tables[d0 + a] = total_hits / lifetime
            else:
                tables[d0 + a] = np.float32(0.0)


@kernel(_nrt=False)
def _lhd_tag(slots, ints, budget, age_class, rng_state, j, size, last, last_last, available):
    """The end of the authors' LHD::update for the resident in slot ``j`` (of ``size`` bytes, float64): the
    explorer coin (an explorer while the budget, ``available`` bytes, is positive), its time, hit ages and
    class, and the clock. Straight-line code (an inline hook). Returns the coin (1 when it came up)."""
    timestamp = ints[TIMESTAMP]
    explore = np.int64((rng_next(rng_state) % np.uint64(EXPLORE_INVERSE_PROBABILITY)) == np.uint64(0))
    explorer = explore * np.int64(available > 0) * np.int64(ints[N_RECONF] < 50)
    slots[j, S_TS] = timestamp
    slots[j, S_AGES] = last | (last_last << 16)
    slots[j, S_META] = age_class[min(last + last_last, MAX_AGE)] | (explorer << 4)
    budget[0] = available - size * explorer
    ints[TIMESTAMP] = timestamp + 1
    ints[NEXT_RECONF] -= 1
    return explore


@kernel(_nrt=False)
def _lhd_forget(slots, index, tables, ints, budget, j):
    """Drop the resident in slot ``j`` (the authors' replaced(), without its statistics): the last slot moves
    into its place, and an explorer's bytes return to the explorer budget."""
    if slots[j, S_META] >= 16:
        budget[0] += np.float64(tables[F_SIZES + j])
    index[slots[j, S_CODE]] = NONE
    last = ints[N_RESIDENT] - 1
    if j != last:
        moved = slots[last, S_CODE]
        for col in range(S_META + 1):
            slots[j, col] = slots[last, col]
        tables[F_SIZES + j] = tables[F_SIZES + last]
        index[moved] = j
    ints[N_RESIDENT] = last


@kernel
def _lhd_evict(slots, index, tables, ints, budget, rng_state, associativity):
    """The authors' LHD::rank then replaced(): the least dense of the sampled candidates and the recently
    admitted, explorers last; returns it. First the reconfigurations due (every ACCS_PER_RECONFIGURATION
    updates)."""
    while ints[NEXT_RECONF] <= 0:
        tables[T_N_RECONF] = ints[N_RECONF]
        tables[T_N_RESIDENT] = ints[N_RESIDENT]
        tables[T_SHIFT] = ints[SHIFT]
        _lhd_reconfigure(tables)
        ints[SHIFT] = np.int64(tables[T_SHIFT])
        ints[N_RECONF] += 1
        ints[NEXT_RECONF] += ACCS_PER_RECONFIGURATION
    timestamp = ints[TIMESTAMP]
    shift = ints[SHIFT]
    n = np.uint64(ints[N_RESIDENT])
    candidates = EARLY_CANDIDATES
    if ints[N_RECONF] > 50:
        candidates = associativity
    state = rng_state[0]
    best_j = np.int64(0)
    best = FLT_MAX
    for _ in range(candidates):
        state = state + SPLITMIX_GAMMA
        j = rng_scale(splitmix_mix(state), n)
        d = _lhd_rank(slots, tables, j, timestamp, shift)
        if d < best:
            best = d
            best_j = j
    for k in range(ADMITTED, ADMITTED + ints[N_ADMIT]):
        a = ints[k]
        if a != NONE:
            j = np.int64(index[a])
            if j != NONE:
                d = _lhd_rank(slots, tables, j, timestamp, shift)
                if d < best:
                    best = d
                    best_j = j
    rng_state[0] = state
    if best >= EXPLORER_RANK:  # every candidate an explorer: the running mean takes the victim's density
        best = _lhd_density(slots, tables, best_j, _lhd_age(slots, best_j, timestamp, shift))
    tables[T_EWMA_VICTIM] = DECAY * tables[T_EWMA_VICTIM] + (np.float32(1.0) - DECAY) * best
    meta = slots[best_j, S_META]
    tables[T_EVICTIONS + (meta & 15) * MAX_AGE + _lhd_age(slots, best_j, timestamp, shift)] += np.float32(1.0)
    v = np.int64(slots[best_j, S_CODE])
    _lhd_forget(slots, index, tables, ints, budget, best_j)
    return v


@kernel
def _lhd_remove(slots, index, tables, ints, budget, c):
    _lhd_forget(slots, index, tables, ints, budget, np.int64(index[c]))


@register
@dataclass(frozen=True)
class LHD(Policy):
    """LHD, least hit density: evict, among a few sampled candidates and the recently admitted tensors that
    looked unpromising, the one with the lowest expected hits per byte per unit of time in the buffer.

    Follows the authors' code as libCacheSim wraps it. Each tensor belongs to
    a class by its last two hit ages (about log2 of MAX_AGE over their sum,
    16 classes); its hit density is its class's density at its coarsened age
    ((updates since its last access) >> shift) over its size. Densities start
    as GDSF-like (class + 1) / (age + 1) and are recomputed from decayed
    per-class counts of hits and evictions at each age every 2**20 updates
    (hits and insertions; lab runs a reconfiguration that fell due at the next
    eviction, a few hits later than the authors); the coarsening shift
    (initially 10) is retuned at
    the 6th and 26th reconfiguration to about (tensors / (0.01 * MAX_AGE)).
    An eviction samples 8 residents uniformly with replacement
    (``associativity`` once 50 reconfigurations have passed) and also weighs
    the last ``admissions`` insertions whose density was below the running
    mean of victims' densities; the first of equal densities wins. With
    probability 1/32 an access makes its tensor an explorer while explorers
    hold under 1% of the buffer and fewer than 50 reconfigurations passed; an
    explorer ranks after every other candidate until it reaches the oldest
    age (the authors' "space allocated to objects that aren't evicted"), tied
    among themselves. Times are counted in int32: traces of up to 2**31 - 1
    accesses.

    Differences from the authors' code and libCacheSim (libcachesim 0.3.5):
    they add 1 to an explorer's density, hits per byte per unit of time, and
    keep the explorers' budget in whole bytes (1 % of the buffer, rounded
    down): constants in the unit of the sizes, so that their decisions change
    with it (with sizes in bytes over 32 an explorer comes after every other
    candidate, as here; with unit sizes it can lose to a dense small one).
    Lab ranks explorers last and keeps the budget as a float64 number of bytes:
    the same decisions whatever the unit of the sizes. A victim's density in
    the running mean is its density without the explorer's 1.
    """

    name = "LHD"
    libcachesim = "LHD"
    randomized = True
    reference = ("Beckmann, Chen and Cidon, 'LHD: Improving cache hit rate by maximizing hit density', "
                 "NSDI 2018")

    associativity: int = param(32, low=1, high=MAX_SAMPLES, integer=True,
                               doc="candidates sampled per eviction after the warm-up (each costs time per eviction)")
    admissions: int = param(8, low=1, high=MAX_SAMPLES, integer=True,
                            doc="recently admitted unpromising tensors also weighed (each costs time per eviction)")
    seed: int = param(0, low=0, integer=True)

    class State(NamedTuple):
        slots: np.ndarray  # int32 [k, 4]: S_TS, S_CODE, S_AGES, S_META per slot
        index: np.ndarray  # int32 per tensor: its slot, NONE when not resident
        tables: np.ndarray  # float32: T_DENSITY, T_HITS, T_EVICTIONS per class and age, float scalars, F_SIZES
        ints: np.ndarray  # int64: TIMESTAMP, NEXT_RECONF, N_RECONF, SHIFT, ADMIT_HEAD, N_RESIDENT, N_ADMIT, then
        #                   the ring of recently admitted codes (NONE: empty)
        budget: np.ndarray  # float64[1]: the explorers' budget in bytes
        age_class: np.ndarray  # int32: hitAgeClass of a hit-age sum 0..MAX_AGE
        sizes: np.ndarray  # int64 per tensor
        rng: Rng
        associativity: int

    def libcachesim_params(self):
        return {}  # libCacheSim's LHD takes no parameters: associativity 32, admissions 8

    def init_state(self, workload, capacity_bytes):
        if workload.n_accesses > MAX_LHD_ACCESSES:
            raise ValueError(f"LHD counts time in int32: at most {MAX_LHD_ACCESSES} accesses, "
                             f"got {workload.n_accesses}")
        k = workload.n_tensors
        first = HIT_AGE_CLASSES * APP_CLASS
        tables = np.zeros(F_SIZES + k, np.float32)
        tables[T_DENSITY:T_DENSITY + TABLE] = (
            (np.arange(first, first + HIT_AGE_CLASSES, dtype=np.float64)[:, None] + 1.0)
            / (np.arange(MAX_AGE, dtype=np.float64)[None, :] + 1.0)).ravel()
        ints = np.full(ADMITTED + self.admissions, NONE, np.int64)
        ints[:ADMITTED] = 0
        ints[NEXT_RECONF] = ACCS_PER_RECONFIGURATION
        ints[SHIFT] = 10
        ints[N_ADMIT] = self.admissions
        # the authors' float32 arithmetic, not rounded down to whole bytes
        budget = np.array([np.float32(capacity_bytes) * np.float32(0.01)], np.float64)
        slots = np.empty((k, 4), np.int32)
        return self.State(slots, np.full(k, NONE, np.int32), tables, ints, budget, HIT_AGE_CLASS,
                          workload.tensor_bytes, new_rng(self.seed), self.associativity)

    # find and insert are straight-line code (kept inline); evict branches (out of line)
    @staticmethod
    def find(s, c, i, hit):
        if hit:  # the authors' LHD::update for a hit: a hit at its age counts for its class
            slots = s.slots
            tables = s.tables
            ints = s.ints
            j = np.int64(s.index[c])
            age = min((ints[TIMESTAMP] - np.int64(slots[j, S_TS])) >> ints[SHIFT], MAX_AGE - 1)
            meta = slots[j, S_META]
            tables[T_HITS + (meta & 15) * MAX_AGE + age] += np.float32(1.0)
            size = np.float64(tables[F_SIZES + j])
            available = s.budget[0] + size * np.float64(meta >= 16)  # an explorer's bytes return to the budget
            _lhd_tag(slots, ints, s.budget, s.age_class, s.rng.state, j, size, age,
                     np.int64(slots[j, S_AGES] & 0xFFFF), available)
        return NONE

    @staticmethod
    def insert(s, c, i):  # the authors' LHD::update for an insertion, into the next slot
        slots = s.slots
        tables = s.tables
        ints = s.ints
        j = ints[N_RESIDENT]
        ints[N_RESIDENT] = j + 1
        s.index[c] = j
        slots[j, S_CODE] = c
        tables[F_SIZES + j] = np.float32(s.sizes[c])  # the authors keep sizes as floats
        explore = _lhd_tag(slots, ints, s.budget, s.age_class, s.rng.state, j, np.float64(tables[F_SIZES + j]), 0,
                           MAX_AGE, s.budget[0])
        # unless the coin came up, it joins the recently admitted if its density (class 0, age 0) is below the
        # running mean of the victims'
        join = (1 - explore) * np.int64(tables[T_DENSITY] / tables[F_SIZES + j] < tables[T_EWMA_VICTIM])
        head = ints[ADMIT_HEAD]
        k = ADMITTED + head % ints[N_ADMIT]
        ints[k] = ints[k] + (c - ints[k]) * join
        ints[ADMIT_HEAD] = head + join

    @staticmethod
    def evict(s, c, i):
        return _lhd_evict(s.slots, s.index, s.tables, s.ints, s.budget, s.rng.state, s.associativity)

    @staticmethod
    def remove(s, c):
        _lhd_remove(s.slots, s.index, s.tables, s.ints, s.budget, c)


# --- Hyperbolic ----------------------------------------------------------------------------------------

# Hyperbolic's residents fill the first count[0] slots; per slot one int64 packs what a sample reads, the
# resident's accesses since insertion (high 32 bits) and its insertion (low 32 bits), so that the sampled
# rows take 8 bytes each and stay in the core's cache; members (slot -> code) and index (code -> slot) apart.
HITS_SHIFT = np.int64(32)
ONE_HIT = np.int64(1) << HITS_SHIFT
ENTERED_MASK = np.int64(0xFFFFFFFF)


@kernel
def _hyperbolic_evict(packs, members, index, count, rng_state, n_samples, i):
    """The fewest accesses per unit of time in the buffer among ``n_samples`` sampled residents (two samples
    per 64 random bits); returns it, the last slot taking its place."""
    n = np.uint64(count[0])
    best_j = np.int64(0)
    best_freq = np.int64(1)
    best_age = np.int64(0)  # no candidate yet: any beats 1 / 0
    state = rng_state[0]
    for k in range(0, n_samples, 2):  # two samples per 64 random bits
        state = state + SPLITMIX_GAMMA
        bits = splitmix_mix(state)
        j = rng_scale(bits, n)
        p = packs[j]
        f = p >> HITS_SHIFT
        age = i - (p & ENTERED_MASK)
        better = f * best_age < best_freq * age  # f / age < best_freq / best_age
        best_j = j if better else best_j
        best_freq = f if better else best_freq
        best_age = age if better else best_age
        if k + 1 < n_samples:
            j = rng_scale(bits << np.uint64(32), n)
            p = packs[j]
            f = p >> HITS_SHIFT
            age = i - (p & ENTERED_MASK)
            better = f * best_age < best_freq * age
            best_j = j if better else best_j
            best_freq = f if better else best_freq
            best_age = age if better else best_age
    rng_state[0] = state
    v = np.int64(members[best_j])
    _hyperbolic_forget(packs, members, index, count, v)
    return v


@kernel(_nrt=False)
def _hyperbolic_forget(packs, members, index, count, c):
    j = index[c]
    last = count[0] - 1
    moved = members[last]
    packs[j] = packs[last]
    members[j] = moved
    index[moved] = j
    index[c] = NONE
    count[0] = last


@kernel
def _hyperbolic_remove(packs, members, index, count, c):
    _hyperbolic_forget(packs, members, index, count, c)


@register
@dataclass(frozen=True)
class Hyperbolic(Policy):
    """Hyperbolic caching: evict, among ``n_samples`` residents drawn uniformly at random with replacement, the
    one with the fewest accesses per unit of time in the buffer, n / (t - t0).

    Follows libCacheSim's Hyperbolic: n counts accesses since insertion (1 at
    insertion), t0 is the insertion (hits do not reset it), time counts
    accesses, and the score ignores the size (libCacheSim's score is 1e8 * n /
    age; lab compares n1 * age2 < n2 * age1, the same order without
    rounding). The first sampled of equal scores wins. libCacheSim samples a
    random bucket of a hash table of 2**16 buckets until one is non-empty and
    takes the first object in it, so with many residents (and collisions) its
    samples are not quite uniform; lab samples uniformly. Times are counted in
    int32: traces of up to 2**31 - 1 accesses.
    """

    name = "Hyperbolic"
    libcachesim = "Hyperbolic"
    randomized = True
    reference = ("Blankstein, Sen and Freedman, 'Hyperbolic caching: flexible caching for web applications', "
                 "USENIX ATC 2017")

    n_samples: int = param(64, low=1, high=MAX_SAMPLES, integer=True,
                           doc="residents sampled (with replacement) per eviction (each costs time per eviction)")
    seed: int = param(0, low=0, integer=True)

    class State(NamedTuple):
        packs: np.ndarray  # int64 per slot: accesses since insertion << 32 | insertion
        members: np.ndarray  # int64 per slot: its resident's code
        index: np.ndarray  # int64 per tensor: its slot, NONE when not resident
        count: np.ndarray  # int64[1]: residents (the first slots)
        rng: Rng
        n_samples: int

    def libcachesim_params(self):
        return {}  # libCacheSim's Hyperbolic takes no parameters: 64 samples

    def init_state(self, workload, capacity_bytes):
        if workload.n_accesses >= 2**31:
            raise ValueError(f"Hyperbolic counts time in int32: at most 2**31 - 1 accesses, got {workload.n_accesses}")
        k = workload.n_tensors
        return self.State(np.zeros(k, np.int64), np.zeros(k, np.int64), np.full(k, NONE, np.int64),
                          np.zeros(1, np.int64), new_rng(self.seed), self.n_samples)

    @staticmethod
    def find(s, c, i, hit):
        if hit:
            s.packs[s.index[c]] += ONE_HIT
        return NONE

    @staticmethod
    def insert(s, c, i):
        j = s.count[0]
        s.count[0] = j + 1
        s.packs[j] = ONE_HIT | i
        s.members[j] = c
        s.index[c] = j

    @staticmethod
    def evict(s, c, i):
        return _hyperbolic_evict(s.packs, s.members, s.index, s.count, s.rng.state, s.n_samples, i)

    @staticmethod
    def remove(s, c):
        _hyperbolic_remove(s.packs, s.members, s.index, s.count, c)
