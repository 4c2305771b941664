"""The explorer, driven headlessly: set widget values, trigger the update, read the tables it produced."""

import dataclasses
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
    explorer.num_layers.value = -3
    assert "num_layers must be an integer >= 1" in explorer.error
    assert "Cannot run" in explorer.message.value
    assert explorer.metrics is None and explorer.table is None and explorer.headline.value == ""  # nothing stale
    explorer.policies.value = ()
    explorer.num_layers.value = 2
    assert explorer.error == "choose at least one policy"
    explorer.policies.value = ("FIFO",)
    assert explorer.error is None and explorer.message.value == ""
    assert explorer.metrics.index.tolist() == ["FIFO", "OPT"]


def test_a_hardware_preset_brings_its_buffer_its_buffer_model_and_costs(explorer):
    updates = []
    original = explorer.update
    explorer.update = lambda: (updates.append(1), original())
    explorer.hardware.value = "H100-SXM5"
    assert updates == [1]  # capacity and buffer model set together: one update
    assert explorer.capacity_mb.value == 50.0 and explorer.buffer.value == "cache"  # the H100's L2: a cache
    trace = lab.score(lab.generate_trace("Transformer"))
    featured = lab.policy_names(featured=True)
    ran = [p for p in featured if p != "ML"]  # ML's scores are per tensor; the cache holds lines
    assert explorer.metrics.index.tolist() == ran  # the optimum is a scratchpad schedule: not beside lines
    assert "choose the scratchpad buffer model" in explorer.headline.value
    for policy in ran:
        expected = lab.simulate(trace, policy, 50.0, "H100-SXM5", buffer="cache", per_access=False).metrics
        assert explorer.metrics.loc[policy, "total_latency"] == pytest.approx(expected["total_latency"])
    assert "cannot run in the hardware cache" in explorer.notes["ML"] and "ML</b>: ML cannot run" in \
        explorer.headline.value
    explorer.buffer.value = "scratchpad"  # the H100's costs, in a scratchpad
    assert explorer.metrics.loc["OPT", "opt_lower_mb"] == lab.optimal(trace, 50.0).lower_mb
    expected = lab.compare_policies(trace, featured, capacity_mb=50.0,
                                    cost=dataclasses.replace(lab.HARDWARE_PRESETS["H100-SXM5"], buffer="scratchpad"))
    assert explorer.metrics["total_latency"].tolist() == pytest.approx(expected["total_latency"].tolist())
    assert explorer.hardware.value == "H100-SXM5" and explorer.notes == {}


def test_the_buffer_model_control_switches_the_model_and_recomputes(explorer):
    assert explorer.buffer.value == "scratchpad" and explorer.buffer.options == ("scratchpad", "cache")
    assert explorer.buffer in explorer.widget.children[0].children[1].children  # shown beside the hardware
    assert set(explorer.metrics["buffer model"]) == {"scratchpad"} and explorer.model.buffer == "scratchpad"
    assert "<b>Model</b>: 64 MB scratchpad (liveness-aware software-managed whole-tensor buffer), seed cost model" \
        in explorer.headline.value
    explorer.policies.value = ("LRU", "S3-FIFO")
    before = explorer.metrics.copy()
    explorer.buffer.value = "cache"
    trace = lab.score(lab.generate_trace("Transformer"))
    for policy in ("LRU", "S3-FIFO"):
        expected = lab.simulate(trace, policy, 64.0, buffer="cache", per_access=False)
        assert explorer.metrics.loc[policy, "dram_traffic_mb"] == pytest.approx(expected.metrics["dram_traffic_mb"])
        assert explorer.results[policy].model == expected.model
    assert explorer.metrics.loc["LRU", "dram_traffic_mb"] != before.loc["LRU", "dram_traffic_mb"]
    assert explorer.metrics["buffer model"].to_dict() == {"LRU": "cache", "S3-FIFO": "cache"}
    assert explorer.metrics.loc["S3-FIFO", "parameters"] == "small_ratio=0.1, ghost_ratio=0.9, move_to_main_threshold=2"
    assert explorer.model.buffer == "cache" and "64 MB cache (hardware cache of 4 KiB lines" in explorer.headline.value
    assert "optimum" in explorer.headline.value and "is a schedule of the scratchpad" in explorer.headline.value
    assert explorer.timeline is None  # the occupancy views draw tensors; the cache holds lines
    explorer.buffer.value = "scratchpad"
    pd.testing.assert_frame_equal(explorer.metrics, before)


