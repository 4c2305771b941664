"""Every registered policy: the engine's contract, invariants, a pure-Python reference where libCacheSim has no
counterpart, parameters and names. The miss-for-miss check against libCacheSim is in test_libcachesim.py."""

import ast
import inspect
import textwrap
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lab
from lab.sim import structures
from lab.sim.policy import HOOKS, POLICIES
from lab.units import BYTES_PER_MB
from tests.conftest import random_trace
from tests.reference import reference_simulate, reference_simulate_rw

ALL_POLICIES = lab.policy_names()
REFERENCE_POLICIES = ["LRU", "FIFO", "MRU", "ML", "Belady"]  # the ones tests/reference.py implements


def _reference(trace, policy, capacity_bytes):
    sizes = np.rint(trace["size_mb"].to_numpy() * BYTES_PER_MB).astype(int)
    return reference_simulate(
        list(trace["tensor_id"]), list(sizes), capacity_bytes, policy, list(trace["eviction_score"])
    )


@pytest.mark.parametrize("policy", REFERENCE_POLICIES)
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


def test_tensors_larger_than_capacity_are_never_inserted():
    # 1 MB in 400 MB: small enough for every policy's admission (LIRS admits up to 1 % of the buffer)
    trace = pd.DataFrame({"tensor_id": ["big", "a", "big", "a"], "size_mb": [1000.0, 1.0, 1000.0, 1.0]})
    for policy in ALL_POLICIES:
        result = lab.simulate(trace.assign(eviction_score=0.5), policy, capacity_mb=400)
        assert result.hit.tolist() == [False, False, False, True], policy
        assert result.metrics["evictions"] == 0
        assert result.metrics["uncacheable_accesses"] == 2
        assert result.resident_bytes.tolist() == [0, BYTES_PER_MB, BYTES_PER_MB, BYTES_PER_MB]


def test_a_tensor_as_large_as_the_buffer_fits():
    """Sizes and the capacity are rounded to bytes alike: a 0.3 MB tensor fits a 0.3 MB buffer."""
    trace = pd.DataFrame({"tensor_id": ["a", "a"], "size_mb": [0.3, 0.3]})
    assert lab.simulate(trace, "LRU", capacity_mb=0.3).hit.tolist() == [False, True]


def test_ml_ties_go_to_the_least_recently_used_and_scores_follow_the_latest_access():
    trace = pd.DataFrame(
        {
            "tensor_id": ["A", "B", "C", "B", "A", "D", "E"],
            "size_mb": [1.0] * 7,
            "eviction_score": [0.5, 0.5, 0.5, 0.5, 0.1, 0.5, 0.9],
        }
    )
    result = lab.simulate(trace, "ML", capacity_mb=3)
    # D: A now scores 0.1; B and C tie at 0.5 and C was used less recently -> C. E: B and D tie -> B.
    assert result.victims()["tensor_id"].tolist() == ["C", "B"]


def test_belady_evicts_the_furthest_next_use():
    trace = pd.DataFrame({"tensor_id": list("ABCADB"), "size_mb": [1.0] * 6})
    result = lab.simulate(trace, "MIN", capacity_mb=2)
    # at C: A is next used at 3, B at 5 -> B. At D and at B: nothing is used again, so the
    # earliest inserted goes first (A, then C).
    assert result.victims()[["access", "tensor_id"]].values.tolist() == [[2, "B"], [4, "A"], [5, "C"]]


def test_mru_evicts_the_latest_access():
    trace = pd.DataFrame({"tensor_id": list("ABACD"), "size_mb": [1.0] * 5})
    # at C: A was used last -> A; at D: C -> C
    assert lab.simulate(trace, "MRU", capacity_mb=2).victims()["tensor_id"].tolist() == ["A", "C"]


@pytest.mark.parametrize("name", ["lru", "Fifo", "ml", "belady", "min", "MIN", "sieve"])
def test_names_are_case_insensitive_and_aliases_resolve(name):
    assert lab.get_policy(name).name.lower() in {"lru", "fifo", "ml", "belady", "sieve"}


