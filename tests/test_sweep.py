import numpy as np
import pandas as pd
import pytest

import lab
from lab.analysis.sweep import is_optimum
from lab.bounds.capacities import default_capacities_mb, working_set_mb


def test_compare_policies_has_one_row_per_policy_and_scores_for_ml():
    trace = lab.generate_trace("Transformer", num_layers=3)
    table = lab.compare_policies(trace, "all", capacity_mb=32)
    assert table.index.tolist() == [*lab.policy_names(), "OPT"]
    featured = lab.compare_policies(trace, capacity_mb=32)  # the default: the classics
    assert featured.index.tolist() == [*lab.policy_names(featured=True), "OPT"] == ["LRU", "FIFO", "SIEVE",
                                                                                      "Belady", "ML", "OPT"]
    assert featured.loc["ML"].equals(table.loc["ML"])
    assert table["cache_hits"].dtype.kind == "i"
    ml = lab.simulate(lab.score(trace), "ML", 32).metrics
    assert table.loc["ML", "dram_accesses"] == ml["dram_accesses"]


def test_sweep_is_long_form_and_matches_single_runs():
    trace = lab.generate_trace("MLP", num_layers=6)
    sweep = lab.sweep_capacity(trace, ["LRU", "min"], capacities_mb=[8, 32, 128], optimum=False)
    assert len(sweep) == 6 and set(sweep["policy"]) == {"LRU", "Belady"}
    row = sweep[(sweep["policy"] == "LRU") & (sweep["capacity_mb"] == 32)].iloc[0]
    assert row["dram_accesses"] == lab.simulate(trace, "LRU", 32).metrics["dram_accesses"]


def test_the_optimum_is_the_bound_of_every_table_and_sweep():
    """The OPT row holds lab.optimal's bracket; no policy's DRAM traffic is below its lower bound; gap closed is
    measured on traffic against it (LRU 0 %)."""
    trace = lab.score(lab.generate_trace("MoE", num_layers=3))
    table = lab.compare_policies(trace, "all", capacity_mb=16)
    opt = lab.optimal(trace, 16)
    assert table.loc["OPT", "opt_lower_mb"] == opt.lower_mb and table.loc["OPT", "opt_upper_mb"] == opt.upper_mb
    assert table.loc["OPT", "dram_traffic_mb"] == pytest.approx(opt.upper_mb)
    policies = table.drop(index="OPT")
    assert (policies["dram_traffic_mb"] >= opt.lower_mb - 1e-9).all()
    assert (policies["dram_traffic_mb"] == policies["dram_reads_mb"] + policies["dram_writes_mb"]).all()
    assert table.loc["LRU", "gap_closed_pct"] == 0 and (table["gap_closed_pct"] <= 100 + 1e-9).all()
    lru = table.loc["LRU", "dram_traffic_mb"]
    assert table.loc["FIFO", "gap_closed_pct"] == pytest.approx(
        100 * (lru - table.loc["FIFO", "dram_traffic_mb"]) / (lru - opt.lower_mb))
    sweep = lab.sweep_capacity(trace, ["LRU", "Belady"], [4, 16, 64])
    opt_rows = sweep[sweep["policy"] == "OPT"]
    assert opt_rows["capacity_mb"].tolist() == [4, 16, 64]
    for row in opt_rows.itertuples():
        below = sweep[(sweep["capacity_mb"] == row.capacity_mb) & (sweep["policy"] != "OPT")]
        assert (below["dram_traffic_mb"] >= row.opt_lower_mb - 1e-9).all()
    assert "OPT" not in lab.compare_policies(trace, ["LRU"], 16, optimum=False).index
    with pytest.raises(TypeError, match="optimum must be True, False or 'auto'"):
        lab.sweep_capacity(trace, ["LRU"], [16], optimum="yes")


