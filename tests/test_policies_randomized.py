"""Randomized policies (BeladySize, LeCaR, LHD, Hyperbolic): seeds, victims forced by each policy's rule,
the authors' LHD replayed in pure Python with the same random numbers, and state kept consistent by ``remove``.

Agreement with libCacheSim on averaged miss ratios is in test_libcachesim.py.
"""

import numpy as np
import pandas as pd
import pytest

import lab
from lab.sim.policies import offline, randomized as rz
from lab.units import BYTES_PER_MB
from tests.conftest import random_trace

RANDOMIZED = ["BeladySize", "LeCaR", "LHD", "Hyperbolic"]


def _victims(trace, policy, capacity_mb, **params):
    return lab.simulate(trace, lab.get_policy(policy, **params), capacity_mb=capacity_mb).victims()


def _trace(ids, sizes_mb=None):
    sizes_mb = sizes_mb or {}
    return pd.DataFrame({"tensor_id": list(ids), "size_mb": [float(sizes_mb.get(t, 1.0)) for t in ids]})


# --- seeds ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", RANDOMIZED)
def test_a_seed_fixes_the_victims_and_other_seeds_change_them(policy):
    trace = random_trace(7, n_accesses=2000, n_tensors=300, max_size_bytes=400, zipf=1.1)
    capacity_mb = 6000 / BYTES_PER_MB
    params = {"n_samples": 4} if policy in ("BeladySize", "Hyperbolic") else {}
    runs = {seed: _victims(trace, policy, capacity_mb, seed=seed, **params) for seed in (0, 0, 1, 2)}
    first = _victims(trace, policy, capacity_mb, seed=0, **params)
    assert first.equals(runs[0])
    assert not runs[1].equals(first) or not runs[2].equals(first)


@pytest.mark.parametrize("policy", RANDOMIZED)
def test_randomized_policies_say_so_and_take_a_seed(policy):
    p = lab.get_policy(policy)
    assert p.randomized and p.get_params()["seed"] == 0 and p.libcachesim
    with pytest.raises(ValueError, match="seed"):
        lab.get_policy(policy, seed=-1)


# --- BeladySize ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_belady_size_weighs_the_time_to_the_next_access_by_the_size(seed):
    # 5 MB: A (1 MB, next used at 10) and B (4 MB, next used at 5) fill it; C needs room at access 2 (clock 3):
    # A scores 1 * (10 - 3) = 7, B 4 * (5 - 3) = 8: B goes, though A is needed later (plain Belady's choice)
    ids = ["A", "B", "C", "x", "y", "B", "z", "u", "v", "w", "A"]
    trace = _trace(ids, {"A": 1, "B": 4, "C": 1})
    victims = _victims(trace, "BeladySize", 5, seed=seed)
    assert victims["tensor_id"].iloc[0] == "B"
    assert lab.simulate(trace, "Belady", capacity_mb=5).victims()["tensor_id"].iloc[0] == "A"


def test_belady_size_evicts_tensors_with_no_further_use_first():
    # 3 MB: A, B, C; C is never used again and A is needed next: at D, C goes (libCacheSim never stores it)
    trace = _trace(["A", "B", "C", "D", "A", "B", "D"])
    assert _victims(trace, "BeladySize", 3)[["access", "tensor_id"]].values.tolist()[0] == [3, "C"]
    # a hit on a last use leaves the tensor to be evicted first: B's hit at 4 is its last; E needs room at 5
    trace = _trace(["A", "B", "C", "A", "B", "E", "A", "C"])
    assert _victims(trace, "BeladySize", 3)[["access", "tensor_id"]].values.tolist() == [[5, "B"]]


def test_belady_size_keeps_the_tensor_needed_next():
    # 2 MB: A is needed right after C arrives and B later: B goes, though A's size x distance is 0
    trace = _trace(["A", "B", "C", "A", "B"])
    assert _victims(trace, "BeladySize", 2)["tensor_id"].tolist()[0] == "B"


# --- LeCaR ---------------------------------------------------------------------------------------------


def _lfu_reference(codes, sizes, capacity):
    """Victims of LFU with frequency counted since insertion, ties to the least recently used."""
    freq, last, used, victims = {}, {}, 0, []
    for i, c in enumerate(codes):
        if c in freq:
            freq[c] += 1
            last[c] = i
            continue
        while used + sizes[c] > capacity:
            v = min(freq, key=lambda t: (freq[t], last[t]))
            victims.append((i, v))
            used -= sizes[v]
            del freq[v], last[v]
        freq[c] = 1
        last[c] = i
        used += sizes[c]
    return victims


