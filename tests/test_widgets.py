"""The explorer, driven headlessly: set widget values, trigger the update, read the tables it produced."""

import time

import pandas as pd
import pytest

import lab
from lab.ui.widgets import Explorer


@pytest.fixture
def explorer():
    return Explorer(debounce_s=0)


def test_default_explorer_shows_every_table(explorer):
    assert explorer.error is None
    assert explorer.metrics.index.tolist() == [*lab.policy_names(featured=True), "OPT"]
    assert explorer.metrics.loc["OPT", "opt_lower_mb"] <= explorer.metrics["dram_traffic_mb"].min() + 1e-9
    assert set(lab.policy_names(featured=True)) >= {"LRU", "ML", "Belady"}
    assert len(explorer.ranking) == 20 and explorer.ranking["rank"].tolist() == list(range(1, 21))
    assert explorer.validation["name"].tolist()[:3] == ["reuse_entropy", "reuse_entropy_normalized",
                                                        "temporal_locality"]
    assert explorer.widget.children  # a layout to display


def test_tables_follow_the_controls(explorer):
    explorer.model_type.value = "MoE"
    explorer.num_layers.value = 3
    explorer.capacity_mb.value = 32.0
    explorer.policies.value = ("LRU", "Belady")
    trace = lab.score(lab.generate_trace("MoE", 3, 32, 128, 0.3, 0))
    expected = lab.compare_policies(trace, ["LRU", "Belady"], 32.0)
    assert explorer.metrics.index.tolist() == ["LRU", "Belady", "OPT"]
    pd.testing.assert_series_equal(explorer.metrics["dram_accesses"], expected["dram_accesses"])
    pd.testing.assert_series_equal(explorer.metrics["gap_closed_pct"], expected["gap_closed_pct"])
    assert explorer.metrics.loc["Belady", "dram_accesses"] <= explorer.metrics.loc["LRU", "dram_accesses"]


def test_bad_values_show_a_message_not_a_traceback(explorer):
    before = explorer.metrics.copy()
    explorer.num_layers.value = -3
    assert "num_layers must be an integer >= 1" in explorer.error
    assert "Cannot run" in explorer.message.value
    pd.testing.assert_frame_equal(explorer.metrics, before)  # the last good results stay
    explorer.policies.value = ()
    explorer.num_layers.value = 2
    assert explorer.error == "choose at least one policy"
    explorer.policies.value = ("FIFO",)
    assert explorer.error is None and explorer.message.value == ""
    assert explorer.metrics.index.tolist() == ["FIFO", "OPT"]


def test_a_hardware_preset_brings_its_buffer_and_costs(explorer):
    explorer.hardware.value = "H100-SXM5"
    assert explorer.capacity_mb.value == 50.0
    trace = lab.score(lab.generate_trace("Transformer"))
    expected = lab.compare_policies(trace, lab.policy_names(featured=True), capacity_mb=50.0, cost="H100-SXM5")
    assert explorer.metrics["total_latency"].tolist() == pytest.approx(expected["total_latency"].tolist())
    assert explorer.metrics.loc["OPT", "opt_lower_mb"] == lab.optimal(trace, 50.0).lower_mb


def test_the_capacity_sweep(explorer):
    explorer.sweep_points = 5
    explorer.run_sweep()
    assert len(explorer.sweep) == 5 * (len(lab.policy_names(featured=True)) + 1)
    assert set(explorer.sweep["policy"]) == {*lab.policy_names(featured=True), "OPT"}


def test_changes_are_debounced():
    explorer = Explorer(debounce_s=0.1)
    updates = []
    original = explorer.update
    explorer.update = lambda: (updates.append(1), original())
    explorer.seed.value = 1
    explorer.seed.value = 2
    explorer.seed.value = 3
    deadline = time.monotonic() + 30
    while not updates and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # room for any further (wrong) update to fire
    assert len(updates) == 1 and explorer.error is None
    assert explorer.metrics is not None
