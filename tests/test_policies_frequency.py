"""CLOCK, LFU, LFUDA and GDSF: victims derived by hand from the papers' rules, a small pure-Python reference
(with reads and writes, so that dead tensors are dropped through ``remove``), and libCacheSim where the registry
test (tests/test_libcachesim.py) does not reach: CLOCK's parameters, GDSF(incoming_competes=1)."""

import numpy as np
import pandas as pd
import pytest

import lab
from lab.units import BYTES_PER_MB
from tests.conftest import random_trace
from tests.libcachesim_replay import libcachesim_replay


def _unit(ids):
    return pd.DataFrame({"tensor_id": list(ids), "size_mb": 1.0})


def _victims(trace, policy, capacity_mb):
    return lab.simulate(trace, policy, capacity_mb=capacity_mb).victims()[["access", "tensor_id"]].values.tolist()


# --- by hand ---------------------------------------------------------------------------------------------


def test_clock_passes_over_a_referenced_tensor_once():
    # A B C enter with counter 0; the hit on A sets its bit. D: the hand clears A's bit and passes it (A is now
    # the newest), evicts B. E: the hand is at C (bit 0): C. F: A (its bit cleared at D): A.
    assert _victims(_unit("ABCADEF"), "CLOCK", 3) == [[4, "B"], [5, "C"], [6, "A"]]


def test_clock_counter_saturates_at_its_bits():
    # A is hit four times. One bit: its counter stops at 1, so the hand passes it once: D evicts B (A 1 -> 0),
    # E evicts C, F evicts A. Two bits: it stops at 3 and the hand passes it three times: D evicts B (A 3 -> 2),
    # E evicts C, F passes A (2 -> 1) and evicts D, G evicts E, H passes A (1 -> 0) and evicts F, I evicts G,
    # J evicts A.
    trace = _unit("ABCAAAADEFGHIJ")
    assert _victims(trace, "CLOCK", 3)[:3] == [[7, "B"], [8, "C"], [9, "A"]]
    two_bits = lab.get_policy("CLOCK", bits=2)
    assert [v for _, v in _victims(trace, two_bits, 3)] == ["B", "C", "D", "E", "F", "G", "A"]


def test_clock_initial_frequency():
    # Every tensor enters with counter 1 (bits=2): the hand clears A, B and C, comes back to A and evicts it.
    policy = lab.get_policy("CLOCK", bits=2, initial_frequency=1)
    assert _victims(_unit("ABCD"), policy, 3) == [[3, "A"]]
    # With one bit a hit leaves a counter already at the cap unchanged: B's counter stays 1 (A: 1 -> 0,
    # B: 1 -> 0, C: 1 -> 0, then A is evicted)
    assert _victims(_unit("ABCBD"), lab.get_policy("CLOCK", initial_frequency=1), 3) == [[4, "A"]]


def test_lfu_evicts_the_fewest_accesses_and_ties_by_the_oldest_count():
    # A B C, then C B A: all at 2, C reached 2 first (access 3), then B (4), then A (5). D: C. E: D (count 1).
    assert _victims(_unit("ABCCBADE"), "LFU", 3) == [[6, "C"], [7, "D"]]


def test_lfu_forgets_the_count_on_eviction():
    # Capacity 2. A A B B: both at 2, A first. C evicts A. A comes back with count 1 (not 3): it evicts C
    # (count 1, older), then D evicts A (1) rather than B (2).
    assert _victims(_unit("AABBCAD"), "LFU", 2) == [[4, "A"], [5, "C"], [6, "A"]]


def test_lfuda_ages_old_frequencies():
    # Capacity 2. A A B: keys A = 0 + 2, B = 0 + 1. C evicts B, L = 1, C = 1 + 1 = 2. D: A and C tie at 2, A's
    # key is older: A goes (plain LFU would keep A, used twice, and evict C), L = 2, D = 3. E: C (2), L = 2.
    trace = _unit("AABCDE")
    assert _victims(trace, "LFUDA", 2) == [[3, "B"], [4, "A"], [5, "C"]]
    assert _victims(trace, "LFU", 2) == [[3, "B"], [4, "C"], [5, "D"]]


def test_lfuda_a_hit_uses_the_current_age():
    # Capacity 2. A B C: C evicts A (keys 1, 1: A older), L = 1, C = 2. D evicts B (1), L = 1, D = 2.
    # C hit: C = L + 2 = 3. E evicts D (2), L = 2, E = 3. F: C and E tie at 3, C's key is older: C.
    assert _victims(_unit("ABCDCEF"), "LFUDA", 2) == [[2, "A"], [3, "B"], [5, "D"], [6, "C"]]


def test_gdsf_prefers_evicting_large_rarely_used_tensors():
    # 10 MB. A (2 MB): H = 1e6 / 2 MiB; B (8 MB): 1e6 / 8 MiB, the lowest. C (5 MB) evicts B; L = H(B),
    # C = L + 1e6 / 5 MiB, still below A. D (4 MB) evicts C; L = H(C). A, hit, is kept throughout.
    trace = pd.DataFrame({"tensor_id": list("ABCAD"), "size_mb": [2.0, 8.0, 5.0, 2.0, 4.0]})
    assert _victims(trace, "GDSF", 10) == [[2, "B"], [4, "C"]]