@pytest.mark.parametrize("unit", [True, False])
def test_lecar_with_all_weight_on_one_expert_is_that_expert(unit):
    trace = random_trace(3, n_accesses=1500, n_tensors=120, max_size_bytes=300, zipf=1.2, unit=unit)
    capacity_mb = (25 if unit else 4000) / BYTES_PER_MB
    workload = lab.encode_trace(trace)
    lru = lab.simulate(workload, "LRU", capacity_mb)
    as_lru = lab.simulate(workload, lab.get_policy("LeCaR", lru_weight=1.0, update_weight=False), capacity_mb)
    np.testing.assert_array_equal(as_lru.victim_code, lru.victim_code)
    as_lfu = lab.simulate(workload, lab.get_policy("LeCaR", lru_weight=0.0, update_weight=False), capacity_mb)
    expected = _lfu_reference(list(workload.codes), list(workload.tensor_bytes), int(capacity_mb * BYTES_PER_MB))
    assert list(zip(as_lfu.victim_access.tolist(), as_lfu.victim_code.tolist())) == expected


def test_lecar_lfu_keeps_exact_frequencies_above_its_lists():
    # tensors hit far more than LISTED times leave the frequency lists for the heap: LFU still orders them
    rng = np.random.default_rng(5)
    hot = [f"h{k}" for k in range(6)]
    ids = []
    for step in range(3000):
        ids.append(hot[int(rng.integers(0, 6))] if step % 3 else f"c{int(rng.integers(0, 40))}")
    trace = _trace(ids)
    workload = lab.encode_trace(trace)
    result = lab.simulate(workload, lab.get_policy("LeCaR", lru_weight=0.0, update_weight=False), 5)
    expected = _lfu_reference(list(workload.codes), list(workload.tensor_bytes), 5 * BYTES_PER_MB)
    assert list(zip(result.victim_access.tolist(), result.victim_code.tolist())) == expected


def _drive(policy, trace, capacity_bytes, hooks_check=None):
    """Replay ``trace`` calling the policy's hooks from Python as the engine does (dead tensors dropped when the
    trace has reads and writes); returns the state and the set of resident codes."""
    workload = lab.encode_trace(trace)
    cls = type(policy)
    s = policy.init_state(workload, capacity_bytes)
    sizes = workload.tensor_bytes
    resident, used = set(), 0
    rw = workload.has_writes
    for i, c in enumerate(workload.codes.tolist()):
        if c in resident:
            cls.find(s, c, i, True)
        else:
            cls.find(s, c, i, False)
            if sizes[c] <= capacity_bytes:
                while used + sizes[c] > capacity_bytes:
                    v = int(cls.evict(s, c, i))
                    assert v in resident
                    resident.discard(v)
                    used -= sizes[v]
                cls.insert(s, c, i)
                resident.add(c)
                used += sizes[c]
        if rw and workload.next_use[i] < 0 and c in resident:
            cls.remove(s, c)
            resident.discard(c)
            used -= sizes[c]
        if hooks_check:
            hooks_check(s, resident)
    return s, resident


def test_lecar_penalizes_the_expert_whose_victim_comes_back():
    # 2 bytes: A, A, B; at C the LRU expert proposes A (B is more recent) and LFU proposes B (A has 2 accesses);
    # with lru_weight 1 the coin picks LRU: A goes into LRU's ghost list at access 3. A comes back at 4 (t = 1)
    # and D's eviction at 5 applies the penalty: w_lru = exp(-0.45 * d) + 1e-10 with d = 0.005 ** (1 / 2),
    # then w_lru and w_lfu (still 0.5) are renormalized
    trace = pd.DataFrame({"tensor_id": list("AABCAD"), "size_mb": 1 / BYTES_PER_MB})
    s, _ = _drive(lab.get_policy("LeCaR", lru_weight=1.0), trace, 2)
    d = 0.005 ** 0.5
    w_lru = np.exp(-0.45 * d) + 1e-10
    total = w_lru + 0.5 + 2e-10
    np.testing.assert_allclose(s.w[:2], [w_lru / total, (0.5 + 1e-10) / total], rtol=1e-12)
    # d counts the tensors in the buffer, not its bytes: tensors of 1 MiB in 2 MiB learn the same
    s, _ = _drive(lab.get_policy("LeCaR", lru_weight=1.0), trace.assign(size_mb=1.0), 2 * BYTES_PER_MB)
    np.testing.assert_allclose(s.w[:2], [w_lru / total, (0.5 + 1e-10) / total], rtol=1e-12)
    # without learning the weights stay
    s, _ = _drive(lab.get_policy("LeCaR", lru_weight=1.0, update_weight=False), trace, 2)
    np.testing.assert_array_equal(s.w[:2], [1.0, 0.5])


