import math

import numpy as np
import pandas as pd
import pytest

import lab


def test_plan_is_the_optimums_schedule_access_by_access():
    trace = lab.generate_trace("Transformer", num_layers=3)
    prediction = lab.predict_compile(trace, capacity_mb=40)
    optimum = lab.optimal(trace, 40)
    plan = prediction.plan
    assert len(plan) == len(trace)
    m = optimum.metrics
    on_chip = plan["action"].isin(["hit", "write"])
    assert on_chip.sum() == m["cache_hits"] + m["write_allocations"]  # every write fits 40 MB here
    assert (plan["action"] == "write").tolist() == (trace["access"] == "write").tolist()
    assert plan["resident_mb"].max() == pytest.approx(m["peak_occupancy_mb"]) and m["peak_occupancy_mb"] <= 40
    # a load keeps the tensor to its next use, which is then a hit; a stream does not
    workload = lab.encode_trace(trace)
    loads = plan.index[plan["action"] == "load"].to_numpy()
    assert (plan.loc[workload.next_use[loads], "action"] == "hit").all()
    assert not plan.loc[plan["action"] == "stream", "dropped"].eq(False).any()
    reads = plan.loc[plan["action"].isin(["load", "stream"]), "size_mb"].sum()
    assert reads == pytest.approx(m["dram_reads_mb"])
    assert prediction.optimum.upper_mb == optimum.upper_mb and prediction.belady.policy == "Belady"


def test_stream_action_for_tensors_larger_than_the_buffer():
    trace = pd.DataFrame({"tensor_id": ["big", "a", "a"], "size_mb": [10.0, 1.0, 1.0]})
    assert lab.predict_compile(trace, 4).plan["action"].tolist() == ["stream", "load", "hit"]


def test_comparison_and_gap_closed_against_the_optimum():
    trace = lab.generate_trace("MoE", num_layers=2)
    comparison = lab.predict_compile(trace, capacity_mb=48).comparison
    online = [p for p in lab.policy_names() if not lab.get_policy(p).offline]
    assert comparison.index.tolist() == [*online, "Belady", "OPT"]
    lower = lab.optimal(trace, 48).lower_mb
    assert comparison.loc["OPT", "opt_lower_mb"] == lower
    assert comparison.loc["LRU", "gap_closed_pct"] == 0 and (comparison["gap_closed_pct"] <= 100 + 1e-9).all()
    lru, fifo = (comparison.loc[p, "dram_traffic_mb"] for p in ("LRU", "FIFO"))
    assert comparison.loc["FIFO", "gap_closed_pct"] == pytest.approx(100 * (lru - fifo) / (lru - lower))


def test_recommended_capacity_is_the_smallest_reaching_the_target():
    rng = np.random.default_rng(5)
    trace = pd.DataFrame({"tensor_id": rng.zipf(1.4, 1200) % 150, "size_mb": 1.0})
    prediction = lab.predict_compile(trace, capacity_mb=10, policies=["LRU"])
    assert prediction.best_hit_rate == pytest.approx(100 * (1200 - trace["tensor_id"].nunique()) / 1200)
    none, whole = prediction.traffic_mb["no_buffer"], prediction.traffic_mb["whole_working_set"]
    assert none == 1200 and whole == trace["tensor_id"].nunique()
    for q, capacity in prediction.recommended_capacity_mb.items():
        # sizes from the byte-granular optimum (one flow per step of the search)
        target = none - q * (none - whole)
        assert lab.optimal(trace, capacity, method="flow").byte_granular_mb <= target
        assert lab.optimal(trace, capacity * (1 - 2e-3), method="flow").byte_granular_mb > target
    assert prediction.recommended_capacity_mb[0.9] <= prediction.recommended_capacity_mb[0.99]
    summary = prediction.summary()
    assert set(summary["recommended_capacity_mb"]) == {"90%", "99%"}
    assert summary["optimum_mb"]["lower"] <= summary["optimum_mb"]["upper"]


def test_no_reuse_means_no_recommendation():
    trace = pd.DataFrame({"tensor_id": ["a", "b", "c"], "size_mb": 1.0})
    prediction = lab.predict_compile(trace, 2)
    assert prediction.best_hit_rate == 0 and prediction.recommended_capacity_mb == {0.9: None, 0.99: None}
    assert math.isnan(prediction.comparison.loc["FIFO", "gap_closed_pct"])


def test_bad_capacity():
    with pytest.raises(ValueError, match="capacity_mb"):
        lab.predict_compile(lab.generate_trace("MLP", num_layers=1), capacity_mb=0)


