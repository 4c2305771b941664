"""Every figure the reports, tutorials and the explorer draw, rendered from realistic inputs (the seed's example
workload with every registered policy and the optimum, a captured GPT-2 training step, a leave-one-model-out
table, a study), and checked the way a reader looks at it: no two texts overlap (tick labels, annotations,
titles, legends), no text leaves the figure, no label covers a curve, no legend covers a panel, fonts readable
at the width a notebook shows, at most about eight highlighted policies, one colour per policy in every panel.
"""

import itertools
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.legend import Legend
from matplotlib.text import Text

import lab
from lab.ui import plots

DISPLAY_WIDTH_IN = 12.0  # a notebook's or a report's output column: wider figures are shown shrunk to it
MIN_FONT_PT = 7.0  # the smallest text a reader can read at that width
TOLERANCE_PX = 0.5


def _drawn_texts(fig):
    """Every text the figure draws: visible and not empty; tick labels only for ticks within the axis' view
    (matplotlib keeps labels for ticks beyond it, undrawn)."""
    drawn_tick = {}
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * abs(high - low)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                inside = tick.get_visible() and low - slack <= tick.get_loc() <= high + slack
                for label in (tick.label1, tick.label2):
                    drawn_tick[id(label)] = inside and label.get_visible()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
            and drawn_tick.get(id(t), True) and (t.axes is None or t.axes.get_visible())]


def _overlap(a, b) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > TOLERANCE_PX) and (min(a.y1, b.y1) - max(a.y0, b.y0) > TOLERANCE_PX)


def _owner_legend(text, legends):
    return next((legend for legend in legends if text in legend.get_texts() or text is legend.get_title()), None)


def _line_points(line, step_px: float = 2.0) -> np.ndarray:
    """The display coordinates of ``line``'s path, densified to ``step_px``: a segment crossing a text counts."""
    xy = np.asarray(line.get_transform().transform(np.asarray(line.get_xydata(), np.float64)))
    xy = xy[np.isfinite(xy).all(axis=1)]
    if len(xy) < 2:
        return xy
    parts = [xy[:1]]
    for a, b in zip(xy[:-1], xy[1:]):
        n = max(1, int(np.hypot(*(b - a)) / step_px))
        parts.append(a + (b - a) * np.linspace(0, 1, n + 1)[1:, None])
    return np.concatenate(parts)