def test_lecar_ghost_lists_hold_half_the_buffer():
    trace = random_trace(11, n_accesses=1500, n_tensors=150, max_size_bytes=200, zipf=1.1)
    capacity = 3000

    def check(s, resident):
        for expert in (rz.LRU_GHOSTS, rz.LFU_GHOSTS):
            ghosts = np.flatnonzero(s.rows[:, rz.GHOST] == expert)
            assert not set(ghosts.tolist()) & resident
            sizes = s.aux[s.aux[rz.A_SIZES]:]
            assert sizes[ghosts].sum() == s.aux[rz.GHOST_BYTES + expert] <= capacity // 2

    _drive(lab.get_policy("LeCaR"), trace, capacity, check)


def test_lecar_update_weight_must_be_a_bool():
    with pytest.raises(ValueError, match="update_weight"):
        lab.get_policy("LeCaR", update_weight=1)


# --- LHD -----------------------------------------------------------------------------------------------

M64 = (1 << 64) - 1


class _SplitMix:
    def __init__(self, seed):
        self.state = seed

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)


def _lhd_reference(codes, sizes, capacity, seed=0):
    """The authors' LHD (before its first reconfiguration) in pure Python, drawing lab's random numbers in
    lab's order: the explorer coin at each update, then per eviction 8 candidates from the residents' slots.
    Unit-free as lab's LHD docstring says: explorers rank after every other candidate, tied among themselves
    (the authors add 1 to their density), and the explorers' budget is a float number of bytes (the authors'
    is whole bytes)."""
    f32 = np.float32
    max_age = rz.MAX_AGE
    dens = ((np.arange(16, 32)[:, None] + 1.0) / (np.arange(max_age)[None, :] + 1.0)).astype(np.float32)
    rng = _SplitMix(seed)
    slots, tags = [], {}
    clock, budget, ewma = 0, float(f32(capacity) * f32(0.01)), f32(0)
    admitted, head, used, victims = [-1] * 8, 0, 0, []

    def hit_age_class(age):
        if age == 0:
            return 15
        log = 0
        while age < max_age and log < 15:
            age <<= 1
            log += 1
        return log

    def density(t):
        age = (clock - t["ts"]) >> 10
        return -np.finfo(np.float32).max if age >= max_age - 1 else f32(dens[t["cls"], age] / f32(t["size"]))

    def rank(t):
        """(explorer, density): explorers last and tied until the oldest age, where the density is the lowest."""
        d = density(t)
        return (1, 0) if t["explorer"] and d > -np.finfo(np.float32).max else (0, d)

    def update(c, insert):
        nonlocal clock, budget, head
        if insert:
            t = tags[c] = {"last": 0, "lastlast": max_age, "size": sizes[c], "slot": len(slots)}
            slots.append(c)
        else:
            t = tags[c]
            if t["explorer"]:
                budget += t["size"]
            t["lastlast"], t["last"] = t["last"], min((clock - t["ts"]) >> 10, max_age - 1)
        t["ts"] = clock
        explore = rng.next() % 32 == 0
        t["explorer"] = explore and budget > 0
        if t["explorer"]:
            budget -= t["size"]
        t["cls"] = hit_age_class(min(t["last"] + t["lastlast"], max_age)) if t["last"] + t["lastlast"] < max_age else 0
        if insert and not explore and density(t) < ewma:
            admitted[head % 8] = c
            head += 1
        clock += 1

    def evict():
        nonlocal ewma, budget
        best, victim = (2, np.finfo(np.float32).max), None
        for _ in range(8):
            j = ((rng.next() >> 32) * len(slots)) >> 32
            r = rank(tags[slots[j]])
            if r < best:
                best, victim = r, slots[j]
        for a in admitted:
            if a in tags:
                r = rank(tags[a])
                if r < best:
                    best, victim = r, a
        ewma = f32(f32(0.9) * ewma + (f32(1) - f32(0.9)) * density(tags[victim]))
        t = tags.pop(victim)
        if t["explorer"]:
            budget += t["size"]
        last = slots.pop()
        if last != victim:
            slots[t["slot"]] = last
            tags[last]["slot"] = t["slot"]
        return victim

    for i, c in enumerate(codes):
        if c in tags:
            update(c, False)
        elif sizes[c] <= capacity:
            while used + sizes[c] > capacity:
                v = evict()
                used -= sizes[v]
                victims.append((i, v))
            update(c, True)
            used += sizes[c]
    return victims


