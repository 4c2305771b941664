"""The interactive occupancy timeline (plotly): stays in the buffer, hover text, bounded memory on long traces."""

import tracemalloc

import numpy as np
import pytest

import lab
from lab.ui import plots

go = pytest.importorskip("plotly.graph_objects")


@pytest.mark.parametrize("policy", ["LRU", "FIFO", "ML", "Belady"])
def test_stays_reproduce_the_residency_matrix(scored, policy):
    result = lab.simulate(scored, policy, 40)
    stays = plots.residency_intervals(result)
    matrix = np.zeros((result.workload.n_tensors, result.workload.n_accesses), bool)
    for code, start, end in zip(stays["code"], stays["start"], stays["end"]):
        assert start < end and not matrix[code, start:end].any()  # stays of one tensor never overlap
        matrix[code, start:end] = True
    np.testing.assert_array_equal(matrix, plots.residency_matrix(result))
    assert set(stays["left"]) <= {"evicted", "dropped", "end"}
    assert (stays["left"] == "evicted").sum() == result.metrics["evictions"]


def test_the_timeline_is_an_interactive_figure_with_hover(scored):
    result = lab.simulate(scored, "LRU", 40)
    fig = plots.occupancy_timeline(result)
    assert isinstance(fig, go.Figure)
    assert fig.layout.xaxis.title.text == "access (time)" and fig.layout.yaxis.title.text == "resident (MB)"
    assert "40 MB" in fig.layout.title.text and fig.layout.dragmode == "zoom"
    names = [t.name for t in fig.data]
    assert {"weight", "activation", "resident total"} <= set(names)
    hover = next(t for t in fig.data if t.name == "tensor")
    text = "\n".join(hover.hovertext)
    assert "op " in text and "layer " in text and "in at access" in text  # which tensor, which op, which layer
    assert any(tensor_id in text for tensor_id in scored["tensor_id"].unique()[:20])
    total = next(t for t in fig.data if t.name == "resident total")
    assert max(total.y) <= 40 + 1e-9  # never above the capacity
    np.testing.assert_allclose(total.y, result.resident_bytes[np.asarray(total.x, int)] / 2 ** 20)


def test_a_trace_is_simulated_for_the_timeline(scored):
    fig = plots.occupancy_timeline(scored, policy="FIFO", capacity_mb=16)
    assert "FIFO" in fig.layout.title.text and "16 MB" in fig.layout.title.text


def test_a_captured_trace_names_modules_in_the_hover():
    trace = lab.generate_trace("Transformer", num_layers=2).assign(module=lambda t: "h." + t["layer"].astype(str))
    fig = plots.occupancy_timeline(trace, capacity_mb=32)
    hover = next(t for t in fig.data if t.name == "tensor")
    assert any("module h.1" in text for text in hover.hovertext)


def test_memory_is_bounded_on_a_1500_layer_trace():
    trace = lab.generate_trace("Transformer", num_layers=1500)
    result = lab.simulate(trace, "LRU", 64)
    n, tensors = result.workload.n_accesses, result.workload.n_tensors
    assert n * tensors > 1e9  # a tensors x accesses matrix would take over a GB
    tracemalloc.start()
    try:
        fig = plots.occupancy_timeline(result, max_intervals=120, max_points=400)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20
    drawn = sum(len(t.x) for t in fig.data if t.x is not None)
    assert drawn < 4 * 120 * (400 + 2 * 120) + 4 * 400  # what is drawn follows the limits, not the trace


def test_the_eviction_scatter_circles_the_ranking():
    schedule = lab.predict_schedule(lab.generate_trace("Transformer", num_layers=3), top=5)
    fig = plots.eviction_scatter(schedule.scored, schedule.ranking)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "tensor size (MB)" and ax.get_xscale() == "log"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "top 5 to evict" in legend and {"weight", "activation"} <= set(legend)
    circled = ax.collections[-1].get_offsets()
    assert len(circled) == 5
