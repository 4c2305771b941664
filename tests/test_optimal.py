"""lab.optimal: the whole-tensor optimum by integer programming (exact, or bracketed at its time limit), the
achievable schedule, the byte-granular flow bound, and brute force on tiny traces, in bytes and at MiB scale."""

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lab
from lab.bounds.optimal import intervals_of, schedule_traffic
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
    trace = random_trace(seed, n_accesses=200, n_tensors=30, max_size_bytes=64, zipf=1.2)
    if writes:
        trace = _with_writes(trace, seed)
    workload = lab.encode_trace(trace)
    for capacity in (60, 250, 900):
        result = lab.optimal(workload, capacity / BYTES_PER_MB, method="milp")
        assert result.exact and result.rows() == [("OPT", result.exact_mb)]
        assert result.lower_mb == result.exact_mb == result.upper_mb
        assert result.byte_granular_read_mb + result.byte_granular_write_mb == pytest.approx(
            result.byte_granular_mb)
        assert result.byte_granular_mb <= result.lower_mb + 1e-12
        for policy in lab.policy_names():
            traffic = _traffic_bytes(lab.simulate(workload, policy, capacity / BYTES_PER_MB,
                                                  per_access=False).metrics)
            assert round(result.exact_mb * BYTES_PER_MB) <= traffic, policy
        # the schedule behind the metrics is the exact one, and fits the buffer
        assert _traffic_bytes(result.metrics) == round(result.exact_mb * BYTES_PER_MB)
        assert result.metrics["peak_occupancy_mb"] * BYTES_PER_MB <= capacity


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(st.integers(0, 12), min_size=2, max_size=120), capacity=st.integers(1, 12))
def test_with_equal_sizes_the_flow_is_belady_with_bypass(ids, capacity):
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": 1.0})
    result = lab.optimal(trace, capacity, method="flow")
    belady = lab.simulate(trace, lab.get_policy("Belady", bypass=True), capacity).metrics
    assert result.lower_mb == result.upper_mb == result.byte_granular_mb == belady["dram_reads_mb"]
    assert result.exact


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
        for method in ("flow", "milp"):  # the integer program briefly: its best schedule so far is enough here
            result = lab.optimal(trace, capacity, method=method, time_limit_s=0.5)
            for policy in (lab.get_policy("Belady"), lab.get_policy("Belady", bypass=True)):
                traffic = _traffic_bytes(lab.simulate(trace, policy, capacity).metrics)
                assert round(result.upper_mb * BYTES_PER_MB) <= traffic
            assert result.upper_source in {"flow rounding", "Belady (bypass) schedule", "Belady schedule",
                                           "integer program"}
            assert method == "milp" or result.upper_source != "integer program"
        # capacities are rounded to whole bytes, as tensor sizes are
        assert round(result.metrics["peak_occupancy_mb"] * BYTES_PER_MB) <= round(capacity * BYTES_PER_MB)


def test_the_plan_lists_every_interval():
    trace = random_trace(3, n_accesses=300, n_tensors=30, max_size_bytes=50)
    result = lab.optimal(trace, 200 / BYTES_PER_MB, method="flow")
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
    for bad in (0, -1, float("nan"), "30", True, 1e9):
        with pytest.raises(ValueError, match="time_limit_s must be"):
            lab.optimal(random_trace(0), 8, time_limit_s=bad)
    for bad in (-0.5, 101, float("inf"), "1"):
        with pytest.raises(ValueError, match="gap_pct must be"):
            lab.optimal(random_trace(0), 8, gap_pct=bad)
    with pytest.raises(TypeError, match="progress must be True or False"):
        lab.optimal(random_trace(0), 8, progress="yes")


@pytest.mark.parametrize("writes", [False, True])
def test_highs_and_ortools_find_the_same_flow(writes):
    """Two real solvers, one model: HiGHS' dual simplex on the flow's linear program and OR-Tools' min-cost flow
    (exact integers) agree on the bound at every capacity."""
    for seed in range(4):
        trace = random_trace(seed, n_accesses=600, n_tensors=50, max_size_bytes=5000)
        trace = _with_writes(trace, seed) if writes else trace
        working_set = trace.drop_duplicates("tensor_id")["size_mb"].sum()
        for fraction in (0.05, 0.2, 0.6):
            highs = lab.optimal(trace, working_set * fraction, method="flow")
            ortools = lab.optimal(trace, working_set * fraction, method="flow", solver="ortools")
            assert round(highs.byte_granular_mb * BYTES_PER_MB) == round(ortools.byte_granular_mb * BYTES_PER_MB)
    with pytest.raises(ValueError, match="solver must be one of"):
        lab.optimal(trace, 1.0, solver="cplex")


def test_a_trace_too_large_for_the_flow_is_refused_with_the_estimate(monkeypatch):
    from lab.bounds import optimal as optimal_module

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
        assert result.lower_mb == result.exact_mb == result.upper_mb
        assert round(result.exact_mb * BYTES_PER_MB) == _brute_force(trace, round(capacity * BYTES_PER_MB))
        for policy in ("LRU", "FIFO", "Belady"):
            traffic = lab.simulate(trace, policy, capacity).metrics["dram_traffic_mb"]
            assert result.exact_mb <= traffic + 1e-9, (policy, trace.to_dict("list"), capacity)


