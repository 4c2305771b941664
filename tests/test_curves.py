"""lab.miss_ratio_curve: the one-pass algorithms equal lab.simulate at every capacity; sampling's error is
measured and bounded; bad input is refused."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lab
from lab.units import BYTES_PER_MB
from tests.conftest import random_trace

CAPACITIES_BYTES = [1, 5, 40, 150, 300, 700, 2000, 9000, 40000]


def _assert_matches_simulation(trace, policy, curve):
    for row in curve.itertuples():
        m = lab.simulate(trace, policy, row.capacity_mb, per_access=False).metrics
        assert row.misses == m["dram_accesses"], (policy, row.capacity_mb)
        assert row.dram_read_mb == m["dram_reads_mb"]
        assert row.dram_write_mb == pytest.approx(m["dram_writes_mb"])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("unit", [False, True])
def test_one_pass_lru_equals_simulation_on_random_traces(seed, unit):
    trace = random_trace(seed, n_accesses=3000, n_tensors=200, max_size_bytes=300, unit=unit,
                         zipf=1.2 if seed % 2 else None)
    curve = lab.miss_ratio_curve(trace, "LRU", np.array(CAPACITIES_BYTES) / BYTES_PER_MB)
    assert curve["algorithm"].str.startswith("one-pass LRU").all()
    _assert_matches_simulation(trace, "LRU", curve)


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(0, 20), min_size=1, max_size=300),
       sizes=st.lists(st.integers(1, 60), min_size=21, max_size=21),
       capacities=st.lists(st.integers(1, 500), min_size=1, max_size=6, unique=True))
def test_one_pass_lru_equals_simulation_on_any_trace(ids, sizes, capacities):
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": [sizes[i] / BYTES_PER_MB for i in ids]})
    curve = lab.miss_ratio_curve(trace, "LRU", np.array(capacities) / BYTES_PER_MB)
    _assert_matches_simulation(trace, "LRU", curve)


def test_one_pass_lru_equals_simulation_on_a_captured_trace():
    trace = lab.generate_trace("Transformer", num_layers=4)  # plain: sizes of a real layer graph
    capacities = lab.default_capacities_mb(trace, 16)
    curve = lab.miss_ratio_curve(trace, "LRU", capacities)
    _assert_matches_simulation(trace, "LRU", curve)


@pytest.mark.parametrize("seed", range(4))
def test_opt_stack_equals_belady_with_equal_sizes(seed):
    trace = random_trace(seed, n_accesses=2000, n_tensors=150, unit=True, zipf=1.1)
    curve = lab.miss_ratio_curve(trace, "Belady", np.array([1, 2, 5, 17, 60, 149, 400]) / BYTES_PER_MB)
    assert curve["algorithm"].str.startswith("one-pass OPT stack").all()
    _assert_matches_simulation(trace, "Belady", curve)


def test_other_policies_and_reads_and_writes_are_simulated_on_threads():
    trace = random_trace(1, n_accesses=1500, n_tensors=100, max_size_bytes=200)
    rw = trace.assign(access=np.where(np.random.default_rng(1).random(len(trace)) < 0.3, "write", "read"))
    capacities = np.array([100, 1000, 5000]) / BYTES_PER_MB
    for t, policy in ((trace, "SIEVE"), (rw, "LRU")):
        curve = lab.miss_ratio_curve(t, policy, capacities, threads=2)
        assert curve["algorithm"].str.startswith("simulation").all()
        _assert_matches_simulation(t, policy, curve)


def test_the_optimum_bound_curve_lies_below_every_policy():
    trace = random_trace(2, n_accesses=800, n_tensors=60, max_size_bytes=100, zipf=1.2)
    capacities = np.array([100, 600, 2000]) / BYTES_PER_MB
    bound = lab.miss_ratio_curve(trace, "OPT-bound", capacities)
    lru = lab.miss_ratio_curve(trace, "LRU", capacities)
    assert (bound["dram_read_mb"].to_numpy() <= lru["dram_read_mb"].to_numpy()).all()


def test_shards_sampling_error_on_a_million_accesses():
    """SHARDS at 10 %: the miss ratio stays within 2 points of the exact curve (measured and printed)."""
    rng = np.random.default_rng(0)
    n, tensors = 1_000_000, 50_000
    weights = 1.0 / np.arange(1, tensors + 1)
    ids = rng.choice(tensors, size=n, p=weights / weights.sum())
    workload = lab.encode_trace(pd.DataFrame({"tensor_id": ids, "size_mb": 1.0}))
    capacities = np.array([500.0, 2000.0, 8000.0])
    exact = lab.miss_ratio_curve(workload, "SIEVE", capacities)
    sampled = lab.miss_ratio_curve(workload, "SIEVE", capacities, sample_rate=0.1, seed=1)
    error = np.abs(sampled["miss_ratio"].to_numpy() - exact["miss_ratio"].to_numpy())
    print(f"SHARDS (rate 0.1) absolute miss-ratio error at {list(capacities)} MB: {np.round(error, 4).tolist()}")
    assert error.max() < 0.02
    assert sampled["algorithm"].str.startswith("SHARDS").all()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"policy": "NOPE"}, ValueError, "unknown policy"),
    ({"capacities_mb": [0]}, ValueError, "capacities_mb"),
    ({"capacities_mb": 64}, TypeError, "capacities_mb must be a list"),
    ({"sample_rate": 0}, ValueError, "sample_rate"),
    ({"sample_rate": 1.5}, ValueError, "sample_rate"),
    ({"method": "fast"}, ValueError, "method must be"),
    ({"policy": "SIEVE", "method": "one-pass"}, ValueError, "no one-pass algorithm"),
])
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        lab.miss_ratio_curve(random_trace(0), **kwargs)


def test_an_empty_trace_is_refused():
    empty = pd.DataFrame({"tensor_id": pd.Series([], dtype=str), "size_mb": pd.Series([], dtype=float)})
    with pytest.raises(ValueError, match="empty"):
        lab.miss_ratio_curve(empty)
