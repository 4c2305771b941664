import matplotlib
import numpy as np
import pandas as pd
import pytest

import lab
from lab.ui import plots


@pytest.mark.parametrize("policy", ["LRU", "FIFO", "ML", "Belady"])
def test_residency_matrix_adds_up_to_resident_bytes(scored, policy):
    result = lab.simulate(scored, policy, 40)
    matrix = plots.residency_matrix(result)
    np.testing.assert_array_equal(result.workload.tensor_bytes @ matrix, result.resident_bytes)


def test_figures_are_labelled(scored):
    result = lab.simulate(scored, "LRU", 40)
    heat = plots.occupancy_heatmap(result, scores=scored["eviction_score"])
    assert heat.axes[0].get_xlabel() == "time (accesses)" and "40 MB" in heat.axes[0].get_title()
    sweep = lab.sweep_capacity(scored, ["LRU", "Belady"], [8, 32, 128])
    curves = plots.capacity_curves(sweep, capacity_mb=40)
    assert [ax.get_ylabel() for ax in curves.axes] == ["byte hit rate (%)", "DRAM traffic, read + written (MB)"]
    legend = [t.get_text() for t in curves.legends[0].get_texts()]
    opt = sweep[sweep["policy"] == "OPT"]
    assert len(opt) == 3 and opt["opt_exact"].all()  # exact at every capacity: one line OPT
    assert {"LRU", "Belady (MIN)", "OPT"} <= set(legend) and not {"OPT (lower bound)", "OPT (achievable)"} & set(legend)
    bound = next(line for line in curves.axes[1].get_lines() if line.get_label() == "OPT")
    np.testing.assert_allclose(bound.get_ydata(), opt["opt_lower_mb"])
    # a bracket at some capacity: two lines, the achievable end solid and the lower bound dashed
    bracketed = sweep.copy()
    first = bracketed.index[bracketed["policy"] == "OPT"][0]
    bracketed.loc[first, "opt_lower_mb"] -= 1.0
    bracketed.loc[first, "opt_exact"] = False
    lower = bracketed.loc[[first]].assign(policy="OPT (lower bound)",
                                          dram_traffic_mb=bracketed.at[first, "opt_lower_mb"])
    bracketed = pd.concat([bracketed.replace({"policy": {"OPT": "OPT (achievable)"}}), lower], ignore_index=True)
    names = [line.get_label() for line in plots.capacity_curves(bracketed).axes[1].get_lines()]
    assert "OPT (achievable)" in names and "OPT (lower bound)" in names and "OPT" not in names
    for policy in ("LRU", "Belady"):  # no policy's traffic goes below the bound
        assert (sweep.loc[sweep["policy"] == policy, "dram_traffic_mb"].to_numpy() >= opt["opt_lower_mb"] - 1e-9).all()
    bars = plots.metric_bars(lab.compare_policies(scored, capacity_mb=40))
    assert bars.axes[2].get_xlabel().startswith("total latency (ms)")  # horizontal bars: the value along x
    hist = plots.reuse_distance_histogram(scored, reference=lab.generate_trace("CNN"))
    assert hist.axes[0].get_xlabel() == "reuse distance (accesses)"
    for fig in (heat, curves, bars, hist):
        assert isinstance(fig, matplotlib.figure.Figure)
        fig.canvas.draw()


def test_long_traces_are_binned(scored):
    result = lab.simulate(scored, "LRU", 40)
    fig = plots.occupancy_heatmap(result, max_tensors=10, max_time_bins=50)
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape[0] == 10 and image.shape[1] <= 50


def test_eviction_table_is_styled_and_keeps_the_ranking(scored):
    ranking = lab.predict_schedule(scored, top=5).ranking
    styled = plots.eviction_table(ranking)
    html = styled.to_html()
    assert styled.data is ranking and "first access" in html or ranking["reuse_distance"].notna().all()
    assert "background-color" in html


def test_the_heatmap_cells_are_the_residency_of_the_shown_tensors():
    trace = lab.score(lab.generate_trace("Transformer", num_layers=2))
    result = lab.simulate(trace, "LRU", 8)
    rows = np.arange(min(40, result.workload.n_tensors))
    cells = plots._occupancy_cells(result, rows, None, max_time_bins=len(trace))  # one access per bin: exact
    expected = np.where(plots.residency_matrix(result)[rows], 1.0, np.nan)
    np.testing.assert_array_equal(cells, expected)


def test_the_heatmap_of_a_long_trace_stays_small():
    import tracemalloc

    n = 400_000
    trace = pd.DataFrame({"tensor_id": np.arange(n) % 5000, "size_mb": 1.0})
    result = lab.simulate(trace, "LRU", 1000)
    tracemalloc.start()
    fig = plots.occupancy_heatmap(result, scores=np.random.default_rng(0).random(n))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    matplotlib.pyplot.close(fig)
    # the whole tensors x accesses matrix would be 5,000 x 400,000 cells (16 GB as floats)
    assert peak < 200 * 2**20


