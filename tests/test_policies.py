"""Every policy checked against references: miss for miss, eviction for eviction; plus invariants."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lab
from lab.kernels import simulate_buffer
from lab.policies import AgeOrdered, Policy, get_policy, policy_names, register
from lab.units import BYTES_PER_MB
from tests.conftest import random_trace
from tests.libcachesim_replay import libcachesim_replay
from tests.reference import reference_simulate, reference_simulate_rw

ALL_POLICIES = policy_names()


def _reference(trace, policy, capacity_bytes):
    sizes = np.rint(trace["size_mb"].to_numpy() * BYTES_PER_MB).astype(int)
    return reference_simulate(
        list(trace["tensor_id"]), list(sizes), capacity_bytes, policy, list(trace["eviction_score"])
    )


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("seed", range(12))
def test_matches_pure_python_reference(policy, seed):
    unit = seed % 3 == 0
    trace = random_trace(seed, n_accesses=300, n_tensors=10 + 3 * seed, unit=unit, zipf=1.3 if seed % 2 else None)
    capacity_bytes = [5, 40, 150, 400][seed % 4] if not unit else [2, 5, 9, 17][seed % 4]
    result = lab.simulate(trace, policy, capacity_mb=capacity_bytes / BYTES_PER_MB)
    hits, evictions, victims = _reference(trace, policy, capacity_bytes)
    np.testing.assert_array_equal(result.hit, hits)
    np.testing.assert_array_equal(result.evictions_per_access, evictions)
    got_victims = list(result.victims()[["access", "tensor_id"]].itertuples(index=False, name=None))
    assert got_victims == victims


@pytest.mark.parametrize("policy", ["LRU", "FIFO", "Belady"])
@pytest.mark.parametrize("seed", range(10))
def test_matches_libcachesim(policy, seed, tmp_path):
    unit = policy == "Belady"  # libCacheSim's Belady is the optimum for equal sizes only
    trace = random_trace(
        100 + seed, n_accesses=3000, n_tensors=50 + 40 * seed, max_size_bytes=500, unit=unit,
        zipf=1.1 if seed % 2 else None,
    )
    path = lab.write_trace(trace, tmp_path / "t.oracleGeneral.bin")
    working_set = int(np.rint(trace.drop_duplicates("tensor_id")["size_mb"].sum() * BYTES_PER_MB))
    for fraction in (0.02, 0.1, 0.3, 0.7):
        capacity_bytes = max(1, int(working_set * fraction))
        result = lab.simulate(trace, policy, capacity_mb=capacity_bytes / BYTES_PER_MB)
        hits, evictions = libcachesim_replay(path, policy, capacity_bytes, unit_sizes=unit)
        assert result.metrics["dram_accesses"] == int((~hits).sum())
        np.testing.assert_array_equal(result.hit, hits)
        np.testing.assert_array_equal(result.evictions_per_access, evictions)


def test_tensors_larger_than_capacity_are_never_inserted():
    trace = pd.DataFrame({"tensor_id": ["big", "a", "big", "a"], "size_mb": [100.0, 1.0, 100.0, 1.0]})
    for policy in ALL_POLICIES:
        result = lab.simulate(trace.assign(eviction_score=0.5), policy, capacity_mb=10)
        assert result.hit.tolist() == [False, False, False, True]
        assert result.metrics["evictions"] == 0
        assert result.metrics["uncacheable_accesses"] == 2
        assert result.resident_bytes.tolist() == [0, BYTES_PER_MB, BYTES_PER_MB, BYTES_PER_MB]


def test_queue_and_heap_give_the_same_lru_and_fifo():
    """The O(1) queue is only a faster heap: the same order gives the same run."""
    trace = random_trace(7, n_accesses=2000, n_tensors=120)
    enc = lab.encode_trace(trace)
    newest_last = -np.arange(enc.n_accesses, dtype=np.float64)
    for refresh in (True, False):
        for capacity in (50, 500, 3000):
            no_rw = (np.empty(0, np.bool_), np.empty(0, np.int64))
            queue = simulate_buffer(enc.codes, enc.tensor_bytes, capacity, True, refresh, np.empty(0), *no_rw)
            heap = simulate_buffer(enc.codes, enc.tensor_bytes, capacity, False, refresh, newest_last, *no_rw)
            for a, b in zip(queue, heap):
                np.testing.assert_array_equal(a, b)


def test_ml_ties_go_to_the_earliest_inserted_and_scores_follow_the_latest_access():
    trace = pd.DataFrame(
        {
            "tensor_id": ["A", "B", "C", "A", "D", "E"],
            "size_mb": [1.0] * 6,
            "eviction_score": [0.5, 0.5, 0.5, 0.1, 0.5, 0.9],
        }
    )
    result = lab.simulate(trace, "ML", capacity_mb=3)
    # D: A now scores 0.1, B and C tie at 0.5 -> B (inserted first). E: C, D tie at 0.5 -> C.
    assert result.victims()["tensor_id"].tolist() == ["B", "C"]


def test_belady_evicts_the_furthest_next_use():
    trace = pd.DataFrame({"tensor_id": list("ABCADB"), "size_mb": [1.0] * 6})
    result = lab.simulate(trace, "OPT", capacity_mb=2)
    # at C: A is next used at 3, B at 5 -> B. At D and at B: nothing is used again, so the
    # earliest inserted goes first (A, then C).
    assert result.victims()[["access", "tensor_id"]].values.tolist() == [[2, "B"], [4, "A"], [5, "C"]]


@pytest.mark.parametrize("name", ["lru", "Fifo", "ml", "belady", "opt", "MIN"])
def test_names_are_case_insensitive_and_aliases_resolve(name):
    assert get_policy(name).name.lower() in {"lru", "fifo", "ml", "belady"}


def test_unknown_policy_lists_the_known_ones(small_trace):
    with pytest.raises(ValueError, match=r"unknown policy 'LFU'.*LRU.*FIFO.*ML.*Belady.*OPT"):
        lab.simulate(small_trace, "LFU")


def test_a_new_policy_is_one_class_and_one_registry_line(small_trace):
    @register
    class MRU(AgeOrdered):
        name = "TestMRU"

    class LargestFirst(Policy):
        name = "LargestFirst"

        def priority(self, trace, encoded):
            return encoded.access_bytes.astype(float)

    try:
        assert lab.simulate(small_trace, "testmru", capacity_mb=20).policy == "TestMRU"
        result = lab.simulate(small_trace, LargestFirst(), capacity_mb=40)
        # D (32 MB) needs room: C (16 MB) goes first, then B (8 MB)
        assert result.victims()["tensor_id"].tolist()[:2] == ["C", "B"]
    finally:
        from lab import policies

        policies._REGISTRY.pop("testmru")


# --- contract suite: every registered policy -------------------------------------------------


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("reads_and_writes", [False, True])
def test_contract(policy, seed, reads_and_writes):
    trace = random_trace(seed, n_accesses=1500, n_tensors=200, max_size_bytes=300, zipf=1.2)
    if reads_and_writes:
        trace = _with_access(trace, seed)
    capacity_bytes = 2000 + 1500 * seed
    result = lab.simulate(trace, policy, capacity_mb=capacity_bytes / BYTES_PER_MB)
    m = result.metrics
    assert m["cache_hits"] + m["dram_accesses"] == m["accesses"] == len(trace)
    assert result.resident_bytes.max() <= capacity_bytes
    assert m["evictions"] == result.evictions_per_access.sum() == len(result.victims())
    assert not result.evictions_per_access[~result.inserted].any(), "only an insertion evicts"
    first = ~trace["tensor_id"].duplicated().to_numpy()
    reads = ~result.is_write
    assert not result.hit[first & reads].any(), "a first read is always a miss"
    assert m["compulsory_misses"] == first.sum()
    assert not result.read_bytes[result.is_write].any(), "a write never reads DRAM"
    # resident bytes move by exactly what is inserted minus what is evicted or dropped
    enc = result.encoded
    inserted = np.where(result.inserted, enc.access_bytes, 0)
    dropped = np.where(result.dropped, enc.access_bytes, 0)
    evicted = np.bincount(
        result.victim_access, weights=enc.tensor_bytes[result.victim_code], minlength=len(trace)
    )
    np.testing.assert_array_equal(np.diff(result.resident_bytes, prepend=0), inserted - evicted - dropped)
    again = lab.simulate(trace, policy, capacity_mb=capacity_bytes / BYTES_PER_MB)
    assert again.metrics == m
    np.testing.assert_array_equal(again.hit, result.hit)
    np.testing.assert_array_equal(again.victim_code, result.victim_code)


# --- properties -------------------------------------------------------------------------------

unit_traces = st.lists(st.integers(0, 25), min_size=1, max_size=200)


def _unit(ids, scores=None):
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": 1.0})
    trace["eviction_score"] = scores if scores is not None else 0.0
    return trace


@settings(max_examples=150, deadline=None)
@given(ids=unit_traces, capacity=st.integers(1, 30), data=st.data())
def test_belady_never_misses_more_than_any_policy_on_unit_sizes(ids, capacity, data):
    scores = data.draw(st.lists(st.floats(0, 1), min_size=len(ids), max_size=len(ids)))
    trace = _unit(ids, scores)
    optimum = lab.simulate(trace, "Belady", capacity_mb=capacity).metrics["dram_accesses"]
    for policy in ALL_POLICIES:
        assert optimum <= lab.simulate(trace, policy, capacity_mb=capacity).metrics["dram_accesses"]


@settings(max_examples=150, deadline=None)
@given(ids=unit_traces, capacities=st.lists(st.integers(1, 30), min_size=2, max_size=5))
def test_lru_misses_never_grow_with_capacity(ids, capacities):
    trace = _unit(ids)
    misses = [lab.simulate(trace, "LRU", capacity_mb=c).metrics["dram_accesses"] for c in sorted(capacities)]
    assert misses == sorted(misses, reverse=True)


@settings(max_examples=100, deadline=None)
@given(
    ids=st.lists(st.integers(0, 15), min_size=1, max_size=150),
    sizes=st.lists(st.integers(1, 8), min_size=16, max_size=16),
    extra=st.lists(st.integers(0, 60), min_size=2, max_size=4),
)
def test_lru_misses_never_grow_with_capacity_when_every_tensor_fits(ids, sizes, extra):
    """With variable sizes LRU keeps the longest recency prefix that fits: a stack algorithm."""
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": [float(sizes[i]) for i in ids]})
    misses = [
        lab.simulate(trace, "LRU", capacity_mb=max(sizes) + e).metrics["dram_accesses"] for e in sorted(extra)
    ]
    assert misses == sorted(misses, reverse=True)


@settings(max_examples=100, deadline=None)
@given(ids=unit_traces, capacity=st.integers(1, 30), policy=st.sampled_from(ALL_POLICIES))
def test_hits_plus_misses_is_accesses(ids, capacity, policy):
    m = lab.simulate(_unit(ids), policy, capacity_mb=capacity).metrics
    assert m["cache_hits"] + m["dram_accesses"] == m["accesses"] == len(ids)


# --- reads and writes ----------------------------------------------------------------------------


def _with_access(trace, seed):
    rng = np.random.default_rng(seed)
    first = ~trace["tensor_id"].duplicated().to_numpy()
    # first accesses are mostly writes (produced on chip), later ones mostly reads
    write = np.where(first, rng.random(len(trace)) < 0.8, rng.random(len(trace)) < 0.2)
    return trace.assign(access=np.where(write, "write", "read"))


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("seed", range(8))
def test_reads_and_writes_match_the_reference(policy, seed):
    trace = _with_access(random_trace(seed, n_accesses=300, n_tensors=12 + 4 * seed, zipf=1.3 if seed % 2 else None),
                         seed)
    capacity_bytes = [6, 40, 150, 400][seed % 4]
    sizes = np.rint(trace["size_mb"].to_numpy() * BYTES_PER_MB).astype(int)
    hits, evicted, victims, written_back, write_bytes, resident = reference_simulate_rw(
        list(trace["tensor_id"]), list(sizes), capacity_bytes, policy, list(trace["eviction_score"]),
        list(trace["access"]))
    result = lab.simulate(trace, policy, capacity_mb=capacity_bytes / BYTES_PER_MB)
    np.testing.assert_array_equal(result.hit, hits)
    np.testing.assert_array_equal(result.evictions_per_access, [len(e) for e in evicted])
    assert list(result.victims()[["access", "tensor_id"]].itertuples(index=False, name=None)) == victims
    np.testing.assert_array_equal(result.victim_written_back, written_back)
    np.testing.assert_array_equal(result.write_bytes, write_bytes)
    np.testing.assert_array_equal(result.resident_bytes, resident)
    m = result.metrics
    assert m["writebacks"] == sum(written_back)
    assert m["dram_writes_mb"] * BYTES_PER_MB == sum(write_bytes)
    assert m["cache_hits"] + m["dram_accesses"] == m["accesses"]
    assert result.latency_ms.sum() == pytest.approx(m["total_latency"])


def test_reads_and_writes_by_hand():
    # 2 MB buffer: a is written (on chip, no DRAM read); b is read (a DRAM read), and dead after it:
    # dropped at once, no writeback; c is written beside a; a and c are read on chip, each dropped
    # after its last use.
    trace = pd.DataFrame({
        "tensor_id": ["a", "b", "c", "a", "c"],
        "size_mb": [1.0, 1.0, 1.0, 1.0, 1.0],
        "access": ["write", "read", "write", "read", "read"],
    })
    result = lab.simulate(trace, "LRU", capacity_mb=2)
    m = result.metrics
    assert result.hit.tolist() == [True, False, True, True, True]
    assert result.dropped.tolist() == [False, True, False, True, True]
    assert (result.resident_bytes / BYTES_PER_MB).tolist() == [1, 1, 2, 1, 0]
    assert m["dram_reads_mb"] == 1.0 and m["dram_writes_mb"] == 0.0 and m["writebacks"] == 0
    assert m["dead_drops"] == 3
    # 1 MB buffer: b's read evicts a (dirty, read again later): a writeback; a's read evicts c: another
    result = lab.simulate(trace, "LRU", capacity_mb=1)
    assert result.victims()[["tensor_id", "written_back"]].values.tolist() == [["a", True], ["c", True]]
    assert result.metrics["writebacks"] == 2 and result.metrics["dram_writes_mb"] == 2.0


def test_a_write_too_large_for_the_buffer_goes_to_dram():
    trace = pd.DataFrame({"tensor_id": ["big", "big"], "size_mb": [8.0, 8.0], "access": ["write", "read"]})
    result = lab.simulate(trace, "FIFO", capacity_mb=4)
    assert result.write_bytes.tolist() == [8 * BYTES_PER_MB, 0]
    assert result.metrics["dram_accesses"] == 2 and result.metrics["dram_reads_mb"] == 8.0


def test_bad_access_values():
    trace = pd.DataFrame({"tensor_id": ["a", "b"], "size_mb": [1.0, 1.0], "access": ["read", "fetch"]})
    with pytest.raises(ValueError, match=r"column 'access' must be one of \['read', 'write'\]; row 1 is 'fetch'"):
        lab.simulate(trace, "LRU")
