import matplotlib
import numpy as np
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