def test_optimum_auto_skips_large_traces_with_a_warning(monkeypatch):
    from lab.analysis import contenders

    trace = lab.generate_trace("MLP", num_layers=2)
    assert "OPT" in set(lab.sweep_capacity(trace, ["LRU"], [4])["policy"])  # small: auto includes it
    monkeypatch.setattr(contenders, "AUTO_OPTIMUM_ACCESSES", len(trace) - 1)
    with pytest.warns(UserWarning, match="optimum='auto' skips the optimum"):
        sweep = lab.sweep_capacity(trace, ["LRU"], [4])
    assert set(sweep["policy"]) == {"LRU"}
    with pytest.warns(UserWarning):
        assert "OPT" not in lab.compare_policies(trace, ["LRU"], 4).index
    assert "OPT" in lab.compare_policies(trace, ["LRU"], 4, optimum=True).index


@pytest.mark.parametrize("seed", range(4))
def test_one_pass_rows_of_a_sweep_equal_simulation(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 30, 600)
    sizes = np.ones(30) if seed % 2 else rng.choice([0.25, 0.5, 1, 2, 3.5, 7], 30)
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": sizes[ids]})
    capacities = [0.3, 1, 2, 5, 9, 40, 200]
    auto = lab.sweep_capacity(trace, ["LRU", "Belady", "FIFO"], capacities, optimum=False, threads=1)
    simulated = lab.sweep_capacity(trace, ["LRU", "Belady", "FIFO"], capacities, optimum=False, method="simulation")
    one_pass = auto["algorithm"].str.startswith("one-pass")
    assert set(auto.loc[one_pass, "policy"]) == ({"LRU", "Belady"} if seed % 2 else {"LRU"})
    assert (auto.loc[auto["policy"] == "FIFO", "algorithm"] == "simulation").all()
    columns = [c for c in simulated.columns if c not in ("algorithm", "peak_occupancy_mb")]
    pd.testing.assert_frame_equal(auto[columns], simulated[columns])
    peak = auto["peak_occupancy_mb"]
    assert peak.isna().sum() == (0 if seed % 2 else len(capacities))  # LRU with sizes that differ: unknown
    assert np.array_equal(peak.dropna(), simulated.loc[peak.notna(), "peak_occupancy_mb"])


def test_method_one_pass_refuses_a_policy_without_one():
    trace = lab.generate_trace("MLP", num_layers=2)
    with pytest.raises(ValueError, match="no one-pass algorithm for FIFO"):
        lab.sweep_capacity(trace, ["FIFO"], [4], method="one-pass", optimum=False)
    with pytest.raises(ValueError, match="method must be one of"):
        lab.sweep_capacity(trace, ["LRU"], [4], method="fast")


def test_default_capacities_span_smallest_tensor_to_working_set():
    trace = lab.generate_trace("CNN", num_layers=4)
    capacities = default_capacities_mb(trace, 10)
    assert len(capacities) == 10 and np.all(np.diff(capacities) > 0)
    assert capacities[0] >= trace["size_mb"].min()
    assert capacities[-1] == pytest.approx(working_set_mb(trace))
    sizes = trace.groupby("tensor_id")["size_mb"].first()
    accessed = trace.groupby("tensor_id")["size_mb"].sum()
    smaller = accessed[sizes < capacities[0] * (1 - 1e-9)].sum()
    assert smaller <= 0.01 * accessed.sum()  # what the sweep starts above carries at most 1 % of the bytes
    assert (sizes <= capacities[0] * (1 + 1e-9)).any()  # it starts at a tensor's size


def test_default_capacities_skip_tensors_that_do_not_matter():
    import pandas as pd

    # a 4-byte scalar read a thousand times next to 1 MB tensors: the sweep starts at 1 MB, not 4 bytes
    trace = pd.DataFrame({"tensor_id": ["s"] * 1000 + ["a", "b", "c"] * 10,
                          "size_mb": [4 / 2**20] * 1000 + [1.0] * 30})
    capacities = default_capacities_mb(trace, 5)
    assert capacities[0] == pytest.approx(1.0) and capacities[-1] == pytest.approx(3.0 + 4 / 2**20)
    assert working_set_mb(trace) == pytest.approx(trace.drop_duplicates("tensor_id")["size_mb"].sum())