def layout_problems(fig) -> list:
    """What a reader would stumble on in ``fig``, in words (empty: none)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = _drawn_texts(fig)
    boxes = {id(t): t.get_window_extent(renderer) for t in texts}
    legends = [a for a in fig.findobj(Legend) if a.get_visible()]
    problems = []
    shrink = min(1.0, DISPLAY_WIDTH_IN / fig.get_figwidth())
    for t in texts:
        box = boxes[id(t)]
        if (box.x0 < -TOLERANCE_PX or box.y0 < -TOLERANCE_PX or box.x1 > fig.bbox.x1 + TOLERANCE_PX
                or box.y1 > fig.bbox.y1 + TOLERANCE_PX):
            problems.append(f"text outside the figure: {t.get_text()!r}")
        if t.get_fontsize() * shrink < MIN_FONT_PT - 1e-6:
            problems.append(f"text too small: {t.get_text()!r} at {t.get_fontsize():.1f} pt in a "
                            f"{fig.get_figwidth():.1f} in wide figure")
    for a, b in itertools.combinations(texts, 2):
        if _overlap(boxes[id(a)], boxes[id(b)]):
            problems.append(f"texts overlap: {a.get_text()!r} and {b.get_text()!r}")
    for legend in legends:
        frame = legend.get_window_extent(renderer)
        own = legend.axes
        for ax in fig.axes:
            if ax is not own and ax.get_visible() and _overlap(frame, ax.get_window_extent(renderer)):
                problems.append(f"a legend covers a panel: {[t.get_text() for t in legend.get_texts()][:3]}")
        for t in texts:
            if _owner_legend(t, [legend]) is None and _overlap(frame, boxes[id(t)]):
                problems.append(f"a legend covers the text {t.get_text()!r}")
        if (frame.x0 < -TOLERANCE_PX or frame.x1 > fig.bbox.x1 + TOLERANCE_PX or frame.y0 < -TOLERANCE_PX
                or frame.y1 > fig.bbox.y1 + TOLERANCE_PX):
            problems.append("a legend leaves the figure")
    for ax in fig.axes:  # a label written on a panel covers none of its curves
        points = [_line_points(line) for line in ax.get_lines() if line.get_visible()]
        points = np.concatenate(points) if points else np.zeros((0, 2))
        for t in ax.texts:
            if not t.get_visible() or not t.get_text().strip() or not len(points):
                continue
            box = boxes.get(id(t)) or t.get_window_extent(renderer)
            inside = ((points[:, 0] > box.x0 + 1) & (points[:, 0] < box.x1 - 1) & (points[:, 1] > box.y0 + 1)
                      & (points[:, 1] < box.y1 - 1))
            if inside.any():
                problems.append(f"the label {t.get_text()!r} covers a curve")
    return problems


def _policy_lines(fig):
    """{label: set of colours} of the lines of each policy (the optimum's and the greyed ones left out)."""
    colours: dict = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label()
            if label.startswith("_") or lab.analysis.sweep.is_optimum(label) or label.startswith("other "):
                continue
            colours.setdefault(label, set()).add(matplotlib.colors.to_hex(line.get_color()))
    return colours


def assert_readable(fig, max_highlighted: int = 8):
    problems = layout_problems(fig)
    assert not problems, "\n".join(problems[:20]) + (f"\n... {len(problems) - 20} more" if len(problems) > 20 else "")
    colours = _policy_lines(fig)
    assert all(len(c) == 1 for c in colours.values()), colours  # a policy keeps its colour in every panel
    legend_entries = [t.get_text() for legend in fig.findobj(Legend) for t in legend.get_texts()]
    highlighted = {e for e in legend_entries if not e.startswith("other ")} & (
        set(colours) | {"OPT", "OPT (lower bound)", "OPT (achievable)"})
    assert len(highlighted) <= max_highlighted, sorted(highlighted)
    matplotlib.pyplot.close(fig)


# --- realistic inputs ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed_example():
    """The seed's example request (Transformer, 12 layers, batch 32, sequence 128, reuse 0.3), scored."""
    trace = lab.generate_trace("Transformer", 12, 32, 128, 0.3, 0)
    return lab.predict_schedule(trace, top=20)


@pytest.fixture(scope="module")
def comparison(seed_example):
    return lab.compare_policies(seed_example.scored, "all", capacity_mb=64.0)  # every registered policy, the optimum


@pytest.fixture(scope="module")
def sweep(seed_example):
    scored = seed_example.scored
    return lab.sweep_capacity(scored, None, lab.default_capacities_mb(scored, 16))


@pytest.fixture(scope="module")
def captured():
    """A captured GPT-2 training step (forward, backward, AdamW: every tensor kind, long module names)."""
    pytest.importorskip("torch")
    return lab.capture_model("gpt2", batch_size=1, seq_length=64, num_layers=4, training=True)


H100 = "H100-SXM5"


@pytest.fixture(scope="module")
def captured_runs(captured):
    import dataclasses

    hardware = dataclasses.replace(lab.HARDWARE_PRESETS[H100], buffer="scratchpad")
    return lab.run_policies(captured, None, 16.0, hardware)


# --- the figures ----------------------------------------------------------------------------------------------

def test_the_overlap_check_catches_what_a_reader_would():
    """The check itself: tick labels on top of each other, a label across a curve, a text off the figure."""
    crowded = plots._new_figure(3, 2)
    ax = crowded.subplots()
    ax.bar([f"policy-{k}" for k in range(12)], np.arange(12))
    assert any("texts overlap" in p for p in layout_problems(crowded))
    across = plots._new_figure(4, 3)
    ax = across.subplots()
    ax.plot([1, 10], [0, 10])
    ax.text(5, 3, "A100 40 MB", rotation=90)
    assert any("covers a curve" in p for p in layout_problems(across))
    off = plots._new_figure(4, 3)
    off.subplots().text(1.5, 0.5, "far right", transform=off.axes[0].transAxes)
    assert any("outside the figure" in p for p in layout_problems(off))
    wide = plots._new_figure(24, 3)
    wide.subplots().set_xlabel("tiny once shrunk", fontsize=9)
    assert any("too small" in p for p in layout_problems(wide))


def test_metric_bars_with_every_policy(comparison):
    fig = plots.metric_bars(comparison, ("dram_traffic_mb", "byte_hit_rate", "total_latency"))
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert len(names) == len(comparison) and "Belady (MIN)" in names and "OPT" in names  # every row, by name
    values = [comparison.loc["Belady" if n == "Belady (MIN)" else n, "dram_traffic_mb"] for n in names]
    assert values == sorted(values, reverse=True)  # sorted: the least traffic on top
    assert_readable(fig)


def test_capacity_curves_with_every_policy(sweep):
    for metrics in (("byte_hit_rate", "dram_traffic_mb"), ("dram_traffic_mb", "byte_hit_rate")):  # report, app
        fig = plots.capacity_curves(sweep, metrics=metrics, capacity_mb=64.0)
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend[0] in ("OPT", "OPT (achievable)") and "Belady (MIN)" in legend and "LRU" in legend
        policies = [p for p in sweep["policy"].unique() if p != "OPT"]
        coloured = [e for e in legend if e != "OPT" and not e.startswith("other ")]
        assert legend[-1] == f"other policies ({len(policies) - len(coloured)})" and len(coloured) <= 6
        marks = [t for ax in fig.axes for t in ax.texts if t.get_gid() == plots.HARDWARE_MARK]
        assert [t.get_text() for t in marks] == ["A100 40, H100 50, H200 60 MB"] * 2
        assert_readable(fig)


def test_capacity_curves_of_a_capture_with_a_bracketed_optimum(sweep, captured):
    bracketed = sweep.copy()
    first = bracketed.index[bracketed["policy"] == "OPT"][0]
    bracketed.loc[first, ["opt_lower_mb", "opt_exact"]] = [bracketed.at[first, "opt_lower_mb"] - 1.0, False]
    bracketed = bracketed.replace({"policy": {"OPT": "OPT (achievable)"}})
    fig = plots.capacity_curves(bracketed, capacity_mb=64.0)
    assert {"OPT (achievable)", "OPT (lower bound)"} <= {t.get_text() for t in fig.legends[0].get_texts()}
    assert_readable(fig)
    # a report's sweep of a capture; the optimum given 1 s per capacity, so bracketed where that is too short
    pad = lab.sweep_capacity(captured, None, lab.default_capacities_mb(captured, 12), H100, buffer="scratchpad",
                             time_limit_s=1.0)
    assert_readable(plots.capacity_curves(pad, capacity_mb=50.0))


def test_the_figures_of_a_captured_model(captured, captured_runs):
    from lab.analysis.attribution import dram_traffic_by_module_layer_phase

    by_kind = {policy: lab.dram_traffic_by(result, captured) for policy, result in captured_runs.items()}
    assert_readable(plots.traffic_breakdown(by_kind))
    tables = dram_traffic_by_module_layer_phase(captured_runs["LRU"], captured)
    assert_readable(plots.traffic_by_module_layer_phase(tables, "gpt2: DRAM traffic under LRU at 16 MB"))
    synthetic = lab.synthetic_counterpart("gpt2", 1, 64, 4, seed=0, training=True)
    assert_readable(plots.reuse_distance_histogram(synthetic, reference=captured,
                                                   labels=("synthetic", "captured gpt2")))
    result = lab.simulate(lab.score(captured), "LRU", 16.0)
    assert_readable(plots.occupancy_heatmap(result, scores=lab.score(captured)["eviction_score"]))


def test_the_tutorial_and_explorer_figures(seed_example):
    scored = seed_example.scored
    assert_readable(plots.occupancy_heatmap(lab.simulate(scored, "LRU", 64.0), scores=scored["eviction_score"]))
    assert_readable(plots.eviction_scatter(scored, seed_example.ranking))
    assert_readable(plots.reuse_distance_histogram(scored))


def test_the_learned_eviction_figures():
    pytest.importorskip("lightgbm")
    from lab.analysis.scorer_evaluation import leave_one_model_out

    # five held-out models with names as long as the presets' (the report's), three capacities each
    names = {"gpt2": "Transformer", "bert-base": "Transformer", "llama-2-7b": "Transformer", "vit-base": "CNN",
             "mlp": "MLP"}
    traces = {name: lab.generate_trace(family, num_layers=2, batch_size=2, seq_length=16, seed=k)
              for k, (name, family) in enumerate(names.items())}
    table, fitted = leave_one_model_out(traces, capacity_fraction=[0.02, 0.05, 0.1], n_estimators=5,
                                        policies=["LRU", "FIFO", "ARC"], return_scorers=True)
    assert_readable(plots.gap_closed(table))
    assert_readable(plots.feature_importances(fitted))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    grid = {"name": "figures", "models": [{"synthetic": "Transformer", "num_layers": 4},
                                           {"synthetic": "MoE", "num_layers": 2, "label": "synthetic-MoE-2L"},
                                           {"synthetic": "MLP", "num_layers": 4}],
            "batch_sizes": [2], "seq_lengths": [64], "phases": ["forward"],
            "policies": ["LRU", "FIFO", "SIEVE", "LFU", "GDSF", "S3-FIFO", "ARC", "BeladySize", "ML", "Belady"],
            "capacities_mb": {"geomspace": [0.5, 512, 11]}, "buffers": ["scratchpad"], "cost": H100}
    out = tmp_path_factory.mktemp("study")
    lab.run_study(grid, out, serial=True, progress=False, verbose=False)
    return lab.load_study(out)


def test_the_study_figures(study):
    shape = lab.study.one_slice(study)
    fig = plots.study_traffic(shape, "scratchpad")
    assert sum(t.get_gid() == plots.HARDWARE_MARK for ax in fig.axes for t in ax.texts) == 3  # each panel
    assert_readable(fig)
    with warnings.catch_warnings():  # a figure in a report draws without a notice (a library's deprecation)
        warnings.simplefilter("error")
        gap = plots.study_gap(lab.gap_to_optimum(study))
    assert_readable(gap)
    best = lab.best_policy(shape)
    assert_readable(plots.best_policy_heatmap(best, title="forward, scratchpad"))


# --- one colour meaning per figure family ---------------------------------------------------------------------

def test_policies_kinds_and_two_part_quantities_have_colours_of_their_own():
    from lab.sim.policy import policy_names

    policies = [matplotlib.colors.to_hex(plots.policy_color(p)) for p in policy_names()]
    assert len(set(policies)) == len(policies)  # one colour per registered policy
    kinds = {matplotlib.colors.to_hex(plots.group_color(k)) for k in plots.KIND_ORDER}
    pairs = {matplotlib.colors.to_hex(c) for c in plots.PAIR_COLORS}
    neutral = {matplotlib.colors.to_hex(c) for c in (plots.OPTIMUM_COLOR, plots.OTHER_COLOR)}
    assert len(kinds) == len(plots.KIND_ORDER)
    for a, b in itertools.combinations([set(policies), kinds, pairs, neutral], 2):
        assert not a & b
    assert plots.policy_color("Belady (MIN)") == plots.policy_color("Belady")
    assert plots.policy_label("Belady") == "Belady (MIN)" and plots.policy_label("OPT (lower bound)") == "OPT (lower bound)"
    # a policy registered in a notebook gets a colour of its own too, the same in every session
    assert plots.policy_color("LargestFirst") == plots.policy_color("LargestFirst") not in neutral


def test_at_most_eight_policies_stand_out_and_keep_their_colour():
    frame = pd.DataFrame({"policy": ["A", "B", "C", "LRU", "Belady", "D", "E"],
                          "capacity_mb": 1.0, "dram_traffic_mb": [5.0, 1.0, 2.0, 9.0, 0.5, 3.0, 4.0]})
    assert plots.highlighted_policies(plots.ranking_by_traffic(frame)) == ["B", "C", "D", "E", "LRU", "Belady"]


def test_the_figure_style_is_seaborns_whitegrid_without_importing_it():
    """``plots.FIGURE_STYLE`` is seaborn's whitegrid style and notebook context, less its default colormap (every
    image in lab.plots names its own); drawing needs no seaborn import (1.5 s in each process), except the study's
    box plot."""
    import subprocess
    import sys

    import seaborn as sns

    expected = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook")}
    expected.pop("image.cmap")
    assert plots.FIGURE_STYLE == expected
    code = ("import sys, lab, pandas as pd\n"
            "trace = pd.DataFrame({'tensor_id': list('abcab'), 'size_mb': 1.0})\n"
            "lab.plots.metric_bars(lab.compare_policies(trace, ['LRU', 'FIFO'], capacity_mb=2.0))\n"
            "print('seaborn' in sys.modules, 'scipy.stats' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"], done.stdout + done.stderr