def test_each_policy_and_kind_keeps_its_colour_in_every_figure():
    trace = lab.score(lab.generate_trace("Transformer", num_layers=2))
    first = plots.capacity_curves(lab.sweep_capacity(trace, ["LRU", "FIFO"], [1, 8], optimum=False))
    second = plots.capacity_curves(lab.sweep_capacity(trace, ["SIEVE", "FIFO", "LRU"], [1, 8], optimum=False))
    colours = [{line.get_label(): line.get_color() for line in fig.axes[0].get_lines()} for fig in (first, second)]
    assert colours[0]["LRU"] == colours[1]["LRU"] and colours[0]["FIFO"] == colours[1]["FIFO"]
    assert len({str(c) for c in colours[1].values()}) == 3
    assert plots.group_color("weight") == plots.group_color("weight") != plots.group_color("activation")
    for fig in (first, second):
        matplotlib.pyplot.close(fig)


def test_capacity_curves_mark_the_hardware_presets_buffers(scored):
    sweep = lab.sweep_capacity(scored, ["LRU"], [8, 32, 128], optimum=False)
    fig = plots.capacity_curves(sweep)
    marks = {t.get_text().strip() for t in fig.axes[1].texts}
    assert marks == {"A100 40, H100 50, H200 60 MB"}  # close sizes share one label
    assert sum(line.get_linestyle() == "-." for line in fig.axes[1].get_lines()) == 3
    narrow = plots.capacity_curves(lab.sweep_capacity(scored, ["LRU"], [1, 4], optimum=False))
    assert not narrow.axes[0].texts  # no preset's buffer between 1 and 4 MB
    unmarked = plots.capacity_curves(sweep, hardware=False)
    assert not unmarked.axes[0].texts


def _axis_labels(fig):
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_save_figure_writes_svg_and_png_where_the_report_says(scored, tmp_path, monkeypatch):
    import xml.etree.ElementTree as ET

    fig = plots.metric_bars(lab.compare_policies(scored, ["LRU", "FIFO"], capacity_mb=40, optimum=False))
    monkeypatch.delenv("LAB_REPORT_FIGURES", raising=False)
    assert plots.save_figure(fig, "bars") is fig and not list(tmp_path.iterdir())  # outside a report: nothing
    monkeypatch.setenv("LAB_REPORT_FIGURES", str(tmp_path / "figures"))
    plots.save_figure(fig, "bars")
    svg = ET.parse(tmp_path / "figures" / "bars.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    text = (tmp_path / "figures" / "bars.svg").read_text()
    assert "DRAM traffic, read + written (MB)" in text  # text stays text: searchable, editable
    png = (tmp_path / "figures" / "bars.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    width = int.from_bytes(png[16:20], "big")  # the IHDR chunk: the figure's inches at PNG_DPI
    assert width == round(fig.get_figwidth() * plots.PNG_DPI)
    with pytest.raises(ValueError, match="figure name"):
        plots.save_figure(fig, "../escape")


def test_traffic_by_module_layer_phase_shows_reads_and_writes_with_units():
    from lab.analysis.attribution import dram_traffic_by_module_layer_phase, module_family

    assert module_family(["m.h.3.attn", "m.h.12", ""]).tolist() == ["m.h.*.attn", "m.h.*", "(no module)"]
    trace = lab.generate_trace("Transformer", num_layers=3)
    trace = trace.assign(module=[f"model.h.{layer}.{op}" for layer, op in zip(trace["layer"], trace["op"])],
                         phase="forward")
    result = lab.simulate(trace, "LRU", 8)
    tables = dram_traffic_by_module_layer_phase(result, trace, top_modules=4)
    assert list(tables) == ["phase", "layer", "module"]
    assert len(tables["module"]) == 5 and tables["module"].index[-1] == "(other)"
    total = result.metrics["dram_traffic_mb"]
    for table in tables.values():  # every split adds up to the whole traffic
        assert table["dram_mb"].sum() == pytest.approx(total)
    fig = plots.traffic_by_module_layer_phase(tables, "title")
    # phase and module: horizontal bars (MB along x); layer: vertical bars (MB along y)
    assert _axis_labels(fig) == [("DRAM traffic (MB)", "phase"), (fig.axes[1].get_xlabel(), "DRAM traffic (MB)"),
                                 ("DRAM traffic (MB)", "module (all layers)")]
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"read", "written"}


def test_reuse_histogram_names_synthetic_and_captured():
    trace = lab.generate_trace("MLP", num_layers=2)
    fig = plots.reuse_distance_histogram(trace, reference=trace, labels=("synthetic", "captured gpt2"))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["synthetic", "captured gpt2"]


def test_eviction_table_states_units():
    ranking = lab.predict_schedule(lab.generate_trace("MLP", num_layers=2), top=3).ranking
    html = plots.eviction_table(ranking).to_html()
    assert "size (MB)" in html and "reuse distance (accesses)" in html