def test_switches_take_only_booleans():
    with pytest.raises(TypeError, match="Belady.bypass must be True or False"):
        lab.get_policy("Belady", bypass="yes")
    with pytest.raises(TypeError, match="featured must be True or False"):
        lab.policy_names(featured=1)
    assert lab.get_policy("Belady", bypass=True).get_params() == {"bypass": True}


def test_opt_names_no_policy():
    """OPT is the optimum (lab.optimal), not Belady: with sizes that differ Belady is no bound."""
    with pytest.raises(ValueError, match="unknown policy 'OPT'"):
        lab.get_policy("OPT")


def test_unknown_policy_lists_the_known_ones(small_trace):
    with pytest.raises(ValueError, match=r"unknown policy 'NOPE'; known: \[.*'LRU'.*'SIEVE'.*aliases.*'MIN'"):
        lab.simulate(small_trace, "NOPE")


@pytest.mark.parametrize("bad", [3, None, ["LRU"], lab.Policy])
def test_a_policy_must_be_a_name_or_a_policy(small_trace, bad):
    with pytest.raises((TypeError, ValueError), match="policy"):
        lab.simulate(small_trace, bad)


def test_parameters_go_with_a_name():
    with pytest.raises(ValueError, match=r"policy LRU has no parameter\(s\) \['size'\]"):
        lab.get_policy("LRU", size=3)
    with pytest.raises(TypeError, match="go with a policy name"):
        lab.get_policy(lab.get_policy("LRU"), seed=1)


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_every_policy_describes_itself(policy):
    p = lab.get_policy(policy)
    assert p.reference, f"{policy} must cite the paper or source it follows"
    assert type(p).__doc__ and len(type(p).__doc__) > 40
    assert p.get_params() == {f.name: getattr(p, f.name) for f in fields(p)}
    assert (not p.randomized) or "seed" in p.get_params(), "a randomized policy takes a seed"


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_parameters_are_validated(policy):
    cls = POLICIES.get(policy)
    for f in fields(cls):
        meta = f.metadata
        if meta.get("low") is not None:
            with pytest.raises(ValueError, match=f.name):
                cls(**{f.name: meta["low"] - 1})
        if meta.get("high") is not None:
            with pytest.raises(ValueError, match=f.name):
                cls(**{f.name: meta["high"] + 1})
        if "low" in meta:
            with pytest.raises((TypeError, ValueError), match=f.name):
                cls(**{f.name: "3"})


def test_a_new_policy_is_one_class_and_one_register_line(small_trace):
    @lab.register
    @dataclass(frozen=True)
    class LargestFirst(lab.Policy):
        """Evict the largest resident tensor (ties: the lowest code). A test policy, defined outside lab."""

        name = "TestLargestFirst"
        reference = "a test"

        class State(NamedTuple):
            resident: np.ndarray
            sizes: np.ndarray

        def init_state(self, workload, capacity_bytes):
            return self.State(np.zeros(workload.n_tensors, np.bool_), workload.tensor_bytes)

        @staticmethod
        def insert(s, c, i):
            s.resident[c] = True

        @staticmethod
        def evict(s, c, i):
            best = -1
            for t in range(s.sizes.shape[0]):
                if s.resident[t] and (best < 0 or s.sizes[t] > s.sizes[best]):
                    best = t
            s.resident[best] = False
            return best

        @staticmethod
        def remove(s, c):
            s.resident[c] = False

    try:
        result = lab.simulate(small_trace, "testlargestfirst", capacity_mb=40)
        assert result.policy == "TestLargestFirst"
        # D (32 MB) needs room: C (16 MB) goes first, then B (8 MB)
        assert result.victims()["tensor_id"].tolist()[:2] == ["C", "B"]
        assert "TestLargestFirst" in lab.policy_names()
    finally:
        POLICIES.remove("TestLargestFirst")