@pytest.mark.parametrize("seed", range(4))
def test_mib_sized_tensors_give_the_same_optimum_as_bytes(seed):
    """Captures have tensors of MiB, given in bytes: the integer program (its sizes in MiB inside HiGHS) finds
    the same optimum, scaled, on a trace whose sizes and capacity are multiplied by 2**20, and brute force agrees
    at both scales."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 4, 9)
    sizes = rng.integers(1, 200, 4)
    access = np.where(rng.random(9) < 0.3, "write", "read")
    capacity = int(rng.integers(100, 400))
    small = pd.DataFrame({"tensor_id": ids, "size_mb": sizes[ids] / BYTES_PER_MB, "access": access})
    big = small.assign(size_mb=sizes[ids].astype(float))  # the same tensors, MiB each unit
    exact_small = lab.optimal(small, capacity / BYTES_PER_MB)
    exact_big = lab.optimal(big, float(capacity))
    assert exact_small.exact and exact_big.exact
    assert round(exact_small.exact_mb * BYTES_PER_MB) == _brute_force(small, capacity)
    assert exact_big.exact_mb == pytest.approx(exact_small.exact_mb * BYTES_PER_MB, rel=1e-12)
    assert round(exact_big.exact_mb * BYTES_PER_MB) == _brute_force(big, capacity * BYTES_PER_MB)


def test_a_time_limit_gives_a_bracket_around_the_exact_optimum(monkeypatch):
    """Stopped at once, the integer program leaves a bracket, still valid: its lower end is at most the exact
    optimum and its upper end an achievable schedule no worse than Belady's; a table shows it as two rows."""
    from lab.bounds import optimal as optimal_module

    trace = lab.generate_trace("MoE", num_layers=8, batch_size=16, seq_length=128, num_experts=8, top_k=2,
                               token_groups=4, expert_skew=0.5)
    capacity = 50.0
    exact = lab.optimal(trace, capacity, time_limit_s=300)
    monkeypatch.setattr(optimal_module, "MIN_PROGRAM_S", 1e-3)
    stopped = lab.optimal(trace, capacity, time_limit_s=1e-3)
    assert exact.exact, exact.status
    if stopped.exact:  # the flow rounded met the bound: nothing left to bracket on this machine
        pytest.skip("the optimum was proven before the time limit")
    assert stopped.exact_mb is None and stopped.gap_pct > 0
    assert stopped.byte_granular_mb <= stopped.lower_mb <= exact.exact_mb + 1e-9 <= stopped.upper_mb + 2e-9
    assert [name for name, _ in stopped.rows()] == ["OPT (lower bound)", "OPT (achievable)"]
    assert "time limit" in stopped.status
    belady = lab.simulate(trace, lab.get_policy("Belady", bypass=True), capacity).metrics["dram_traffic_mb"]
    assert stopped.upper_mb <= belady + 1e-9


def test_a_gap_target_stops_early_within_it():
    trace = lab.generate_trace("MoE", num_layers=8, batch_size=16, seq_length=128, num_experts=8, top_k=2,
                               token_groups=4, expert_skew=0.5)
    capacity = 50.0
    result = lab.optimal(trace, capacity, gap_pct=5.0)
    exact = lab.optimal(trace, capacity)
    assert result.gap_pct <= 5.0 + 1e-9
    assert result.lower_mb <= exact.lower_mb + 1e-9 and exact.upper_mb <= result.upper_mb + 1e-9


def test_the_solver_prints_nothing_and_leaves_stdout_working(capfd):
    """HiGHS prints a debugging line with printf now and then: the solve runs with descriptor 1 pointed away, and
    the descriptor is restored after it (and shared correctly by threads)."""
    from concurrent.futures import ThreadPoolExecutor

    trace = _with_writes(random_trace(1, n_accesses=800, n_tensors=80, max_size_bytes=4000), 1)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda c: lab.optimal(trace, c / BYTES_PER_MB, progress=False, time_limit_s=1.0),
                      (2000, 5000, 9000, 20000)))
    print("still here")
    import os

    os.write(1, b"and the descriptor\n")
    out, _ = capfd.readouterr()
    assert out == "still here\nand the descriptor\n"


def test_progress_names_the_steps(capsys):
    trace = _with_writes(random_trace(2, n_accesses=600, n_tensors=60, max_size_bytes=4000), 2)
    lab.optimal(trace, 3000 / BYTES_PER_MB, progress=True)
    err = capsys.readouterr().err
    assert "optimum" in err and "steps" in err and "byte-granular flow" in err and "integer program" in err