def test_bad_capacity_in_a_sweep():
    with pytest.raises(ValueError, match="capacities_mb"):
        lab.sweep_capacity(lab.generate_trace("MLP", num_layers=1), ["LRU"], capacities_mb=[4, -1])


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_a_threaded_sweep_gives_the_same_numbers_as_runs_one_by_one(threads):
    workload = lab.encode_trace(lab.score(lab.generate_trace("Transformer", num_layers=4)))
    capacities = [1.0, 8.0, 40.0, 200.0]
    sweep = lab.sweep_capacity(workload, None, capacities, threads=threads, optimum=False, method="simulation")
    assert len(sweep) == len(capacities) * len(lab.policy_names())
    for row in sweep.itertuples():
        expected = lab.simulate(workload, row.policy, row.capacity_mb).metrics
        assert {k: getattr(row, k) for k in expected} == expected


def test_a_sweep_encodes_the_trace_once(monkeypatch):
    from lab.analysis import sweep as sweep_module

    calls = []
    real = sweep_module.encode_trace
    monkeypatch.setattr(sweep_module, "encode_trace", lambda t: calls.append(1) or real(t))
    lab.sweep_capacity(lab.generate_trace("MLP", num_layers=2), ["LRU", "FIFO"], capacities_mb=[1, 2, 4, 8])
    assert len(calls) == 1


def test_policy_lists():
    trace = lab.generate_trace("MLP", num_layers=2)
    assert lab.compare_policies(trace, "lru").index.tolist() == ["LRU", "OPT"]  # one name is a list of one
    with pytest.raises(ValueError, match="at least one policy"):
        lab.compare_policies(trace, [])
    with pytest.raises(TypeError, match="capacities_mb must be a list"):
        lab.sweep_capacity(trace, ["LRU"], capacities_mb=64)
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        lab.sweep_capacity(trace, ["LRU"], capacities_mb=[64], threads=0)


def test_a_gpu_preset_runs_the_cache_and_never_sets_the_optimum_beside_it():
    """A GPU preset's model is the hardware cache: a comparison or sweep under it simulates lines for every row,
    leaves the optimum (a schedule of the scratchpad) out, and leaves out the policies that read per-tensor
    scores when every policy was asked for; named, they and optimum=True are refused with one clear line."""
    from lab.sim.model import BufferModelError

    trace = lab.generate_trace("Transformer", num_layers=2)
    table = lab.compare_policies(trace, None, 40.0, "H100-SXM5")
    assert not any(is_optimum(p) for p in table.index) and "ML" not in table.index
    scratch = lab.compare_policies(trace, ["LRU"], 40.0, "H100-SXM5", buffer="scratchpad")
    assert "OPT" in scratch.index
    assert table.loc["LRU", "dram_traffic_mb"] != scratch.loc["LRU", "dram_traffic_mb"]  # lines, not tensors
    sweep = lab.sweep_capacity(trace, ["LRU", "FIFO"], [20.0, 40.0], "H100-SXM5")
    assert set(sweep["policy"]) == {"LRU", "FIFO"} and (sweep["algorithm"] == "simulation (cache)").all()
    with pytest.raises(BufferModelError, match="ML cannot run in the hardware cache"):
        lab.compare_policies(trace, ["LRU", "ML"], 40.0, "H100-SXM5")
    with pytest.raises(ValueError, match="optimum=True: the optimum .* scratchpad"):
        lab.sweep_capacity(trace, ["LRU"], [40.0], "H100-SXM5", optimum=True)
    with pytest.raises(ValueError, match="one-pass curves are of the scratchpad"):
        lab.sweep_capacity(trace, ["LRU"], [40.0], buffer="cache", method="one-pass")
    with pytest.raises(ValueError, match="buffer must be one of"):
        lab.sweep_capacity(trace, ["LRU"], [40.0], buffer="l2")