def test_gdsf_inflation_lets_new_tensors_outrank_old_frequent_ones():
    # Capacity 2, unit sizes (1 MiB each, so H = L + F * 1e6 / 2**20 = L + F * u). A A A: A = 3u. B = u.
    # C evicts B: L = u, C = 2u. D evicts C: L = 2u, D = 3u, equal to A, and A's is older: E evicts A.
    assert _victims(_unit("AAABCDE"), "GDSF", 2) == [[4, "B"], [5, "C"], [6, "A"]]


def test_gdsf_incoming_competes_is_an_admission_test():
    # Capacity 1: A is hit (H = 2u); B would enter with u, the lowest: not inserted, so A hits again.
    trace = _unit("AABA")
    competes = lab.get_policy("GDSF", incoming_competes=1)
    assert lab.simulate(trace, competes, 1).hit.tolist() == [False, True, False, True]
    assert lab.simulate(trace, "GDSF", 1).hit.tolist() == [False, True, False, False]


# --- a pure-Python reference, with reads and writes -------------------------------------------------------


class _Clock:
    def __init__(self, bits=1, initial_frequency=0):
        self.max, self.init, self.queue, self.counter = (1 << bits) - 1, initial_frequency, [], {}

    def hit(self, t, i, size):
        if self.counter[t] < self.max:
            self.counter[t] += 1

    def insert(self, t, i, size):
        self.queue.append(t)
        self.counter[t] = self.init

    def victim(self):
        while self.counter[self.queue[0]] >= 1:
            self.counter[self.queue[0]] -= 1
            self.queue.append(self.queue.pop(0))
        t = self.queue.pop(0)
        del self.counter[t]
        return t

    def forget(self, t):
        self.queue.remove(t)
        del self.counter[t]


class _Keyed:
    """Evict the smallest (key, time the key was set); subclasses say how keys are set."""

    def __init__(self):
        self.key, self.stamp, self.count, self.age = {}, {}, {}, 0

    def victim(self):
        t = min(self.key, key=lambda u: (self.key[u], self.stamp[u]))
        self.age = self.aged(t)
        self.forget(t)
        return t

    def aged(self, t):
        return self.age

    def forget(self, t):
        del self.key[t], self.stamp[t], self.count[t]

    def hit(self, t, i, size):
        self.count[t] += 1
        self.key[t], self.stamp[t] = self.value(t, size), i

    def insert(self, t, i, size):
        self.count[t] = 1
        self.key[t], self.stamp[t] = self.value(t, size), i


class _LFU(_Keyed):
    def value(self, t, size):
        return self.count[t]


class _LFUDA(_Keyed):
    def value(self, t, size):
        return self.age + self.count[t]

    def aged(self, t):
        return self.key[t]


class _GDSF(_Keyed):
    def value(self, t, size):
        return self.age + float(self.count[t]) * 1.0e6 / float(size)

    def aged(self, t):
        return self.key[t]


REFERENCES = {"CLOCK": _Clock, "LFU": _LFU, "LFUDA": _LFUDA, "GDSF": _GDSF}


def _reference(trace, name, capacity, **params):
    """(hits, victims) of the reference: the engine's semantics with plain hooks."""
    policy = REFERENCES[name](**params)
    ids, sizes = list(trace["tensor_id"]), np.rint(trace["size_mb"].to_numpy() * BYTES_PER_MB).astype(int)
    access = list(trace["access"]) if "access" in trace else None
    last = {t: i for i, t in enumerate(ids)}
    resident, used, hits, victims = set(), 0, [], []
    for i, (t, size) in enumerate(zip(ids, sizes)):
        write = access is not None and access[i] == "write"
        if t in resident:
            policy.hit(t, i, size)
            hits.append(True)
        else:
            hits.append(bool(write and size <= capacity))
            if size <= capacity:
                while used + size > capacity:
                    v = policy.victim()
                    resident.discard(v)
                    used -= sizes[ids.index(v)]
                    victims.append([i, v])
                policy.insert(t, i, size)
                resident.add(t)
                used += size
        if access is not None and last[t] == i and t in resident:
            policy.forget(t)
            resident.discard(t)
            used -= size
    return hits, victims


def _with_access(trace, seed):
    rng = np.random.default_rng(seed)
    first = ~trace["tensor_id"].duplicated().to_numpy()
    write = np.where(first, rng.random(len(trace)) < 0.8, rng.random(len(trace)) < 0.2)
    return trace.assign(access=np.where(write, "write", "read"))


CASES = [("CLOCK", {}), ("CLOCK", {"bits": 2}), ("CLOCK", {"bits": 3, "initial_frequency": 2}),
         ("CLOCK", {"bits": 2, "initial_frequency": 60}),  # many laps per eviction: taken at once
         ("LFU", {}), ("LFUDA", {}), ("GDSF", {})]