def test_tables_name_the_optimum_and_never_list_a_policy_below_its_achievable_end():
    """One row OPT when exact; when bracketed, OPT (lower bound) and OPT (achievable); a policy that moves less
    than the optimum's best schedule found becomes its achievable end (a policy's run is a schedule too)."""
    from lab.analysis.sweep import achievable_at_most_every_policy, is_optimum

    seed_example = lab.generate_trace("Transformer", num_layers=12, batch_size=32, seq_length=128,
                                      reuse_probability=0.3, seed=0)
    table = lab.compare_policies(seed_example, "all", capacity_mb=64.0)
    optimum = [p for p in table.index if is_optimum(p)]
    assert optimum == ["OPT"] and bool(table.loc["OPT", "opt_exact"])
    assert (table.loc[[p for p in table.index if not is_optimum(p)], "dram_traffic_mb"]
            >= table.loc["OPT", "dram_traffic_mb"] - 1e-9).all()
    sweep = lab.sweep_capacity(seed_example, ["LRU", "SIEVE"], [16.0, 64.0])
    assert set(sweep["policy"]) == {"LRU", "SIEVE", "OPT"}
    # a bracket whose achievable end a policy beats: that policy's schedule becomes the achievable end
    rows = pd.DataFrame([
        {"policy": "LRU", "capacity_mb": 8.0, "dram_traffic_mb": 120.0, "byte_hit_rate": 10.0},
        {"policy": "SIEVE", "capacity_mb": 8.0, "dram_traffic_mb": 104.0, "byte_hit_rate": 20.0},
        {"policy": "OPT (lower bound)", "capacity_mb": 8.0, "dram_traffic_mb": 100.0, "byte_hit_rate": np.nan,
         "opt_lower_mb": 100.0, "opt_upper_mb": 110.0, "opt_exact": False},
        {"policy": "OPT (achievable)", "capacity_mb": 8.0, "dram_traffic_mb": 110.0, "byte_hit_rate": 15.0,
         "opt_lower_mb": 100.0, "opt_upper_mb": 110.0, "opt_exact": False},
        {"policy": "LRU", "capacity_mb": 16.0, "dram_traffic_mb": 90.0, "byte_hit_rate": 30.0},
        {"policy": "OPT (lower bound)", "capacity_mb": 16.0, "dram_traffic_mb": 80.0, "byte_hit_rate": np.nan,
         "opt_lower_mb": 80.0, "opt_upper_mb": 85.0, "opt_exact": False},
        {"policy": "OPT (achievable)", "capacity_mb": 16.0, "dram_traffic_mb": 85.0, "byte_hit_rate": 35.0,
         "opt_lower_mb": 80.0, "opt_upper_mb": 85.0, "opt_exact": False},
    ])
    fixed = achievable_at_most_every_policy(rows).set_index(["capacity_mb", "policy"])
    assert fixed.loc[(8.0, "OPT (achievable)"), "dram_traffic_mb"] == 104.0
    assert fixed.loc[(8.0, "OPT (achievable)"), "byte_hit_rate"] == 20.0
    assert (fixed.loc[8.0, "opt_upper_mb"].dropna() == 104.0).all()
    assert "SIEVE" in fixed.loc[(8.0, "OPT (achievable)"), "algorithm"]
    assert fixed.loc[(16.0, "OPT (achievable)"), "dram_traffic_mb"] == 85.0  # no policy beats it there
    # a policy meeting the lower bound closes the bracket: one row OPT
    closed = achievable_at_most_every_policy(rows.assign(dram_traffic_mb=rows["dram_traffic_mb"].where(
        rows["policy"] != "SIEVE", 100.0)))
    at_8 = closed[closed["capacity_mb"] == 8.0]
    assert list(at_8["policy"]) == ["LRU", "SIEVE", "OPT"] and bool(at_8["opt_exact"].iloc[-1])


def test_a_flow_beyond_the_memory_budget_is_refused_with_its_estimate(monkeypatch):
    import lab.checks

    trace = lab.generate_trace("MLP", num_layers=2)
    monkeypatch.setattr(lab.checks, "memory_budget_bytes", lambda: 1000)
    with pytest.raises(ValueError, match=rf"^the optimum.s flow over {len(trace)} accesses would need about .* GiB"):
        lab.optimal(trace, 4)


def test_the_flows_time_estimate_grows_with_the_trace():
    from lab.bounds.optimal import flow_seconds_estimate

    assert flow_seconds_estimate(100_000) == pytest.approx(20.0)
    assert flow_seconds_estimate(10_000) < 1 < flow_seconds_estimate(1_000_000) / 600


def test_the_solvers_option_warning_stays_silent_from_threads():
    """HiGHS' objective_bound passes through scipy with a RuntimeWarning that lab silences; threads solving at
    once (a sweep) must not let it through, whatever filters the caller has (here: show every warning)."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import random_trace

    traces = [random_trace(seed, n_accesses=150, n_tensors=30, max_size_bytes=64 * 2**20) for seed in range(4)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda t: lab.optimal(t, 200.0, method="milp", time_limit_s=20), traces))
    assert all(r.upper_mb >= r.lower_mb for r in results)
    assert [str(w.message) for w in caught if "Unrecognized options" in str(w.message)] == []