def test_best_online_policy_names_every_policy_within_the_tolerance():
    from lab.analysis.sweep import TIE_PCT, best_online_policy

    traffic = pd.Series({"LRU": 1000.04, "FIFO": 1000.0, "SIEVE": 1002.0, "ARC": float("nan")})
    assert TIE_PCT == 0.1 and best_online_policy(traffic) == ["FIFO", "LRU"]  # 0.004 % apart: a tie; 0.2 %: not
    assert best_online_policy(traffic, tolerance_pct=0.5) == ["FIFO", "LRU", "SIEVE"]
    assert best_online_policy(traffic, tolerance_pct=0) == ["FIFO"] and best_online_policy(pd.Series(dtype=float)) == []
    with pytest.raises(ValueError, match=r"tolerance_pct must be a number in \[0, 100\]"):
        best_online_policy(traffic, tolerance_pct=-1)
    # the optimum's rows and the policies that read the future (class attribute offline) do not compete
    table = pd.DataFrame({"dram_traffic_mb": [1000.0, 990.0, 900.0, 800.0]}, index=["LRU", "SIEVE", "Belady", "OPT"])
    assert best_online_policy(table) == ["SIEVE"] and best_online_policy(table, offline=True) == ["Belady"]
    assert best_online_policy(table.loc[["Belady", "OPT"]]) == ["Belady"]  # no online policy: the best offline one


def test_one_evaluation_of_contenders_skips_what_the_buffer_cannot_run_and_keeps_the_optima():
    from lab.analysis.sweep import evaluate_contenders
    from lab.sim.model import BufferModelError

    workload = lab.encode_trace(lab.score(lab.generate_trace("MLP", num_layers=2)))
    policies = [lab.get_policy("LRU"), lab.get_policy("ML")]
    with pytest.raises(BufferModelError, match="ML cannot run in the hardware cache"):
        evaluate_contenders(workload, policies, [4.0], buffer="cache")
    cached = evaluate_contenders(workload, policies, [4.0], buffer="cache", skip_unsupported=True)
    assert list(cached.at(4.0)) == ["LRU"] and list(cached.skipped) == ["ML"] and cached.optima == {}
    kept = {}
    first = evaluate_contenders(workload, policies, [4.0, 8.0], optimum=True, optima=kept, per_access={"ML"})
    assert sorted(kept) == [4.0, 8.0] and first.optima[4.0] is kept[4.0]
    assert first.results["ML", 4.0].per_access and not first.results["LRU", 4.0].per_access  # per access: ML's
    table = first.table
    assert list(table["policy"]) == ["LRU", "ML", "OPT"] * 2 and list(table["capacity_mb"]) == [4.0] * 3 + [8.0] * 3
    again = evaluate_contenders(workload, policies[:1], [4.0], optimum=True, optima=kept)
    assert again.optima[4.0] is kept[4.0]  # solved once, kept by the caller
    without = evaluate_contenders(workload, policies[:1], [4.0], optimum=False, optima=kept)
    assert "OPT" not in without.comparison(4.0).index  # a kept optimum is no row unless asked for
    expected = lab.compare_policies(workload, ["LRU", "ML"], 4.0)
    pd.testing.assert_series_equal(first.comparison(4.0)["dram_traffic_mb"], expected["dram_traffic_mb"])


# --- the planner beside the demand-fetch policies (issue 26, slice 8) ------------------------------------------

@pytest.fixture(scope="module")
def planned_layers():
    """A forward pass whose weights only a prefetch can hide (tests/test_planning.py), under an H200 with a fast L2,
    and its time comparison at 64 MB."""
    from tests.test_planning import FAST_L2, _layers

    trace = _layers(6)
    return trace, FAST_L2, lab.compare_time(trace, 64.0, FAST_L2, policies=["LRU", "FIFO", "LFU"])