def test_a_degenerate_result_says_why_in_the_explorer(explorer):
    explorer.policies.value = ("LRU",)
    explorer.capacity_mb.value = 0.5
    note = explorer.notes["LRU"]
    assert note.startswith("Every tensor is larger than the buffer (0.5 MB") and explorer.metrics.loc["LRU", "note"] == note
    assert "LRU</b>: Every tensor is larger" in explorer.headline.value


@pytest.mark.parametrize("buffer, error", [("l2", ValueError), (3, TypeError)])
def test_a_bad_buffer_model_is_refused(buffer, error):
    with pytest.raises(error, match=r"buffer must be one of \['scratchpad', 'cache'\]"):
        Explorer(debounce_s=0, buffer=buffer)


def test_the_capacity_sweep(explorer):
    explorer.sweep_points = 5
    explorer.run_sweep()
    assert len(explorer.sweep) == 5 * (len(lab.policy_names(featured=True)) + 1)
    assert set(explorer.sweep["policy"]) == {*lab.policy_names(featured=True), "OPT"}
    # the progress is a widget beside the figure's output, not a tqdm bar inside it
    assert explorer.sweep_progress.value == explorer.sweep_progress.max == 5
    assert explorer.sweep_progress.bar_style == "success" and "5 capacities" in explorer.sweep_status.value
    assert explorer.sweep_progress not in explorer.curves_out.outputs
    expected = lab.sweep_capacity(lab.score(lab.generate_trace("Transformer")), lab.policy_names(featured=True),
                                  lab.default_capacities_mb(lab.generate_trace("Transformer"), 5))
    pd.testing.assert_series_equal(explorer.sweep["dram_traffic_mb"], expected["dram_traffic_mb"])


def test_headline_is_traffic_and_byte_hit_rate(explorer):
    columns = explorer.metrics.columns.tolist()
    assert columns[:4] == ["dram_traffic_mb", "dram_reads_mb", "dram_writes_mb", "byte_hit_rate"]
    traffic = explorer.metrics["dram_reads_mb"] + explorer.metrics["dram_writes_mb"]
    pd.testing.assert_series_equal(explorer.metrics["dram_traffic_mb"], traffic, check_names=False)
    online = explorer.metrics.drop(index=["OPT", "Belady"])  # Belady reads the future: not an online policy
    best = online["dram_traffic_mb"].idxmin()
    assert lab.best_online_policy(explorer.metrics) == [best]  # a clear lead on the seed example
    assert f"best online policy <b>{best}</b>" in explorer.headline.value
    assert f"{online.loc[best, 'dram_traffic_mb']:,.1f} MB" in explorer.headline.value
    assert "byte hit rate" in explorer.headline.value and "the optimum is <b>" in explorer.headline.value
    assert "(exact;" in explorer.headline.value  # the seed example's optimum is proven
    explorer.policies.value = ("Belady",)
    assert "best offline policy <b>Belady</b>" in explorer.headline.value


def test_every_registered_policy_can_be_shown(explorer):
    assert list(explorer.policies.options) == lab.policy_names()
    explorer.all_policies_button.click()
    assert explorer.metrics.index.tolist() == [*lab.policy_names(), "OPT"]
    assert explorer.error is None


def test_the_optimum_is_skipped_with_a_message_on_long_traces():
    explorer = Explorer(debounce_s=0, optimum_max_accesses=100)
    assert "OPT" not in explorer.metrics.index
    assert "skipped" in explorer.optimum_note and "521 accesses" in explorer.optimum_note
    assert "skipped" in explorer.headline.value
    explorer.sweep_points = 3
    explorer.run_sweep()
    assert "OPT" not in set(explorer.sweep["policy"]) and "optimum skipped" in explorer.sweep_status.value


def test_the_timeline_follows_the_shown_policy(explorer):
    explorer.policies.value = ("FIFO", "LRU")
    assert "FIFO" in explorer.timeline.layout.title.text and "64 MB" in explorer.timeline.layout.title.text


def test_a_change_of_capacity_reuses_the_workload(explorer, monkeypatch):
    calls = []
    original = explorer._trace
    monkeypatch.setattr(explorer, "_trace", lambda: (calls.append(1), original())[1])
    explorer.capacity_mb.value = 16.0
    explorer.policies.value = ("LRU",)
    assert calls == []
    explorer.seed.value = 5
    assert calls == [1]


