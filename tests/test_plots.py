import matplotlib
import numpy as np
import pandas as pd
import pytest

import lab
from lab.ui import plots


@pytest.fixture(scope="module")
def scored():
    return lab.score(lab.generate_trace("Transformer", num_layers=3))


@pytest.mark.parametrize("policy", ["LRU", "FIFO", "ML", "Belady"])
def test_residency_matrix_adds_up_to_resident_bytes(scored, policy):
    result = lab.simulate(scored, policy, 40)
    matrix = plots.residency_matrix(result)
    np.testing.assert_array_equal(result.workload.tensor_bytes @ matrix, result.resident_bytes)


def test_figures_are_labelled(scored):
    result = lab.simulate(scored, "LRU", 40)
    heat = plots.occupancy_heatmap(result, scores=scored["eviction_score"])
    assert heat.axes[0].get_xlabel() == "access (time)" and "40 MB" in heat.axes[0].get_title()
    sweep = lab.sweep_capacity(scored, ["LRU", "Belady"], [8, 32, 128])
    curves = plots.capacity_curves(sweep, capacity_mb=40)
    assert [ax.get_ylabel() for ax in curves.axes] == ["hit rate (%)", "DRAM traffic, read + written (MB)"]
    legend = [t.get_text() for t in curves.axes[1].get_legend().get_texts()]
    assert {"LRU", "Belady (MIN)", "OPT (bound)", "OPT bracket"} <= set(legend)
    bound = next(line for line in curves.axes[1].get_lines() if line.get_label() == "OPT (bound)")
    opt = sweep[sweep["policy"] == "OPT"]
    np.testing.assert_allclose(bound.get_ydata(), opt["opt_lower_mb"])
    for policy in ("LRU", "Belady"):  # no policy's traffic goes below the bound
        assert (sweep.loc[sweep["policy"] == policy, "dram_traffic_mb"].to_numpy() >= opt["opt_lower_mb"] - 1e-9).all()
    bars = plots.metric_bars(lab.compare_policies(scored, capacity_mb=40))
    assert bars.axes[2].get_ylabel() == "total latency (ms)"
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
