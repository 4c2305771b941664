import math

import numpy as np
import pandas as pd
import pytest

import lab
from lab.units import BYTES_PER_MB


def test_plan_is_beladys_run_access_by_access():
    trace = lab.generate_trace("Transformer", num_layers=3)
    prediction = lab.predict_compile(trace, capacity_mb=40)
    optimum = lab.simulate(trace, "Belady", 40)
    plan = prediction.plan
    assert len(plan) == len(trace)
    on_chip = plan["action"].isin(["hit", "write"])
    assert on_chip.sum() == optimum.metrics["cache_hits"]
    assert on_chip.tolist() == optimum.hit.tolist()
    assert (plan["action"] == "write").tolist() == (optimum.hit & (trace["access"] == "write")).tolist()
    assert plan["dropped"].tolist() == optimum.dropped.tolist()
    victims = optimum.victims().groupby("access")["tensor_id"].apply(lambda s: ", ".join(map(str, s)))
    assert plan.loc[plan["evict"] != "", "evict"].tolist() == victims.tolist()
    np.testing.assert_allclose(plan["resident_mb"], optimum.resident_bytes / BYTES_PER_MB)


def test_stream_action_for_tensors_larger_than_the_buffer():
    trace = pd.DataFrame({"tensor_id": ["big", "a", "a"], "size_mb": [10.0, 1.0, 1.0]})
    assert lab.predict_compile(trace, 4).plan["action"].tolist() == ["stream", "load", "hit"]


def test_comparison_and_gap_closed():
    trace = lab.generate_trace("MoE", num_layers=2)
    comparison = lab.predict_compile(trace, capacity_mb=48).comparison
    assert comparison.index.tolist() == [p for p in lab.policy_names() if not lab.get_policy(p).offline] + ["Belady"]
    assert comparison.loc["LRU", "gap_closed_pct"] == 0 and comparison.loc["Belady", "gap_closed_pct"] == 100
    lru, opt, fifo = (comparison.loc[p, "dram_accesses"] for p in ("LRU", "Belady", "FIFO"))
    assert comparison.loc["FIFO", "gap_closed_pct"] == pytest.approx(100 * (lru - fifo) / (lru - opt))


def test_recommended_capacity_is_the_smallest_reaching_the_target():
    rng = np.random.default_rng(5)
    trace = pd.DataFrame({"tensor_id": rng.zipf(1.4, 3000) % 300, "size_mb": 1.0})
    prediction = lab.predict_compile(trace, capacity_mb=10)
    best = prediction.best_hit_rate
    assert best == pytest.approx(100 * (3000 - trace["tensor_id"].nunique()) / 3000)
    for q, capacity in prediction.recommended_capacity_mb.items():
        # unit sizes: capacities that matter are whole tensors, and Belady is monotone in capacity
        whole = math.floor(capacity)
        assert lab.simulate(trace, "Belady", whole).metrics["cache_hit_rate"] >= q * best
        assert lab.simulate(trace, "Belady", whole - 1).metrics["cache_hit_rate"] < q * best
    assert prediction.recommended_capacity_mb[0.9] <= prediction.recommended_capacity_mb[0.99]
    summary = prediction.summary()
    assert set(summary["recommended_capacity_mb"]) == {"90%", "99%"}


def test_no_reuse_means_no_recommendation():
    trace = pd.DataFrame({"tensor_id": ["a", "b", "c"], "size_mb": 1.0})
    prediction = lab.predict_compile(trace, 2)
    assert prediction.best_hit_rate == 0 and prediction.recommended_capacity_mb == {0.9: None, 0.99: None}
    assert math.isnan(prediction.comparison.loc["FIFO", "gap_closed_pct"])


def test_bad_capacity():
    with pytest.raises(ValueError, match="capacity_mb"):
        lab.predict_compile(lab.generate_trace("MLP", num_layers=1), capacity_mb=0)