def test_a_hook_that_returns_a_bad_victim_is_caught(small_trace):
    @dataclass(frozen=True)
    class Broken(lab.Policy):
        """Returns a code that is no tensor at all: the engine must refuse it, not corrupt its state."""

        name = "TestBroken"

        class State(NamedTuple):
            dummy: np.ndarray

        def init_state(self, workload, capacity_bytes):
            return self.State(np.zeros(1))

        @staticmethod
        def evict(s, c, i):
            return -1

        @staticmethod
        def remove(s, c):
            pass

    with pytest.raises(RuntimeError, match="not resident"):
        lab.simulate(small_trace, Broken(), capacity_mb=20)


def _assigns_tuples(fn) -> bool:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return any(isinstance(t, (ast.Tuple, ast.List)) for node in ast.walk(tree) if isinstance(node, ast.Assign)
               for t in node.targets)


def test_hooks_and_structures_never_unpack_tuples():
    """numba inlines hooks and structure functions into the engine's loop (inline="always"), and its inliner
    miscompiles tuple unpacking there (wrong results, even crashes): the code must assign one name at a time."""
    offenders = [f"{cls.__name__}.{hook}" for cls in POLICIES.values() for hook in HOOKS
                 if _assigns_tuples(inspect.getattr_static(cls, hook).__func__
                                    if isinstance(inspect.getattr_static(cls, hook), staticmethod)
                                    else inspect.getattr_static(cls, hook))]
    offenders += [name for name, fn in vars(structures).items()
                  if hasattr(fn, "py_func") and _assigns_tuples(fn.py_func)]
    assert offenders == []


# --- contract suite: every registered policy -------------------------------------------------


def _with_access(trace, seed):
    rng = np.random.default_rng(seed)
    first = ~trace["tensor_id"].duplicated().to_numpy()
    # first accesses are mostly writes (produced on chip), later ones mostly reads
    write = np.where(first, rng.random(len(trace)) < 0.8, rng.random(len(trace)) < 0.2)
    return trace.assign(access=np.where(write, "write", "read"))


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("reads_and_writes", [False, True])
def test_contract(policy, seed, reads_and_writes):
    trace = random_trace(seed, n_accesses=1500, n_tensors=200, max_size_bytes=300, zipf=1.2, unit=seed == 3)
    if reads_and_writes:
        trace = _with_access(trace, seed)
    capacity_bytes = 2000 + 1500 * seed if seed != 3 else 40
    workload = lab.encode_trace(trace)
    result = lab.simulate(workload, policy, capacity_mb=capacity_bytes / BYTES_PER_MB)
    m = result.metrics
    assert m["cache_hits"] + m["write_allocations"] + m["dram_accesses"] == m["accesses"] == len(trace)
    assert result.resident_bytes.max() <= capacity_bytes
    assert m["peak_occupancy_mb"] * BYTES_PER_MB == result.resident_bytes.max()
    assert m["evictions"] == result.evictions_per_access.sum() == len(result.victims())
    first = ~trace["tensor_id"].duplicated().to_numpy()
    reads = ~result.is_write
    assert not result.hit[first & reads].any(), "a first read is always a miss"
    assert not result.read_bytes[result.is_write].any(), "a write never reads DRAM"
    assert not (result.inserted & result.hit & ~result.is_write).any(), "a read hit inserts nothing"
    # resident bytes move by exactly what is inserted minus what is evicted or dropped
    enc = result.workload
    inserted = np.where(result.inserted, enc.access_bytes, 0)
    dropped = np.where(result.dropped, enc.access_bytes, 0)
    evicted = np.bincount(result.victim_access, weights=enc.tensor_bytes[result.victim_code], minlength=len(trace))
    np.testing.assert_array_equal(np.diff(result.resident_bytes, prepend=0), inserted - evicted - dropped)
    # a victim is resident when it is evicted, and nothing is evicted twice without coming back in between
    in_buffer = set()
    victims_at = pd.Series(result.victim_code).groupby(result.victim_access).apply(list).to_dict()
    for i, c in enumerate(enc.codes):
        for v in victims_at.get(i, []):
            assert v in in_buffer
            in_buffer.discard(v)
        if result.inserted[i]:
            in_buffer.add(c)
        if result.dropped[i]:
            in_buffer.discard(c)
    # the same run again gives the same numbers, and metrics alone agree with the full run
    again = lab.simulate(trace, policy, capacity_mb=capacity_bytes / BYTES_PER_MB)
    assert again.metrics == m
    np.testing.assert_array_equal(again.hit, result.hit)
    np.testing.assert_array_equal(again.victim_code, result.victim_code)
    assert lab.simulate(workload, policy, capacity_bytes / BYTES_PER_MB, per_access=False).metrics == m
    if reads_and_writes:
        assert m["dram_writes_mb"] * BYTES_PER_MB == result.write_bytes.sum()
        assert m["writebacks"] == result.victim_written_back.sum()


