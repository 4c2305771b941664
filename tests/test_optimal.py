"""lab.optimal: the min-cost-flow lower bound, the achievable schedule, the exact integer optimum, and brute force
on tiny traces."""

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lab
from lab.analysis.optimal import intervals_of, schedule_traffic
from lab.units import BYTES_PER_MB
from tests.conftest import random_trace


def _traffic_bytes(metrics) -> int:
    return round((metrics["dram_reads_mb"] + metrics["dram_writes_mb"]) * BYTES_PER_MB)


def _with_writes(trace, seed, share=0.3):
    rng = np.random.default_rng(seed)
    return trace.assign(access=np.where(rng.random(len(trace)) < share, "write", "read"))


def _brute_force(trace, capacity_bytes) -> int:
    """The whole-tensor optimum with bypass by enumerating every set of kept intervals."""
    workload = lab.encode_trace(trace)
    ivs = intervals_of(workload)
    m = len(ivs.start)
    best = None
    for keep in itertools.product([False, True], repeat=m):
        kept = np.array(keep, dtype=bool)
        held = np.zeros(workload.n_accesses + 1, np.int64)
        np.add.at(held, ivs.start[kept], ivs.size[kept])
        np.subtract.at(held, ivs.end[kept], ivs.size[kept])
        if np.cumsum(held).max() > capacity_bytes:
            continue
        read, write, _, _ = schedule_traffic(workload, ivs, kept)
        best = read + write if best is None else min(best, read + write)
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("writes", [False, True])
def test_brute_force_agrees_with_the_integer_program(seed, writes):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 4, 9)
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": (ids + 1) * 3 / BYTES_PER_MB})
    if writes:
        trace = _with_writes(trace, seed, 0.4)
    capacity = int(rng.integers(3, 16))
    assert len(intervals_of(lab.encode_trace(trace)).start) <= 12
    exact = lab.optimal(trace, capacity / BYTES_PER_MB, method="milp")
    assert round(exact.exact_mb * BYTES_PER_MB) == _brute_force(trace, capacity)
    assert exact.lower_mb <= exact.exact_mb + 1e-12 <= exact.upper_mb + 2e-12


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("writes", [False, True])
def test_lower_bound_below_every_policy_and_the_exact_optimum_in_the_bracket(seed, writes):
    trace = random_trace(seed, n_accesses=400, n_tensors=40, max_size_bytes=64, zipf=1.2)
    if writes:
        trace = _with_writes(trace, seed)
    workload = lab.encode_trace(trace)
    for capacity in (60, 250, 900):
        result = lab.optimal(workload, capacity / BYTES_PER_MB, method="milp")
        assert result.lower_mb <= result.exact_mb + 1e-12 <= result.upper_mb + 2e-12
        assert result.lower_read_mb + result.lower_write_mb == pytest.approx(result.lower_mb)
        for policy in lab.policy_names():
            traffic = _traffic_bytes(lab.simulate(workload, policy, capacity / BYTES_PER_MB,
                                                  per_access=False).metrics)
            assert round(result.lower_mb * BYTES_PER_MB) <= traffic, policy
        # the schedule behind the metrics is the exact one, and fits the buffer
        assert _traffic_bytes(result.metrics) == round(result.exact_mb * BYTES_PER_MB)
        assert result.metrics["peak_occupancy_mb"] * BYTES_PER_MB <= capacity


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(st.integers(0, 12), min_size=2, max_size=120), capacity=st.integers(1, 12))
def test_with_equal_sizes_the_flow_is_belady_with_bypass(ids, capacity):
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": 1.0})
    result = lab.optimal(trace, capacity)
    belady = lab.simulate(trace, lab.get_policy("Belady", bypass=True), capacity).metrics
    assert result.lower_mb == result.upper_mb == belady["dram_reads_mb"]


def test_belady_without_bypass_can_be_worse_than_the_optimum():
    """The issue's example: room for one tensor; demand fetching makes Belady miss 14 times, the optimum 12."""
    ids = [int(x) for x in "2 0 3 3 1 0 1 0 3 2 2 1 2 4 1 3".split()]
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": 1.0})
    assert lab.simulate(trace, "Belady", 1).metrics["dram_accesses"] == 14
    assert lab.simulate(trace, lab.get_policy("Belady", bypass=True), 1).metrics["dram_accesses"] == 12
    result = lab.optimal(trace, 1, method="milp")
    assert result.lower_mb == result.exact_mb == result.upper_mb == 12.0


def test_varied_sizes_can_beat_belady():
    """With varied sizes Belady is no bound: a policy keeping two small tensors beats it keeping one big one."""
    trace = pd.DataFrame({"tensor_id": list("BaBb" "aBbaB" "ab"),
                          "size_mb": [4.0 if x == "B" else 2.0 for x in "BaBb" "aBbaB" "ab"]})
    result = lab.optimal(trace, 4, method="milp")
    assert result.exact_mb < lab.simulate(trace, "Belady", 4).metrics["dram_reads_mb"]