def test_planner_rows_name_the_planners_model_and_bound_it():
    from lab.bounds.optimal import lower_bound_mb
    from tests.test_planning import FAST_L2, _layers

    trace = _layers(4)
    options = lab.PlannerOptions(execution="eager", max_outstanding_prefetches=2)
    rows = lab.planner_rows(trace, 48.0, FAST_L2, options)
    assert [r["policy"] for r in rows] == ["PLAN", "PLAN (lower bound)"]
    # a metrics_table row's shape: every metric of a simulation, and what produced it
    metrics = set(lab.simulate(trace, "LRU", 48.0, FAST_L2, buffer="scratchpad").metrics)
    assert all(set(r) == {"policy", "algorithm"} | metrics for r in rows)
    result = lab.plan(trace, 48.0, FAST_L2, options)
    plan_row, bound = rows
    assert plan_row["step_time_ms"] == pytest.approx(result.step_time_ms)
    assert plan_row["dram_traffic_mb"] == pytest.approx(result.metrics["dram_traffic_mb"])
    assert bound["step_time_ms"] == pytest.approx(result.lower_bound_ms)
    assert bound["step_time_ms"] <= plan_row["step_time_ms"]
    # the traffic bound is the byte-granular flow's, computed here on its own
    assert bound["dram_traffic_mb"] == pytest.approx(lower_bound_mb(lab.encode_trace(trace), 48.0))
    assert bound["dram_traffic_mb"] <= plan_row["dram_traffic_mb"] + 1e-9
    assert np.isnan(bound["byte_hit_rate"]) and np.isnan(bound["gpu_time_ms"])
    for row in rows:
        for words in ("scratchpad", "prefetch and bypass", "cost H200, fast L2", "capacity 48 MB", "execution eager",
                      "<= 2 prefetches"):
            assert words in row["algorithm"], (words, row["algorithm"])
    table = lab.metrics_table({"LRU": lab.simulate(trace, "LRU", 48.0, FAST_L2, buffer="scratchpad")}, rows)
    assert table.index.tolist() == ["LRU", "PLAN", "PLAN (lower bound)"]
    assert lab.best_online_policy(table) == ["LRU"]  # the planner's rows are no policy, even when they move less


def test_compare_time_sets_the_demand_policies_beside_the_planner_in_one_model(planned_layers):
    from lab.analysis.sweep import TIME_TABLE_COLUMNS
    from lab.planning.planner import demand_step_time_ms

    trace, cost, table = planned_layers
    assert table.columns.tolist() == list(TIME_TABLE_COLUMNS)
    comparison = lab.compare_policies(trace, ["LRU", "FIFO", "LFU"], 64.0, cost, optimum=False, buffer="scratchpad")
    best = lab.best_online_policy(comparison)[0]
    assert table.index.tolist() == list(dict.fromkeys(["LRU", best, "Belady"])) + ["PLAN", "PLAN (lower bound)"]
    assert table.loc["Belady", "role"].startswith("offline") and table.loc["PLAN", "role"].startswith("planner")
    demand = [p for p in table.index if not p.startswith("PLAN")]
    for mode in ("graph", "eager"):
        column = table[f"{mode}_step_time_ms"]
        # the demand rows' times are the planner's own model's (the one definition: demand_metrics)
        options = lab.PlannerOptions(execution=mode)
        assert column["LRU"] == pytest.approx(demand_step_time_ms(trace, 64.0, "LRU", cost, options))
        assert column["PLAN (lower bound)"] <= column["PLAN"] * (1 + 1e-9)
        assert column["PLAN"] <= column[demand].min() * (1 + 1e-9)
    # here the weights' prefetches hide behind compute: the planner is faster than every demand schedule
    assert table.loc["PLAN", "graph_step_time_ms"] < table.loc[demand, "graph_step_time_ms"].min()
    assert (table["eager_step_time_ms"] >= table["graph_step_time_ms"] - 1e-12).all()
    assert (table.loc[demand + ["PLAN"], "eager_host_time_ms"] > 0).all()
    traffic = table["dram_traffic_mb"]
    assert traffic["PLAN (lower bound)"] <= traffic.drop("PLAN (lower bound)").min() + 1e-9
    assert traffic["LRU"] == pytest.approx(table.loc["LRU", "dram_reads_mb"] + table.loc["LRU", "dram_writes_mb"])
    model = table.attrs["model"]
    for words in ("planner's model (lab.plan)", "scratchpad", "cost H200, fast L2", "capacity 64 MB",
                  "graph execution", "eager", "demand fetch", "least DRAM traffic of 3 policies"):
        assert words in model, words
    assert table.loc["LRU", "algorithm"] == "demand fetch (no prefetch)"