def test_metrics_only_runs_refuse_per_access_questions(small_trace):
    result = lab.simulate(small_trace, "LRU", capacity_mb=20, per_access=False)
    assert result.metrics == lab.simulate(small_trace, "LRU", capacity_mb=20).metrics
    with pytest.raises(ValueError, match="per_access=True"):
        result.to_frame()
    with pytest.raises(ValueError, match="per_access=True"):
        result.hit


# --- properties -------------------------------------------------------------------------------

unit_traces = st.lists(st.integers(0, 25), min_size=1, max_size=200)


def _unit(ids, scores=None):
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": 1.0})
    trace["eviction_score"] = scores if scores is not None else 0.0
    return trace


@settings(max_examples=60, deadline=None)
@given(ids=unit_traces, capacity=st.integers(1, 30), data=st.data())
def test_belady_never_misses_more_than_any_policy_on_unit_sizes(ids, capacity, data):
    scores = data.draw(st.lists(st.floats(0, 1), min_size=len(ids), max_size=len(ids)))
    workload = lab.encode_trace(_unit(ids, scores))
    optimum = lab.simulate(workload, "Belady", capacity_mb=capacity, per_access=False).metrics["dram_accesses"]
    for policy in ALL_POLICIES:
        assert optimum <= lab.simulate(workload, policy, capacity_mb=capacity, per_access=False).metrics[
            "dram_accesses"], policy


@settings(max_examples=100, deadline=None)
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


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(0, 30), min_size=1, max_size=200),
    sizes=st.lists(st.integers(1, 50), min_size=31, max_size=31),
    capacity=st.integers(1, 400),
    writes=st.lists(st.booleans(), min_size=200, max_size=200),
    policy=st.sampled_from(ALL_POLICIES),
)
def test_invariants_on_any_trace(ids, sizes, capacity, writes, policy):
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": [sizes[i] / BYTES_PER_MB for i in ids],
                          "access": np.where(writes[: len(ids)], "write", "read"), "eviction_score": 0.5})
    for t in (trace, trace.drop(columns="access")):
        result = lab.simulate(t, policy, capacity_mb=capacity / BYTES_PER_MB)
        m = result.metrics
        assert m["cache_hits"] + m["write_allocations"] + m["dram_accesses"] == m["accesses"] == len(ids)
        assert 0 <= m["cache_hit_rate"] <= 100 and 0 <= m["byte_hit_rate"] <= 100
        assert result.resident_bytes.min() >= 0 and result.resident_bytes.max() <= capacity
        assert m["bytes_from_dram"] >= 0 and m["dram_writes_mb"] >= 0