def test_synthetic_and_captured_controls_swap():
    explorer = Explorer(debounce_s=0)
    assert explorer.preset.layout.display == "none" and explorer.model_type.layout.display is None
    explorer.batch_size.value = -1
    explorer.source.value = "captured"  # a bad value: a message, no capture, no traceback
    assert explorer.model_type.layout.display == "none" and explorer.preset.layout.display is None
    assert "batch_size" in explorer.error


@pytest.mark.slow
def test_a_captured_preset(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    explorer = Explorer(debounce_s=0, source="captured", preset="gpt2", batch_size=1, seq_length=16,
                        capture_layers=2, training=True, weight_dtype="bf16", capacity_mb=4.0,
                        policies=("LRU", "Belady"))
    assert explorer.error is None, explorer.error
    expected = lab.capture_model("gpt2", batch_size=1, seq_length=16, training=True, num_layers=2)
    pd.testing.assert_frame_equal(explorer.trace, expected)
    assert explorer.metrics.index.tolist() == ["LRU", "Belady", "OPT"]
    assert explorer.metrics.loc["OPT", "opt_lower_mb"] <= explorer.metrics["dram_traffic_mb"].min() + 1e-9
    assert set(explorer.trace["phase"]) >= {"forward", "backward"}
    hover = "\n".join(next(t for t in explorer.timeline.data if t.name == "tensor").hovertext)
    assert "module " in hover and "layer " in hover


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


def test_the_capacity_sweep_runs_in_the_chosen_buffer_model():
    explorer = Explorer(debounce_s=0, num_layers=2, policies=("LRU", "ML"), buffer="cache")
    assert explorer.metrics.index.tolist() == ["LRU"] and "ML" in explorer.notes
    explorer.sweep_points = 2
    explorer.run_sweep()
    assert explorer.error is None and set(explorer.sweep["policy"]) == {"LRU"}
    trace = lab.score(lab.generate_trace("Transformer", num_layers=2))
    for row in explorer.sweep[explorer.sweep["policy"] == "LRU"].itertuples():
        expected = lab.simulate(trace, "LRU", row.capacity_mb, buffer="cache", per_access=False).metrics
        assert row.dram_traffic_mb == pytest.approx(expected["dram_traffic_mb"])


# --- issue 24: exact capacities, nothing stale on screen, the table in words -----------------------------------


@pytest.fixture
def drawn(monkeypatch):
    """Explorers that draw into their outputs as in a notebook (each value recorded as text), headless."""
    import lab.ui.widgets as widgets

    def render(output, *values):
        output.outputs = tuple({"output_type": "display_data", "data": {"text/plain": repr(v)}, "metadata": {}}
                               for v in values)

    monkeypatch.setattr(widgets, "get_ipython", lambda: object())
    monkeypatch.setattr(widgets.Explorer, "_render", staticmethod(render))
    return lambda **kwargs: Explorer(debounce_s=0, **kwargs)


def test_a_preset_simulates_exactly_its_buffer_and_the_slider_never_rounds_it(explorer):
    explorer.policies.value = ("LRU",)
    explorer.hardware.value = "H100-SXM5"  # 50 MB of L2: not a step of the log slider (2 ** 5.75 = 53.82 MB)
    assert explorer.capacity_mb.value == 50.0 and explorer.model.capacity_mb == 50.0
    assert "At 50 MB" in explorer.headline.value
    trace = lab.score(lab.generate_trace("Transformer"))
    expected = lab.simulate(trace, "LRU", 50.0, "H100-SXM5", per_access=False).metrics["dram_traffic_mb"]
    assert explorer.metrics.loc["LRU", "dram_traffic_mb"] == pytest.approx(expected)
    explorer.capacity_slider.value = 2 ** 5.75  # the page snaps the slider to its nearest step and sends it back
    assert explorer.capacity_mb.value == 50.0 and explorer.model.capacity_mb == 50.0
    explorer.capacity_slider.value = 2 ** 5.5  # a step down, moved by the user: the capacity follows
    assert explorer.capacity_mb.value == 45.25 and explorer.model.capacity_mb == 45.25
    explorer.capacity_mb.value = 40.0  # typed: exact, the slider as near as its steps go
    assert explorer.model.capacity_mb == 40.0 and abs(explorer.capacity_slider.value - 40.0) < 4
    explorer.hardware.value = "A100-SXM4-40GB"
    assert explorer.model.capacity_mb == 40.0 and explorer.model.buffer == "cache"
    explorer.capacity_mb.value = 0.0
    assert "capacity_mb must be" in explorer.error and explorer.metrics is None


def test_a_sweep_is_cleared_when_its_inputs_change(drawn):
    explorer = drawn(num_layers=2, policies=("LRU", "FIFO"))
    explorer.sweep_points = 3
    for change, what in ((lambda: setattr(explorer.num_layers, "value", 3), "workload"),
                         (lambda: setattr(explorer.policies, "value", ("LRU",)), "policies"),
                         (lambda: setattr(explorer.hardware, "value", "H200"), "hardware"),
                         (lambda: setattr(explorer.buffer, "value", "scratchpad"), "buffer model")):
        explorer.run_sweep()
        assert explorer.sweep is not None and not explorer.sweep_stale and explorer.curves_out.outputs
        explorer.capacity_mb.value = explorer.capacity_mb.value / 2  # the capacity is only marked on the sweep
        assert explorer.sweep is not None and not explorer.sweep_stale
        change()
        assert explorer.error is None, explorer.error
        assert explorer.sweep is None and explorer.sweep_stale and explorer.curves_out.outputs == ()
        assert f"the {what}" in explorer.sweep_status.value and "changed since it ran" in explorer.sweep_status.value
        assert "cleared" in explorer.sweep_status.value


def test_an_input_error_clears_every_result(drawn):
    explorer = drawn(num_layers=2)
    explorer.sweep_points = 3
    explorer.run_sweep()
    outputs = [explorer.metrics_out, explorer.ranking_out, explorer.curves_out]
    assert all(o.outputs for o in outputs) and explorer.headline.value
    explorer.seq_length.value = 0
    assert "seq_length" in explorer.error and "Cannot run" in explorer.message.value
    assert all(o.outputs == () for o in [*outputs, explorer.heatmap_out, explorer.timeline_out,
                                         explorer.validation_out])
    assert explorer.headline.value == "" and explorer.metrics is None and explorer.results is None
    assert explorer.sweep is None and explorer.timeline is None and not explorer.stale
    explorer.seq_length.value = 64  # fixed: everything back
    assert explorer.error is None and explorer.metrics_out.outputs and explorer.headline.value
    assert explorer.message.value == ""


def test_results_are_greyed_from_a_change_until_its_update():
    explorer = Explorer(debounce_s=60)  # the update waits: the old results are on screen meanwhile
    try:
        assert not explorer.stale
        explorer.seed.value = 3
        assert explorer.stale and "lab-stale" in explorer.results_box._dom_classes
        assert ".lab-stale" in explorer.widget.children[-1].value  # the style that greys them, on the page
        explorer.update()
        assert not explorer.stale
    finally:
        explorer._timer.cancel()


def test_the_table_shows_the_headline_metrics_in_words_with_units(explorer):
    table = explorer.table
    assert table.columns.tolist() == ["DRAM traffic (MB)", "read (MB)", "written (MB)", "byte hit rate (%)",
                                      "hit rate (%)", "evictions", "vs optimum (%)", "latency (ms)", "buffer model",
                                      "parameters"]  # no note: no result is degenerate
    assert not table.isna().all().any()
    assert table.index.tolist() == explorer.metrics.index.tolist() and table.index.name == "policy"
    optimum = explorer.metrics.loc["OPT", "opt_lower_mb"]
    expected = 100 * (explorer.metrics["dram_traffic_mb"] - optimum) / optimum
    assert table["vs optimum (%)"].tolist() == pytest.approx(expected.tolist())
    assert table.loc["OPT", "vs optimum (%)"] == 0
    assert table["hit rate (%)"].tolist() == explorer.metrics["cache_hit_rate"].tolist()
    from lab.ui.widgets import table_html

    html = table_html(table).data
    assert "DRAM traffic (MB)" in html and "vs optimum: % more DRAM traffic than the optimum" in html
    assert "dram_traffic_mb" not in html and "nan" not in html.lower()
    explorer.capacity_mb.value = 0.5  # degenerate: the note says why
    assert explorer.table.columns[-1] == "note" and explorer.table["note"].str.startswith("Every tensor").any()
    explorer.buffer.value = "cache"  # no optimum beside lines: no column for it
    assert "vs optimum (%)" not in explorer.table


def test_top_evictions_group_tied_scores(explorer):
    groups = explorer.groups
    scores = lab.predict_schedule(lab.generate_trace("Transformer"), top=None).ranking["eviction_score"]
    assert groups["tensors"].sum() == len(scores)  # every tensor, once
    assert groups["tensors"].tolist() == scores.round(3).value_counts(sort=False).loc[
        groups["eviction_score"]].tolist()
    first = groups.iloc[0]
    assert (first["first_rank"], first["last_rank"], first["tensors"]) == (1, 24, 24)  # the seed's top 24 tie
    assert first["examples"].endswith(", ...") and first["size_mb"] == pytest.approx(24 * 8.0)
    from lab.ui.widgets import groups_table

    html = groups_table(groups.head(3)).to_html()
    assert "1-24" in html and "tensors (first few)" in html


def test_near_ties_for_best_are_called_ties():
    from lab.ui.widgets import headline_html

    metrics = pd.DataFrame({"dram_traffic_mb": [1000.0, 1000.04, 1200.0, 900.0], "dram_reads_mb": [800.0] * 4,
                            "dram_writes_mb": [200.0] * 4, "byte_hit_rate": [50.0] * 4,
                            "opt_lower_mb": [float("nan")] * 3 + [900.0], "opt_upper_mb": [float("nan")] * 3 + [900.0]},
                           index=pd.Index(["FIFO", "LRU", "SIEVE", "OPT"], name="policy"))
    text = headline_html(metrics, 64.0)  # LRU 0.004 % above FIFO: no winner
    assert "2 online policies tie for best (within 0.1 % of the least DRAM traffic): <b>FIFO</b>, <b>LRU</b>" in text
    assert "best online policy" not in text
    metrics.loc["LRU", "dram_traffic_mb"] = 1002.0  # 0.2 % apart: FIFO leads
    assert "best online policy <b>FIFO</b>, DRAM traffic <b>1,000.0 MB</b>" in headline_html(metrics, 64.0)


def test_step_time_and_the_planner_are_shown_where_the_trace_records_its_ops(explorer, monkeypatch):
    from lab.ui.widgets import table_html
    from tests.test_planning import _layers

    assert "step time, eager (ms)" not in explorer.table  # a generated trace records no ops: no time, no column
    assert explorer.time_comparison is None and "does not record its ops" in explorer.time_note
    assert "step time" not in explorer.headline.value
    trace = _layers(3, weight_mb=8.0, act_mb=2.0)  # records its ops (op_index, flops, launches, ...) as captures do
    monkeypatch.setattr(explorer, "_trace", lambda: trace)
    explorer.policies.value = ("LRU", "FIFO", "Belady")
    explorer.num_layers.value = 4  # a new workload: the trace above
    assert explorer.error is None and explorer.trace is trace
    assert "step time, eager (ms)" not in explorer.table  # the seed preset has no physical numbers
    assert "cost preset 'seed' has no physical numbers" in explorer.time_note
    explorer.hardware.value = "H200"  # its L2: the cache model, 60 MB
    explorer.capacity_mb.value = 12.0
    assert explorer.buffer.value == "cache" and explorer.error is None
    for policy in ("LRU", "Belady"):
        expected = lab.simulate(trace, policy, 12.0, "H200", buffer="cache", per_access=False).metrics
        assert explorer.table.loc[policy, "step time, eager (ms)"] == pytest.approx(expected["step_time_ms"])
        assert explorer.metrics.loc[policy, "gpu_time_ms"] == pytest.approx(expected["gpu_time_ms"])
    assert "step time <b>" in explorer.headline.value and "eager, lab.sim.timing" in explorer.headline.value
    assert "lab.sim.timing's model" in table_html(explorer.table).data
    comparison = explorer.time_comparison  # the planner's model, whatever the buffer model of the table
    scored = lab.score(trace)
    expected = lab.compare_time(scored, 12.0, "H200", list(explorer.policies.value))
    pd.testing.assert_frame_equal(comparison, expected)
    assert comparison.index[-2:].tolist() == ["PLAN", "PLAN (lower bound)"] and explorer.time_note == ""
    assert "scratchpad" in comparison.attrs["model"] and "cost H200" in comparison.attrs["model"]
    assert (comparison["graph_step_time_ms"]["PLAN"]
            <= comparison["graph_step_time_ms"].drop(["PLAN", "PLAN (lower bound)"]).min() * (1 + 1e-9))
    explorer.capacity_mb.value = 6.0  # a new update: made again, at the new capacity
    assert "capacity 6 MB" in explorer.time_comparison.attrs["model"]
    explorer.capacity_mb.value = -1.0  # an input error: nothing stale stays
    assert explorer.time_comparison is None and explorer.time_note.startswith("No results: capacity_mb")