@pytest.mark.parametrize("case", [(5000, 400, 40, True, 0), (5000, 400, 200, True, 1), (6000, 300, 20000, False, 2),
                                  (3000, 30, 1, True, 3), (3000, 30, 2, True, 4)])  # (all candidates explorers)
def test_lhd_replays_the_authors_algorithm_with_the_same_random_numbers(case):
    n_accesses, n_tensors, capacity, unit, seed = case
    trace = random_trace(seed, n_accesses=n_accesses, n_tensors=n_tensors, max_size_bytes=500, zipf=1.05, unit=unit)
    workload = lab.encode_trace(trace)
    result = lab.simulate(workload, lab.get_policy("LHD", seed=seed), capacity / BYTES_PER_MB)
    expected = _lhd_reference(workload.codes.tolist(), workload.tensor_bytes.tolist(), capacity, seed)
    assert list(zip(result.victim_access.tolist(), result.victim_code.tolist())) == expected


@pytest.mark.parametrize("seed", range(5))
def test_lhd_evicts_the_least_hit_density(seed):
    # 2 MB: A has a hit (its class's density is 32 / size) and B none (17 / size): at C, B goes
    assert _victims(_trace("AABC"), "LHD", 2, seed=seed)["tensor_id"].tolist() == ["B"]
    # neither has a hit: the larger one has the lower density per byte
    assert _victims(_trace("ABC", {"A": 1, "B": 3}), "LHD", 4, seed=seed)["tensor_id"].tolist() == ["B"]


# --- Hyperbolic ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_hyperbolic_evicts_the_fewest_accesses_per_time_in_the_buffer(seed):
    # at C (access 4): A has 3 accesses in 4 steps, B 1 in 3: B goes
    assert _victims(_trace("ABAAC"), "Hyperbolic", 2, seed=seed)["tensor_id"].tolist() == ["B"]
    # at D (access 3): A 1 access in 3 steps, B 2 in 2: A goes (unlike LFU's tie-break on age, the age counts)
    assert _victims(_trace("ABBD"), "Hyperbolic", 2, seed=seed)["tensor_id"].tolist() == ["A"]
    # the size does not count (as in libCacheSim)
    trace = _trace("ABAAC", {"A": 3, "B": 1})
    assert _victims(trace, "Hyperbolic", 4, seed=seed)["tensor_id"].tolist() == ["B"]


# --- remove: dead tensors dropped leave each state consistent -----------------------------------------------


def _with_access(trace, seed):
    rng = np.random.default_rng(seed)
    first = ~trace["tensor_id"].duplicated().to_numpy()
    write = np.where(first, rng.random(len(trace)) < 0.8, rng.random(len(trace)) < 0.2)
    return trace.assign(access=np.where(write, "write", "read"))


def _members(s):
    """The codes each policy's state holds as resident."""
    if isinstance(s, lab.get_policy("LeCaR").State):
        return set(np.flatnonzero(s.rows[:, rz.STAMP] != rz.NOT_RESIDENT).tolist())
    if isinstance(s, lab.get_policy("LHD").State):
        codes = s.slots[:s.ints[rz.N_RESIDENT], rz.S_CODE].tolist()
        assert all(s.index[c] == j for j, c in enumerate(codes))
        return set(codes)
    if isinstance(s, lab.get_policy("Hyperbolic").State):
        members = s.members[:s.count[0]].tolist()
        assert all(s.index[c] == j for j, c in enumerate(members))
        return set(members)
    members = s.pool.members[:s.pool.count[0]].tolist()
    assert all(s.pool.index[c] == j for j, c in enumerate(members))
    return set(members) | set(s.dead[:s.n_dead[0]].tolist())


@pytest.mark.parametrize("policy", RANDOMIZED)
@pytest.mark.parametrize("unit", [True, False])
def test_remove_keeps_the_state_consistent(policy, unit):
    trace = _with_access(random_trace(4, n_accesses=800, n_tensors=150, max_size_bytes=200, zipf=1.1, unit=unit), 4)
    capacity = 12 if unit else 1500

    def check(s, resident):
        assert _members(s) == resident

    _drive(lab.get_policy(policy, seed=3), trace, capacity, check)
    # and the engine agrees on every count
    result = lab.simulate(trace, lab.get_policy(policy, seed=3), capacity_mb=capacity / BYTES_PER_MB)
    m = result.metrics
    assert m["dead_drops"] > 0 and m["cache_hits"] + m["write_allocations"] + m["dram_accesses"] == len(trace)


def test_belady_size_state_is_what_its_docstring_says():
    assert offline.BeladySize.libcachesim == "BeladySize" and offline.BeladySize.offline
    assert lab.get_policy("BeladySize", n_samples=7).libcachesim_params() == {"n_samples": 7}