# --- reads and writes ----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", REFERENCE_POLICIES)
@pytest.mark.parametrize("seed", range(8))
def test_reads_and_writes_match_the_reference(policy, seed):
    trace = _with_access(random_trace(seed, n_accesses=300, n_tensors=12 + 4 * seed, zipf=1.3 if seed % 2 else None),
                         seed)
    capacity_bytes = [6, 40, 150, 400][seed % 4]
    sizes = np.rint(trace["size_mb"].to_numpy() * BYTES_PER_MB).astype(int)
    hits, evicted, victims, written_back, write_bytes, resident, allocated = reference_simulate_rw(
        list(trace["tensor_id"]), list(sizes), capacity_bytes, policy, list(trace["eviction_score"]),
        list(trace["access"]))
    result = lab.simulate(trace, policy, capacity_mb=capacity_bytes / BYTES_PER_MB)
    np.testing.assert_array_equal(result.hit, hits)
    np.testing.assert_array_equal(result.write_allocated, allocated)
    np.testing.assert_array_equal(result.evictions_per_access, [len(e) for e in evicted])
    assert list(result.victims()[["access", "tensor_id"]].itertuples(index=False, name=None)) == victims
    np.testing.assert_array_equal(result.victim_written_back, written_back)
    np.testing.assert_array_equal(result.write_bytes, write_bytes)
    np.testing.assert_array_equal(result.resident_bytes, resident)
    m = result.metrics
    assert m["writebacks"] == sum(written_back)
    assert m["write_allocations"] == sum(allocated) and m["cache_hits"] == sum(hits)
    assert m["dram_writes_mb"] * BYTES_PER_MB == sum(write_bytes)
    assert m["cache_hits"] + m["write_allocations"] + m["dram_accesses"] == m["accesses"]
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
    assert result.hit.tolist() == [False, False, False, True, True]  # a write that allocates is not a hit
    assert result.write_allocated.tolist() == [True, False, True, False, False]
    assert result.on_chip.tolist() == [True, False, True, True, True]
    assert m["cache_hits"] == 2 and m["write_allocations"] == 2 and m["dram_accesses"] == 1
    assert m["cache_hit_rate"] == 40.0 and m["read_hit_rate"] == pytest.approx(200 / 3)
    assert result.dropped.tolist() == [False, True, False, True, True]
    assert (result.resident_bytes / BYTES_PER_MB).tolist() == [1, 1, 2, 1, 0]
    assert m["dram_reads_mb"] == 1.0 and m["dram_writes_mb"] == 0.0 and m["writebacks"] == 0
    assert m["dead_drops"] == 3
    # 1 MB buffer: b's read evicts a (dirty, read again later): a writeback; a's read evicts c: another
    result = lab.simulate(trace, "LRU", capacity_mb=1)
    assert result.victims()[["tensor_id", "written_back"]].values.tolist() == [["a", True], ["c", True]]
    assert result.metrics["writebacks"] == 2 and result.metrics["dram_writes_mb"] == 2.0


def test_no_writeback_of_a_dirty_tensor_whose_next_access_overwrites_it():
    # 1 MB buffer: b's read evicts a, dirty and still live, but a's next access writes it whole: nothing to save
    trace = pd.DataFrame({"tensor_id": ["a", "b", "a", "b", "a"], "size_mb": 1.0,
                          "access": ["write", "read", "write", "read", "read"]})
    result = lab.simulate(trace, "LRU", capacity_mb=1)
    m = result.metrics
    victims = result.victims()[["access", "tensor_id", "written_back"]].values.tolist()
    # a evicted at 1 (next: a write, skipped); b (clean) at 2; a evicted again at 3 (next: a read, written back)
    assert victims == [[1, "a", False], [2, "b", False], [3, "a", True]]
    assert m["writebacks"] == 1 and m["writebacks_skipped"] == 1 and m["dram_writes_mb"] == 1.0


def test_a_write_too_large_for_the_buffer_goes_to_dram():
    trace = pd.DataFrame({"tensor_id": ["big", "big"], "size_mb": [8.0, 8.0], "access": ["write", "read"]})
    result = lab.simulate(trace, "FIFO", capacity_mb=4)
    assert result.write_bytes.tolist() == [8 * BYTES_PER_MB, 0]
    assert result.metrics["dram_accesses"] == 2 and result.metrics["dram_reads_mb"] == 8.0


def test_bad_access_values():
    trace = pd.DataFrame({"tensor_id": ["a", "b"], "size_mb": [1.0, 1.0], "access": ["read", "fetch"]})
    with pytest.raises(ValueError, match=r"column 'access' must be one of \['read', 'write', 'persist'\]; row 1 is 'fetch'"):
        lab.simulate(trace, "LRU")