@pytest.mark.parametrize("writes", [False, True])
def test_the_achievable_schedule_is_never_worse_than_beladys(writes):
    """The upper end is the best of the flow rounded and Belady's schedules: never above Belady's traffic."""
    for seed in range(4):
        trace = random_trace(seed, n_accesses=400, n_tensors=40, max_size_bytes=64)
        trace = _with_writes(trace, seed) if writes else trace
        capacity = (trace.drop_duplicates("tensor_id")["size_mb"].sum() * 0.2)
        result = lab.optimal(trace, capacity)
        for policy in (lab.get_policy("Belady"), lab.get_policy("Belady", bypass=True)):
            traffic = _traffic_bytes(lab.simulate(trace, policy, capacity).metrics)
            assert round(result.upper_mb * BYTES_PER_MB) <= traffic
        assert result.upper_source in {"flow rounding", "Belady (bypass) schedule", "Belady schedule"}
        # capacities are rounded to whole bytes, as tensor sizes are
        assert round(result.metrics["peak_occupancy_mb"] * BYTES_PER_MB) <= round(capacity * BYTES_PER_MB)


def test_the_plan_lists_every_interval():
    trace = random_trace(3, n_accesses=300, n_tensors=30, max_size_bytes=50)
    result = lab.optimal(trace, 200 / BYTES_PER_MB)
    plan = result.plan
    assert len(plan) == len(trace) - trace["tensor_id"].nunique()
    assert plan["kept_fraction"].between(0, 1).all()
    if result.upper_source == "flow rounding":  # the intervals the flow keeps whole
        assert (plan.loc[plan["kept"], "kept_fraction"] == 1).all()
    assert set(result.metrics) == set(lab.simulate(trace, "LRU", 1).metrics)
    assert result.gap_pct >= 0


@pytest.mark.parametrize("capacity, match", [(0, "capacity_mb"), (-1.0, "capacity_mb"), ("8", "capacity_mb")])
def test_bad_capacity(capacity, match):
    with pytest.raises(ValueError, match=match):
        lab.optimal(pd.DataFrame({"tensor_id": [1, 1], "size_mb": 1.0}), capacity)


def test_bad_input():
    empty = pd.DataFrame({"tensor_id": pd.Series([], dtype=str), "size_mb": pd.Series([], dtype=float)})
    with pytest.raises(ValueError, match="empty"):
        lab.optimal(empty, 8)
    with pytest.raises(ValueError, match="method must be one of"):
        lab.optimal(random_trace(0), 8, method="exact")
    big = random_trace(0, n_accesses=20_000, n_tensors=100)
    with pytest.raises(ValueError, match="method='milp' solves traces of at most"):
        lab.optimal(big, 8, method="milp")


@pytest.mark.parametrize("writes", [False, True])
def test_highs_and_ortools_find_the_same_flow(writes):
    """Two real solvers, one model: HiGHS' dual simplex on the flow's linear program and OR-Tools' min-cost flow
    (exact integers) agree on the bound at every capacity."""
    for seed in range(4):
        trace = random_trace(seed, n_accesses=600, n_tensors=50, max_size_bytes=5000)
        trace = _with_writes(trace, seed) if writes else trace
        working_set = trace.drop_duplicates("tensor_id")["size_mb"].sum()
        for fraction in (0.05, 0.2, 0.6):
            highs = lab.optimal(trace, working_set * fraction)
            ortools = lab.optimal(trace, working_set * fraction, solver="ortools")
            assert round(highs.lower_mb * BYTES_PER_MB) == round(ortools.lower_mb * BYTES_PER_MB)
    with pytest.raises(ValueError, match="solver must be one of"):
        lab.optimal(trace, 1.0, solver="cplex")


def test_a_trace_too_large_for_the_flow_is_refused_with_the_estimate(monkeypatch):
    from lab.analysis import optimal as optimal_module

    trace = lab.generate_trace("MLP", num_layers=2)
    monkeypatch.setattr(optimal_module, "MAX_FLOW_ACCESSES", len(trace) - 1)
    with pytest.raises(ValueError, match=r"would need about .* GiB .* at most"):
        lab.optimal(trace, 4)
    with pytest.raises(ValueError, match="at most"):
        optimal_module.lower_bound_mb(trace, 4)


@pytest.mark.parametrize("seed", range(3))
def test_persist_marks_keep_the_bracket_and_the_exact_optimum_below_every_policy(seed):
    """Persist marks (data that must reach DRAM after the trace): lower <= exact <= upper, and the exact
    whole-tensor optimum is no worse than any policy, whose simulation writes a dirty tensor back at its mark."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n, k = int(rng.integers(3, 14)), int(rng.integers(1, 5))
        ids = rng.integers(0, k, n)
        access = np.where(rng.random(n) < 0.4, "write", "read")
        sizes = rng.choice([1.0, 2.0, 3.0], k)
        trace = pd.DataFrame({"tensor_id": ids, "size_mb": sizes[ids], "access": access})
        persisted = [c for c in sorted(set(ids[access == "write"])) if rng.random() < 0.7]
        marks = pd.DataFrame({"tensor_id": persisted, "size_mb": sizes[persisted], "access": "persist"})
        trace = pd.concat([trace, marks], ignore_index=True)
        capacity = float(rng.choice([1, 2, 3, 5]))
        result = lab.optimal(trace, capacity, method="milp")
        assert result.lower_mb <= result.exact_mb + 1e-9 <= result.upper_mb + 2e-9
        for policy in ("LRU", "FIFO", "Belady"):
            traffic = lab.simulate(trace, policy, capacity).metrics["dram_traffic_mb"]
            assert result.exact_mb <= traffic + 1e-9, (policy, trace.to_dict("list"), capacity)