def test_beyond_the_optimums_reach_belady_plans_and_its_sizes_are_enough():
    """optimum='auto' skips the flow on long traces (a warning); the plan and recommended sizes are then
    Belady's, named so, and every recommended size is at least the optimum's (Belady is achievable)."""
    from lab.analysis import compile_prediction

    rng = np.random.default_rng(3)
    ids = rng.zipf(1.3, 900) % 120
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": (ids % 4 + 1) / 2})
    exact = lab.predict_compile(trace, capacity_mb=6, policies=["LRU"])
    planned = lab.predict_compile(trace, capacity_mb=6, policies=["LRU"], optimum=False)
    assert planned.optimum is None and "Belady" in planned.planner and "optimum" in exact.planner
    assert "OPT" not in planned.comparison.index and planned.summary()["optimum_mb"] is None
    assert planned.plan["action"].tolist() == compile_prediction.residency_plan(planned.belady)["action"].tolist()
    assert planned.traffic_mb == pytest.approx(exact.traffic_mb)
    for q in compile_prediction.TARGETS:
        assert planned.recommended_capacity_mb[q] >= exact.recommended_capacity_mb[q] * (1 - 2e-3)
        target = exact.traffic_mb["no_buffer"] - q * (exact.traffic_mb["no_buffer"]
                                                       - exact.traffic_mb["whole_working_set"])
        belady = lab.simulate(trace, "Belady", planned.recommended_capacity_mb[q], per_access=False)
        assert belady.metrics["dram_traffic_mb"] <= target + 1e-9


def test_auto_skips_the_flow_on_long_traces_with_a_warning(monkeypatch):
    from lab.analysis import contenders

    monkeypatch.setattr(contenders, "AUTO_OPTIMUM_ACCESSES", 10)
    trace = lab.generate_trace("MLP", num_layers=2)
    with pytest.warns(UserWarning, match="skips the optimum"):
        prediction = lab.predict_compile(trace, 4, policies=["LRU"])
    assert prediction.optimum is None


def test_predictions_show_progress_by_default_beyond_a_few_seconds_of_work(capsys, monkeypatch):
    import lab.analysis.compile_prediction as prediction

    trace = lab.generate_trace("MLP", num_layers=2)  # short: as if it were long, with the thresholds lowered
    monkeypatch.setattr(prediction, "PROGRESS_OPTIMUM_ACCESSES", len(trace) - 1)
    monkeypatch.setattr(prediction, "PROGRESS_ACCESSES", len(trace) + 1)
    lab.predict_compile(trace, 4, policies=["LRU"], optimum=False)  # without the optimum: under its threshold
    assert "predict_compile" not in capsys.readouterr().err
    lab.predict_compile(trace, 4, policies=["LRU"], optimum=True)  # the optimum's flows: over its threshold
    assert "predict_compile" in capsys.readouterr().err


def test_long_predictions_show_progress(capsys):
    lab.predict_compile(lab.generate_trace("MLP", num_layers=2), 4, policies=["LRU"], progress=True)
    assert "predict_compile" in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress must be True or False"):
        lab.predict_compile(lab.generate_trace("MLP", num_layers=2), 4, progress="yes")


def test_the_prediction_names_its_model_and_its_policies_parameters():
    trace = lab.generate_trace("Transformer", num_layers=2)
    prediction = lab.predict_compile(trace, 24.0, "H200", policies=["LRU", "S3-FIFO"], buffer="scratchpad")
    model = prediction.model
    assert (model.buffer, model.cost, model.capacity_mb, model.policy) == ("scratchpad", "H200", 24.0, None)
    assert set(prediction.results) == {"LRU", "S3-FIFO", "Belady"} and prediction.skipped == {}
    summary = prediction.summary()
    assert summary["model"]["description"] == "24 MB scratchpad (liveness-aware software-managed whole-tensor " \
                                              "buffer), H200 cost model"
    rows = {row["policy"]: row for row in summary["policies"]}
    assert rows["S3-FIFO"]["params"] == {"small_ratio": 0.1, "ghost_ratio": 0.9, "move_to_main_threshold": 2}
    assert rows["OPT"]["params"] == {} and rows["LRU"]["note"] == ""


def test_the_policies_follow_the_buffer_model_and_the_plan_stays_the_software_plan():
    trace = lab.generate_trace("Transformer", num_layers=2)
    pad = lab.predict_compile(trace, 24.0, "H200", policies=["LRU", "ML"], buffer="scratchpad")
    cache = lab.predict_compile(trace, 24.0, "H200", policies=["LRU", "ML"])  # the H200's own model: its L2
    assert cache.model.buffer == "cache" and cache.results["LRU"].buffer == "cache"
    assert cache.comparison.loc["LRU", "dram_traffic_mb"] == pytest.approx(
        lab.simulate(trace, "LRU", 24.0, "H200", buffer="cache", per_access=False).metrics["dram_traffic_mb"])
    assert cache.comparison.loc["LRU", "dram_traffic_mb"] != pad.comparison.loc["LRU", "dram_traffic_mb"]
    pd.testing.assert_frame_equal(cache.plan, pad.plan)
    assert cache.recommended_capacity_mb == pad.recommended_capacity_mb and cache.belady.buffer == "scratchpad"
    assert "ML" not in cache.comparison.index and "cannot run in the hardware cache" in cache.skipped["ML"]
    assert cache.comparison.loc["OPT", "opt_lower_mb"] == pad.comparison.loc["OPT", "opt_lower_mb"]


@pytest.mark.parametrize("buffer, error", [("l2", ValueError), (2, TypeError)])
def test_a_bad_buffer_model_is_refused_before_any_work(buffer, error):
    with pytest.raises(error, match=r"buffer must be one of \['scratchpad', 'cache'\]"):
        lab.predict_compile(pd.DataFrame({"tensor_id": ["a"], "size_mb": [1.0]}), 4.0, buffer=buffer)