@pytest.mark.parametrize("name,params", CASES)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("reads_and_writes", [False, True])
def test_matches_the_reference(name, params, seed, reads_and_writes):
    unit = seed % 3 == 0
    trace = random_trace(seed, n_accesses=400, n_tensors=15 + 5 * seed, max_size_bytes=60, unit=unit,
                         zipf=1.2 if seed % 2 else None)
    if reads_and_writes:
        trace = _with_access(trace, seed)
    capacity = [3, 7, 12][seed % 3] if unit else [70, 150, 400][seed % 3]
    result = lab.simulate(trace, lab.get_policy(name, **params), capacity_mb=capacity / BYTES_PER_MB)
    hits, victims = _reference(trace, name, capacity, **params)
    assert result.victims()[["access", "tensor_id"]].values.tolist() == victims
    np.testing.assert_array_equal(result.on_chip, hits)  # the reference counts a write allocation as served


@pytest.mark.parametrize("name,params", CASES)
def test_matches_the_reference_on_many_small_traces(name, params):
    """Small buffers and few tensors: the ring, the heap, tensors waiting to enter it, stale entries and dead
    tensors all meet often."""
    policy = lab.get_policy(name, **params)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n_tensors = int(rng.integers(2, 12))
        trace = random_trace(1000 + seed, n_accesses=int(rng.integers(5, 120)), n_tensors=n_tensors,
                             max_size_bytes=20, unit=seed % 4 == 0, zipf=1.3 if seed % 2 else None)
        if seed % 3:
            trace = _with_access(trace, seed)
        capacity = int(rng.integers(1, 60))
        result = lab.simulate(trace, policy, capacity_mb=capacity / BYTES_PER_MB)
        hits, victims = _reference(trace, name, capacity, **params)
        assert result.victims()[["access", "tensor_id"]].values.tolist() == victims, seed
        np.testing.assert_array_equal(result.on_chip, hits)  # the reference counts a write allocation as served


# --- libCacheSim beyond the registry test --------------------------------------------------------------------


def _case(seed, unit):
    trace = random_trace(100 + seed, n_accesses=3000, n_tensors=50 + 40 * seed, max_size_bytes=500, unit=unit,
                         zipf=1.1 if seed % 2 else None)
    working_set = int(np.rint(trace.drop_duplicates("tensor_id")["size_mb"].sum() * BYTES_PER_MB))
    return trace, working_set


@pytest.mark.parametrize("params", [{"bits": 2}, {"bits": 3, "initial_frequency": 2}, {"initial_frequency": 1},
                                    {"bits": 2, "initial_frequency": 5}, {"bits": 9, "initial_frequency": 700}])
@pytest.mark.parametrize("unit", [True, False])
def test_clock_parameters_match_libcachesim(params, unit, tmp_path):
    policy = lab.get_policy("CLOCK", **params)
    for seed in range(2):
        trace, working_set = _case(seed, unit)
        path = lab.write_trace(trace, tmp_path / f"t{seed}.oracleGeneral.bin")
        workload = lab.encode_trace(trace)
        for fraction in (0.02, 0.1, 0.3):
            capacity = max(1, int(working_set * fraction))
            result = lab.simulate(workload, policy, capacity_mb=capacity / BYTES_PER_MB)
            hits, evictions = libcachesim_replay(path, policy, capacity, unit_sizes=unit)
            np.testing.assert_array_equal(result.on_chip, hits)  # the reference counts a write allocation as served
            np.testing.assert_array_equal(result.evictions_per_access, evictions)


def test_gdsf_incoming_competes_matches_libcachesim_with_equal_sizes(tmp_path):
    """libCacheSim 0.3.5 inserts, then evicts: an object that would be its own victim is not inserted, as
    here; the hits, the evictions and the priorities (float ties included) agree."""
    policy = lab.get_policy("GDSF", incoming_competes=1)
    for seed in range(4):
        trace, working_set = _case(seed, True)
        path = lab.write_trace(trace, tmp_path / f"t{seed}.oracleGeneral.bin")
        workload = lab.encode_trace(trace)
        for fraction in (0.02, 0.1, 0.3, 0.7):
            capacity = max(1, int(working_set * fraction))
            result = lab.simulate(workload, policy, capacity_mb=capacity / BYTES_PER_MB)
            hits, evictions = libcachesim_replay(path, policy, capacity, unit_sizes=True)
            np.testing.assert_array_equal(result.on_chip, hits)  # the reference counts a write allocation as served
            np.testing.assert_array_equal(result.evictions_per_access, evictions)


def test_parameters_go_to_libcachesim():
    assert lab.get_policy("CLOCK", bits=3, initial_frequency=2).libcachesim_params() == {
        "n_bit_counter": 3, "init_freq": 2}
    assert lab.get_policy("CLOCK").libcachesim_params() == {"n_bit_counter": 1, "init_freq": 0}
