"""Figures of ``lab`` results (matplotlib, in seaborn's whitegrid style); every notebook and report draws with these.

Each function takes lab results and returns a matplotlib Figure, labelled with
units. Nothing here is random: the same results give the same figure. Each
figure is closed in pyplot before it is returned, so a notebook shows it once
(as the cell's value) and pyplot does not keep it alive.
"""

from __future__ import annotations

import functools
import warnings
from typing import Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
import numpy as np
import pandas as pd

from lab.bounds.optimal import OPTIMUM, OPTIMUM_ACHIEVABLE, OPTIMUM_LOWER
from lab.analysis.sweep import is_optimum
from lab.sim.simulate import SimulationResult
from lab.trace.schema import column_or
from lab.units import BYTES_PER_MB

TRAFFIC_METRICS = ("dram_traffic_mb",)  # what the optimum's bracket bounds


# seaborn's ``axes_style("whitegrid")`` and ``plotting_context("notebook")`` (0.13) as matplotlib settings, less
# its default colormap (every image here names its own): importing seaborn for them took 1.5 s in each process that
# draws (it imports scipy.stats and ipywidgets). tests/test_figures.py checks they are still seaborn's.
FIGURE_STYLE = {
    "figure.facecolor": "white", "axes.facecolor": "white", "axes.edgecolor": ".8", "axes.labelcolor": ".15",
    "axes.axisbelow": True, "axes.grid": True, "grid.color": ".8", "grid.linestyle": "-", "text.color": ".15",
    "xtick.color": ".15", "ytick.color": ".15", "xtick.direction": "out", "ytick.direction": "out",
    "xtick.top": False, "ytick.right": False, "xtick.bottom": False, "ytick.left": False,
    "axes.spines.left": True, "axes.spines.bottom": True, "axes.spines.right": True, "axes.spines.top": True,
    "font.family": ["sans-serif"],
    "font.sans-serif": ["Arial", "DejaVu Sans", "Liberation Sans", "Bitstream Vera Sans", "sans-serif"],
    "lines.solid_capstyle": "round", "patch.edgecolor": "w", "patch.force_edgecolor": True,
    "axes.linewidth": 1.25, "grid.linewidth": 1, "lines.linewidth": 1.5, "lines.markersize": 6,
    "patch.linewidth": 1, "xtick.major.width": 1.25, "ytick.major.width": 1.25, "xtick.minor.width": 1,
    "ytick.minor.width": 1, "xtick.major.size": 6, "ytick.major.size": 6, "xtick.minor.size": 4,
    "ytick.minor.size": 4, "font.size": 12, "axes.labelsize": 12, "axes.titlesize": 12, "xtick.labelsize": 11,
    "ytick.labelsize": 11, "legend.fontsize": 11, "legend.title_fontsize": 12,
}


def _styled(plot):
    """Draw ``plot`` in ``FIGURE_STYLE`` without changing the caller's matplotlib settings."""

    @functools.wraps(plot)
    def draw(*args, **kwargs):
        with matplotlib.rc_context(FIGURE_STYLE):
            return plot(*args, **kwargs)

    return draw


def _new_figure(width: float, height: float) -> Figure:
    fig = plt.figure(figsize=(width, height), layout="constrained")
    plt.close(fig)
    return fig


def residency_matrix(result: SimulationResult) -> np.ndarray:
    """Bool matrix (tensors x accesses): True where the tensor is resident after the access.

    Rows follow tensor codes (order of first access). A tensor inserted and
    dropped (dead) at the same access is not resident after it.
    """
    enc = result.workload
    inserted = np.flatnonzero(result.inserted)
    dropped = np.flatnonzero(result.dropped)
    delta = np.zeros((enc.n_tensors, enc.n_accesses + 1), np.int8)
    np.add.at(delta, (enc.codes[inserted], inserted), 1)
    np.add.at(delta, (result.victim_code, result.victim_access), -1)
    np.add.at(delta, (enc.codes[dropped], dropped), -1)
    return np.cumsum(delta, axis=1)[:, :-1] > 0


SAMPLES_PER_BIN = 8


def _occupancy_cells(result: SimulationResult, rows: np.ndarray, scores, max_time_bins: int) -> np.ndarray:
    """The heatmap's cells for tensor codes ``rows``: per time bin the share of sampled access times at which the
    tensor is resident (or the mean score of its latest access then), NaN where never resident. Residency after
    access t: insertions at or before t outnumber evictions and drops at or before t. Exact (every access
    sampled) while the trace has at most SAMPLES_PER_BIN accesses per bin."""
    enc = result.workload
    n = enc.n_accesses
    width = max(1, int(np.ceil(n / max_time_bins)))
    n_bins = max(1, int(np.ceil(n / width)))
    times = np.unique(np.linspace(0, max(n - 1, 0), min(n, n_bins * SAMPLES_PER_BIN)).astype(np.int64))
    bin_of = times // width
    inserted = np.flatnonzero(result.inserted)
    dropped = np.flatnonzero(result.dropped)
    scores = None if scores is None else np.asarray(scores, np.float64)
    cells = np.full((len(rows), n_bins), np.nan)
    for r, code in enumerate(rows):  # one row of the figure each (at most max_tensors)
        arrivals = np.sort(inserted[enc.codes[inserted] == code])
        leaves = np.sort(np.concatenate([result.victim_access[result.victim_code == code],
                                         dropped[enc.codes[dropped] == code]]))
        resident = (np.searchsorted(arrivals, times, side="right") - np.searchsorted(leaves, times, side="right")) > 0
        values = resident.astype(np.float64)
        if scores is not None:
            uses = np.flatnonzero(enc.codes == code)
            latest = np.searchsorted(uses, times, side="right") - 1
            values = np.where(latest >= 0, scores[uses[np.maximum(latest, 0)]], np.nan)
        values = np.where(resident, values, np.nan)
        total = np.bincount(bin_of, weights=np.nan_to_num(values), minlength=n_bins)
        seen = np.bincount(bin_of, weights=~np.isnan(values), minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            cells[r] = np.where(seen > 0, total / seen, np.nan)
    return cells


@_styled
def occupancy_heatmap(result: SimulationResult, scores: Optional[np.ndarray] = None, max_tensors: int = 60,
                      max_time_bins: int = 300) -> Figure:
    """Cache occupancy over time: tensors (rows) x access time (columns).

    A cell is coloured while the tensor is resident: by the eviction score of
    its latest access when ``scores`` (one per access) is given, else by
    residency. Red crosses mark evictions. Shows the ``max_tensors`` most
    accessed tensors; long traces are averaged into ``max_time_bins`` bins,
    each from at most SAMPLES_PER_BIN access times (memory: shown tensors x
    bins x SAMPLES_PER_BIN, whatever the trace's length).
    """
    enc = result.workload
    counts = np.bincount(enc.codes, minlength=enc.n_tensors)
    rows = np.sort(np.argsort(-counts, kind="stable")[:max_tensors])
    cells = _occupancy_cells(result, rows, scores, max_time_bins)
    fig = _new_figure(11, max(3.0, 0.16 * len(rows) + 1.5))
    ax = fig.subplots()
    label = "eviction score of latest access" if scores is not None else "resident"
    # interpolation "none": vector formats (SVG) embed the cells as they are, not resampled at print resolution
    mesh = ax.imshow(cells, aspect="auto", interpolation="none", cmap="viridis",
                     extent=(0, enc.n_accesses, len(rows) - 0.5, -0.5), vmin=0, vmax=1)
    fig.colorbar(mesh, ax=ax, label=label, pad=0.01)
    row_of = {code: i for i, code in enumerate(rows)}
    marks = [(a, row_of[v]) for a, v in zip(result.victim_access, result.victim_code) if v in row_of]
    if marks:
        ax.scatter(*zip(*marks), marker="x", color="crimson", s=14, linewidths=0.8, label="eviction")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_yticks(range(len(rows)), [str(t) for t in enc.tensor_ids[rows]], fontsize=7)
    ax.set_xlabel("time (accesses)")
    ax.set_ylabel("tensor")
    ax.grid(False)
    ax.set_title(f"{result.policy} buffer occupancy, {result.capacity_mb:g} MB")
    return fig


def optimum_curve(rows: pd.DataFrame):
    """The optimum against capacity from a long table's optimum rows (a sweep's, or a study's ``OPT`` cells):
    (capacities, lower ends, achievable ends, exact at every capacity?, the achievable rows) in capacity order,
    or None when the table has no optimum with a bracket."""
    rows = rows[rows["policy"].map(is_optimum)]
    if rows.empty or "opt_lower_mb" not in rows or rows["opt_lower_mb"].isna().all():
        return None
    schedule = rows[rows["policy"] != OPTIMUM_LOWER].dropna(subset=["opt_lower_mb"]).sort_values("capacity_mb")
    exact = bool((schedule["opt_lower_mb"] >= schedule["opt_upper_mb"]).all())
    return (schedule["capacity_mb"].to_numpy(), schedule["opt_lower_mb"].to_numpy(),
            schedule["opt_upper_mb"].to_numpy(), exact, schedule)


METRIC_LABELS = {"cache_hit_rate": "hit rate (%)", "byte_hit_rate": "byte hit rate (%)",
                 "bytes_from_dram": "DRAM reads (MB)", "dram_traffic_mb": "DRAM traffic, read + written (MB)",
                 "dram_reads_mb": "DRAM reads (MB)", "dram_writes_mb": "DRAM writes (MB)",
                 "total_latency": "total latency (ms)", "evictions": "evictions"}
HIGHER_IS_BETTER = ("cache_hit_rate", "byte_hit_rate")


def _metric_values(frame: pd.DataFrame, metric: str):
    return frame[metric] / BYTES_PER_MB if metric == "bytes_from_dram" else frame[metric]


def _draw_policies(ax, rows: pd.DataFrame, y: str, shown: Sequence[str], x: str = "capacity_mb") -> None:
    """One line per policy of ``rows`` (x against ``y``): the ``shown`` ones in their colour and marker, the
    others thin, grey and beneath them, labelled ``other policies (n)`` once."""
    others = [p for p in dict.fromkeys(rows["policy"]) if not is_optimum(p) and p not in shown]
    for k, policy in enumerate(others):
        group = rows[rows["policy"] == policy].sort_values(x)
        ax.plot(group[x], _metric_values(group, y), color=OTHER_COLOR, linewidth=0.9, zorder=1.5,
                label=f"other policies ({len(others)})" if k == 0 else "_nolegend_")
    for policy in shown:
        group = rows[rows["policy"] == policy].sort_values(x)
        if len(group):
            ax.plot(group[x], _metric_values(group, y), color=policy_color(policy), marker=policy_marker(policy),
                    markersize=4, linewidth=1.6, zorder=3, label=policy_label(policy))


def _draw_optimum(ax, rows: pd.DataFrame, metric: str) -> None:
    """The optimum's line(s) on ``ax`` (black): ``OPT`` where exact at every capacity, else ``OPT (achievable)``
    solid and ``OPT (lower bound)`` dashed, on DRAM traffic; dotted on other metrics (it bounds nothing there)."""
    optimum = optimum_curve(rows)
    if optimum is None:
        return
    capacity, lower, upper, exact, schedule = optimum
    if metric in TRAFFIC_METRICS:
        ax.plot(capacity, upper, color=OPTIMUM_COLOR, linewidth=1.8, zorder=4,
                label=OPTIMUM if exact else OPTIMUM_ACHIEVABLE)
        if not exact:
            ax.plot(capacity, lower, linestyle="--", color=OPTIMUM_COLOR, linewidth=1.4, zorder=4,
                    label=OPTIMUM_LOWER)
    else:
        ax.plot(capacity, _metric_values(schedule, metric), linestyle=":", color=OPTIMUM_COLOR, linewidth=1.8,
                zorder=4, label=OPTIMUM if exact else OPTIMUM_ACHIEVABLE)


def _figure_legend(fig: Figure, axes) -> None:
    """One legend for the figure, beside the panels: every label of ``axes`` once (the optimum first, then the
    highlighted policies, then the others' entry)."""
    handles: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    order = sorted(handles, key=lambda label: (0 if is_optimum(label) else 2 if label.startswith("other ") else 1))
    if order:
        fig.legend([handles[k] for k in order], order, loc="outside right upper", fontsize="small")


@_styled
def capacity_curves(sweep: pd.DataFrame, metrics: Sequence[str] = ("byte_hit_rate", "dram_traffic_mb"),
                    capacity_mb: Optional[float] = None, hardware: bool = True,
                    highlight: Optional[Sequence[str]] = None) -> Figure:
    """Metrics against capacity, one line per policy, the optimum in black as the bound.

    Takes ``lab.sweep_capacity`` output; ``capacity_mb`` draws a marker line;
    ``hardware`` marks the hardware presets' buffer sizes within the swept range
    (``mark_hardware_buffers``). At most about eight lines stand out: the
    ``HIGHLIGHT_BEST`` online policies with the least DRAM traffic over the
    sweep (``ranking_by_traffic``), LRU, Belady (MIN) and the optimum, each
    in its colour in every panel (``policy_color``); ``highlight`` names them
    instead. The others are thin grey lines under one legend entry. On DRAM
    traffic (MB read + written) the optimum is one black line ``OPT`` where
    it is exact at every capacity, else two: ``OPT (achievable)`` (solid, the
    best schedule known) and ``OPT (lower bound)`` (dashed: no policy goes
    below it); on other metrics its schedule is drawn dotted (it minimizes
    traffic, not misses, so it bounds nothing there).
    """
    metric = "dram_traffic_mb" if "dram_traffic_mb" in sweep else metrics[0]
    shown = list(highlight) if highlight is not None else highlighted_policies(ranking_by_traffic(sweep, metric))
    fig = _new_figure(4.6 * len(metrics) + 1.8, 4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        _draw_policies(ax, sweep, metric, shown)
        _draw_optimum(ax, sweep, metric)
        if capacity_mb is not None:
            ax.axvline(capacity_mb, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        if hardware and len(sweep):
            mark_hardware_buffers(ax, sweep["capacity_mb"].min(), sweep["capacity_mb"].max())
        ax.set_xlabel("buffer capacity (MB)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    _figure_legend(fig, axes)
    return fig


PNG_DPI = 200  # pixels per inch of the PNG beside each SVG: slides and web pages (print from the SVG)


def save_figure(fig: Figure, name: str) -> Figure:
    """Save ``fig`` as ``<name>.svg`` and ``<name>.png`` into the folder named by the environment variable
    ``LAB_REPORT_FIGURES`` (a report run sets it: the report's ``figures/``); without it, save nothing. SVG
    is vector (print resolution at any size), its text kept as text (searchable, editable), no date stamp;
    the PNG is ``PNG_DPI`` dots per inch. Returns ``fig``, so that a notebook cell shows it."""
    import os
    import re
    from pathlib import Path

    from lab.ui.report import FIGURES_ENV

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise ValueError(f"figure name must be letters, digits, '.', '_' or '-', got {name!r}")
    folder = os.environ.get(FIGURES_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            fig.savefig(Path(folder) / f"{name}.svg", format="svg", metadata={"Date": None})
        fig.savefig(Path(folder) / f"{name}.png", format="png", dpi=PNG_DPI)
    return fig


def mark_hardware_buffers(ax, low: Optional[float] = None, high: Optional[float] = None, position=None,
                          span: tuple = (0.0, 1.0)) -> list:
    """Mark each hardware preset's on-chip buffer size (``lab.HARDWARE_PRESETS``: ``buffer_mb``) on ``ax``'s
    capacity (x) axis, where it falls between ``low`` and ``high`` MB (default: the axis' limits): a dash-dotted
    line per size, and one horizontal label per cluster of close sizes ("A100 40, H100 50, H200 60 MB") just
    above the axes, outside the data, so that it never covers a curve nor another label (sizes closer than a
    factor 1.5, or than a tenth of the axis' decades, share one). ``position``: MB -> x coordinate, for an axis
    that is not in MB (default: the size itself). ``span``: the share of the axes' height the lines cover, from
    the bottom (a heatmap whose cells carry text marks its top edge only: ``(0.94, 1.0)``). A title set on
    ``ax`` before or after is lifted above the labels (``_set_title``). Returns the labels (matplotlib
    Annotations)."""
    from lab.sim.cost import HARDWARE_PRESETS

    if low is None or high is None:
        low, high = ax.get_xlim()
    sizes: dict = {}
    for preset in HARDWARE_PRESETS.values():
        if preset.buffer_mb is not None and low <= preset.buffer_mb <= high:
            sizes.setdefault(preset.buffer_mb, []).append(preset.name.split("-")[0])
    decades = np.log10(high / low) if low > 0 and high > low else 1.0
    clusters: list = []
    for mb in sorted(sizes):
        if clusters and (mb / clusters[-1][-1] < 1.5 or np.log10(mb / clusters[-1][-1]) < 0.1 * decades):
            clusters[-1].append(mb)
        else:
            clusters.append([mb])
    position = position or (lambda mb: mb)
    labels = []
    for cluster in clusters:
        for mb in cluster:
            ax.axvline(position(mb), *span, color=MARK_COLOR, linewidth=0.8, linestyle="-.", zorder=2)
        label = ", ".join(f"{'/'.join(sizes[mb])} {mb:g}" for mb in cluster) + " MB"
        # where the cluster sits along the axis (log MB): a label near an end grows inwards, not past the axes
        share = np.log(np.sqrt(cluster[0] * cluster[-1]) / low) / np.log(high / low) if high > low > 0 else 0.5
        anchor = position(float(np.sqrt(cluster[0] * cluster[-1]))) if len(cluster) > 1 else position(cluster[0])
        ha = "left" if share < 0.2 else "right" if share > 0.8 else "center"
        labels.append(ax.annotate(label, xy=(anchor, 1.0), xycoords=ax.get_xaxis_transform(), xytext=(0, 2),
                                  textcoords="offset points", ha=ha, va="bottom", fontsize="small",
                                  color=MARK_TEXT_COLOR, annotation_clip=False, gid=HARDWARE_MARK))
    if labels and ax.get_title():
        _set_title(ax, ax.get_title(), fontsize=ax.title.get_fontsize())
    return labels


HARDWARE_MARK = "lab-hardware-mark"  # the gid of mark_hardware_buffers' labels


def _set_title(ax, title: str, **kwargs) -> None:
    """Set ``ax``'s title, lifted above the hardware presets' labels where ``mark_hardware_buffers`` put some."""
    marked = any(t.get_gid() == HARDWARE_MARK for t in ax.texts)
    ax.set_title(title, pad=18 if marked else 6, **kwargs)


# --- colours and names: one meaning per colour in each figure family ------------------------------------------
# Policies are lines and dots: strong colours, one per policy in every figure (and a marker each, for lines
# that a colour alone would not tell apart). The optimum is black. Policies a figure does not highlight are a
# thin light grey. Tensor kinds are areas: light colours of their own. Two-part quantities (read / written,
# forward / training, trace / reference) are a dark and a light slate. No colour is in two of these sets.
OPTIMUM_COLOR = "black"
OTHER_COLOR = "#c8c8c8"  # the policies a figure does not highlight
MARK_COLOR, MARK_TEXT_COLOR = "0.55", "0.3"  # hardware presets' buffer sizes
PAIR_COLORS = ("#34495e", "#a9b9c9")  # read / written, forward / training, trace / reference: dark, light slate
POLICY_COLORS = {
    "LRU": "#1f77b4", "FIFO": "#8c564b", "MRU": "#bcbd22", "SIEVE": "#2ca02c", "CLOCK": "#17becf",
    "LFU": "#9467bd", "LFUDA": "#7b4173", "GDSF": "#ff7f0e", "S3-FIFO": "#d62728", "2Q": "#393b79",
    "SLRU": "#637939", "ARC": "#e377c2", "LIRS": "#8c6d31", "LeCaR": "#843c39", "LHD": "#6b6ecf",
    "Hyperbolic": "#e7ba52", "Belady": "#5e3c99", "BeladySize": "#b15928", "ML": "#00a6a6",
}
# policies registered elsewhere (a notebook's own): by a hash of the name, the same in every session
EXTRA_POLICY_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#4d4d4d", "#0072b2")
POLICY_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
# tensor kinds of captured traces (lab.workloads.capture.KINDS), then the generator's
KIND_ORDER = ("weight", "activation", "gradient", "optimizer_state", "input", "buffer", "kv_cache", "output")
KIND_COLORS = ("#8dd3c7", "#fdb462", "#bebada", "#fb8072", "#b3de69", "#fccde5", "#ffffb3", "#d9d9d9")
HIGHLIGHT_BEST = 4  # online policies a figure highlights beside LRU, Belady and the optimum (at most ~8 in all)


def _stable_index(name: str, n: int) -> int:
    import zlib

    return zlib.crc32(name.encode()) % n


def policy_label(policy: str) -> str:
    """A policy's name in every legend and axis: ``Belady (MIN)`` for Belady's MIN (with tensors of different
    sizes it is no bound), the optimum's rows as they are (``OPT``, ``OPT (lower bound)``, ``OPT (achievable)``:
    lab.bounds.optimal.OPTIMUM*), other policies by their name."""
    return "Belady (MIN)" if policy == "Belady" else str(policy)


def policy_color(policy: str):
    """The colour of ``policy`` in every figure (``POLICY_COLORS``; a policy registered elsewhere gets one of
    ``EXTRA_POLICY_COLORS`` by its name), the optimum black."""
    if is_optimum(policy):
        return OPTIMUM_COLOR
    canonical = "Belady" if policy == "Belady (MIN)" else str(policy)
    if canonical in POLICY_COLORS:
        return POLICY_COLORS[canonical]
    return EXTRA_POLICY_COLORS[_stable_index(canonical, len(EXTRA_POLICY_COLORS))]


def policy_marker(policy: str) -> str:
    """The marker of ``policy``'s line in every figure (by its place among the registered policies)."""
    from lab.sim.policy import policy_names

    names = policy_names()
    canonical = "Belady" if policy == "Belady (MIN)" else str(policy)
    k = names.index(canonical) if canonical in names else _stable_index(canonical, len(POLICY_MARKERS))
    return POLICY_MARKERS[k % len(POLICY_MARKERS)]


def _offline(policy: str) -> bool:
    from lab.sim.policy import get_policy

    try:
        return bool(get_policy(policy).offline)
    except (KeyError, ValueError, TypeError):
        return False


def highlighted_policies(excess: pd.Series, best: int = HIGHLIGHT_BEST) -> list:
    """The policies a figure draws in colour, in legend order, from ``excess`` ({policy: how far it is from the
    best, lower is better}, e.g. ``ranking_by_traffic``): the ``best`` online policies with the least excess,
    then LRU and Belady (MIN) where present. The optimum's rows are drawn apart (black); every other policy is
    drawn thin and grey, under one legend entry."""
    excess = excess[[not is_optimum(p) for p in excess.index]].dropna()
    online = [p for p in excess.sort_values(kind="stable").index if not _offline(p)]
    shown = online[:best]
    shown += [p for p in ("LRU", "Belady") if p in excess.index and p not in shown]
    return shown


def ranking_by_traffic(rows: pd.DataFrame, metric: str = "dram_traffic_mb", by=("capacity_mb",)) -> pd.Series:
    """Each policy's mean excess over the best policy of its group (``by``: each capacity, or each model,
    phase and capacity), ``metric`` relative to the group's least (0 = the best everywhere): {policy: excess}.
    The optimum's rows are left out (they are no policy)."""
    rows = rows[~rows["policy"].map(is_optimum)]
    if rows.empty:
        return pd.Series(dtype=float)
    by = [c for c in by if c in rows.columns]
    least = rows.groupby(by)[metric].transform("min") if by else rows[metric].min()
    excess = (rows[metric] - least) / np.maximum(least, 1e-12)
    return excess.groupby(rows["policy"], sort=False).mean()


def group_color(group) -> object:
    """The colour of a tensor kind in every figure (``KIND_COLORS`` by ``KIND_ORDER``: light colours no policy
    has); other groups (layers, modules) by their name's hash, the same in every figure of every session."""
    name = str(group)
    if name in KIND_ORDER:
        return KIND_COLORS[KIND_ORDER.index(name)]
    return matplotlib.colormaps["Pastel2"](_stable_index(name, 8))


def _number(value: float) -> str:
    from lab.ui.report import round_number

    return round_number(float(value))


@_styled
def metric_bars(comparison: pd.DataFrame,
                metrics: Sequence[str] = ("dram_traffic_mb", "byte_hit_rate", "total_latency")) -> Figure:
    """One panel per metric, one horizontal bar per policy (and the optimum's rows), sorted by the first metric
    (the best on top: least DRAM traffic, or highest hit rate), its value at the bar's end; the highlighted
    policies (``highlighted_policies``: the best few, LRU, Belady (MIN)) and the optimum in their colours,
    the others grey. Takes ``lab.compare_policies`` output (or ``lab.metrics_table``'s)."""
    metrics = [m for m in metrics if m in comparison.columns]
    if not metrics:
        raise ValueError("comparison has none of the metrics asked for")
    first = metrics[0]
    shown = highlighted_policies(ranking_by_traffic(comparison.rename_axis("policy").reset_index(),
                                                    "dram_traffic_mb" if "dram_traffic_mb" in comparison else first,
                                                    by=()))
    key = _metric_values(comparison, first)
    order = key.sort_values(ascending=first not in HIGHER_IS_BETTER, kind="stable").index[::-1]  # best on top
    fig = _new_figure(3.4 * len(metrics) + 1.6, 0.24 * len(order) + 1.3)
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True)[0]
    y = np.arange(len(order))
    colors = [policy_color(p) if p in shown or is_optimum(p) else OTHER_COLOR for p in order]
    for ax, metric in zip(axes, metrics):
        values = _metric_values(comparison, metric).reindex(order).to_numpy(np.float64)
        ax.barh(y, np.nan_to_num(values), height=0.7, color=colors)
        for yi, value in zip(y, values):
            if np.isfinite(value):
                ax.annotate(_number(value), (value, yi), xytext=(3, 0), textcoords="offset points", va="center",
                            ha="left", fontsize="x-small")
        top = np.nanmax(values) if np.isfinite(values).any() else 1.0
        ax.set_xlim(0, 1.3 * top if top > 0 else 1.0)
        ax.set_xlabel(METRIC_LABELS.get(metric, metric) + ("\n(higher is better)" if metric in HIGHER_IS_BETTER
                                                           else "\n(lower is better)"))
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(y, [policy_label(p) for p in order], fontsize="small")
    axes[0].set_ylim(-0.6, len(order) - 0.4)
    return fig


@_styled
def reuse_distance_histogram(trace: pd.DataFrame, reference: Optional[pd.DataFrame] = None,
                             bins: int = 40, labels: Sequence[str] = ("trace", "reference")) -> Figure:
    """Histogram of reuse distances (accesses, log-spaced bins; first accesses left out), with a reference;
    ``labels`` names the two in the legend (e.g. ``("synthetic", "captured gpt2")``)."""
    from lab.trace.workload import reuse_distances

    fig = _new_figure(7, 3.6)
    ax = fig.subplots()
    samples = {labels[0]: reuse_distances(trace["tensor_id"])}
    if reference is not None:
        samples[labels[1]] = reuse_distances(reference["tensor_id"])
    finite = np.concatenate([s[~np.isnan(s)] for s in samples.values()])
    if finite.size:
        edges = np.geomspace(1, finite.max() + 2, bins) - 1
        for (name, s), color in zip(samples.items(), PAIR_COLORS):
            ax.hist(s[~np.isnan(s)], bins=edges, alpha=0.6, label=name, color=color, density=reference is not None)
        ax.set_xscale("symlog", linthresh=1)
        ax.legend(fontsize="small")
    ax.set_xlabel("reuse distance (accesses)")
    ax.set_ylabel("share of reuses (density per access)" if reference is not None else "reuses (count)")
    return fig


@_styled
def traffic_by_module_layer_phase(tables: dict, title: str = "") -> Figure:
    """DRAM traffic (MB), reads and writes apart, by phase and by layer (top row) and by module (below, the
    largest on top); takes ``lab.analysis.attribution.dram_traffic_by_module_layer_phase`` output (panels only
    for the tables given)."""
    read, write = PAIR_COLORS
    top = [k for k in ("phase", "layer") if k in tables]
    modules = tables.get("module")
    rows = (1 if top else 0) + (1 if modules is not None else 0)
    if rows == 0:
        raise ValueError("tables must hold 'phase', 'layer' or 'module' (dram_traffic_by_module_layer_phase)")
    module_height = 0.26 * len(modules) + 1.0 if modules is not None else 0.0
    fig = _new_figure(10, (3.2 if top else 0.0) + module_height + (0.5 if title else 0.2))
    grid = fig.add_gridspec(rows, max(len(top), 1), height_ratios=[3.2] * bool(top) + [module_height] * (
        modules is not None), width_ratios=[1.3, 2.4] if len(top) == 2 else None)
    for k, key in enumerate(top):
        ax = fig.add_subplot(grid[0, k])
        table = tables[key]
        labels = [str(v) for v in table.index]
        if key == "phase":  # forward, backward, optimizer: names side by side would collide in a narrow panel
            y = np.arange(len(labels))[::-1]
            ax.barh(y, table["dram_read_mb"], height=0.5, color=read, label="read")
            ax.barh(y, table["dram_write_mb"], height=0.5, left=table["dram_read_mb"], color=write, label="written")
            ax.set_yticks(y, labels)
            ax.set_ylim(-0.75, len(labels) - 0.25)
            ax.grid(axis="y", visible=False)
            ax.set_ylabel("phase")
            ax.set_xlabel("DRAM traffic (MB)")
            continue
        x = np.arange(len(labels))
        ax.bar(x, table["dram_read_mb"], color=read, label="read")
        ax.bar(x, table["dram_write_mb"], bottom=table["dram_read_mb"], color=write, label="written")
        step = max(1, int(np.ceil(len(labels) / 14)))
        ax.set_xticks(x[::step], ["outside" if v == "-1" else v for v in labels[::step]], fontsize="small")
        ax.set_xlabel("layer (index; outside: embeddings, head, optimizer)")
        ax.set_ylabel("DRAM traffic (MB)")
    if modules is not None:
        ax = fig.add_subplot(grid[rows - 1, :])
        labels = [str(v) for v in modules.index]
        y = np.arange(len(labels))[::-1]
        ax.barh(y, modules["dram_read_mb"], color=read, label="read")
        ax.barh(y, modules["dram_write_mb"], left=modules["dram_read_mb"], color=write, label="written")
        ax.set_yticks(y, labels, fontsize="small")
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.set_xlim(0, 1.04 * float((modules["dram_read_mb"] + modules["dram_write_mb"]).max() or 1.0))
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("DRAM traffic (MB)")
        ax.set_ylabel("module (all layers)")
    handles, names = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


@_styled
def traffic_breakdown(tables: dict, by: str = "kind") -> Figure:
    """DRAM traffic (MB) per policy, one horizontal bar each stacked by group (``group_color``: a tensor kind
    keeps its colour), the least traffic on top; takes {policy: ``lab.dram_traffic_by``}."""
    frame = pd.DataFrame({policy: table["dram_mb"] for policy, table in tables.items()}).fillna(0.0).T
    kinds = [k for k in KIND_ORDER if k in frame.columns]
    frame = frame[kinds + [c for c in frame.columns if c not in kinds]]
    frame = frame.loc[frame.sum(axis=1).sort_values(kind="stable").index[::-1]]  # least traffic on top
    fig = _new_figure(8, 0.26 * len(frame) + 1.3)
    ax = fig.subplots()
    y = np.arange(len(frame))
    left = np.zeros(len(frame))
    for group in frame.columns:
        ax.barh(y, frame[group], left=left, height=0.7, label=str(group), color=group_color(group))
        left += frame[group].to_numpy()
    ax.set_yticks(y, [policy_label(p) for p in frame.index], fontsize="small")
    ax.set_ylim(-0.6, len(frame) - 0.4)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("DRAM traffic, read + written (MB)")
    ax.legend(title=by, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def eviction_table(ranking: pd.DataFrame):
    """The top-k eviction table (``lab.predict_schedule(...).ranking``) as a styled DataFrame: sizes in MB,
    scores shaded from keep (light) to evict first (dark)."""
    formats = {"size_mb": "{:.3g}", "eviction_score": "{:.3f}", "reuse_distance": "{:,.0f}"}
    headers = {"size_mb": "size (MB)", "reuse_distance": "reuse distance (accesses)", "tensor_id": "tensor",
               "eviction_score": "eviction score (0 keep, 1 evict)"}
    import hashlib

    # the table's HTML ids from its content (not random): the same ranking gives the same HTML
    uuid = hashlib.sha1(pd.util.hash_pandas_object(ranking.astype(str), index=True).to_numpy().tobytes()).hexdigest()
    return (ranking.style.set_uuid(uuid[:10]).hide(axis="index")
            .format({k: v for k, v in formats.items() if k in ranking}, na_rep="first access")
            .relabel_index([headers.get(str(c), str(c)) for c in ranking.columns], axis="columns")
            .background_gradient(subset=["eviction_score"], cmap="Reds", vmin=0, vmax=1))


# --- interactive occupancy timeline (plotly), in the spirit of PyTorch's memory_viz ---------------------------


def residency_intervals(result: SimulationResult) -> pd.DataFrame:
    """Each stay of a tensor in the buffer, one row per insertion: ``code`` (tensor code), ``start`` (the access
    that put it in: resident after it), ``end`` (the access after which it is gone, exclusive; the trace's length
    when it stays to the end) and ``left`` ("evicted", "dropped" after its last use, or "end").

    Memory: a few arrays of one entry per insertion, never tensors x accesses. Stays that begin and end at one
    access (a dead write dropped at once) are left out.
    """
    enc = result.workload
    inserted = np.flatnonzero(result.inserted)
    dropped = np.flatnonzero(result.dropped)
    arrive_code = enc.codes[inserted]
    leave_time = np.concatenate([result.victim_access.astype(np.int64), dropped])
    leave_code = np.concatenate([result.victim_code.astype(np.int64), enc.codes[dropped]])
    leave_how = np.concatenate([np.zeros(len(result.victim_access), np.int8), np.ones(len(dropped), np.int8)])

    def ranked(codes, times):  # order by (code, time); the k-th arrival of a tensor pairs with its k-th leave
        order = np.lexsort((times, codes))
        sorted_codes = codes[order]
        rank = np.arange(len(order)) - np.searchsorted(sorted_codes, sorted_codes, side="left")
        return order, sorted_codes, rank

    a_order, a_codes, a_rank = ranked(arrive_code, inserted)
    l_order, l_codes, l_rank = ranked(leave_code, leave_time)
    width = int(max(a_rank.max(initial=0), l_rank.max(initial=0))) + 1
    a_key, l_key = a_codes * width + a_rank, l_codes * width + l_rank
    position = np.searchsorted(l_key, a_key)
    matched = position < len(l_key)
    matched[matched] = l_key[position[matched]] == a_key[matched]
    start = inserted[a_order]
    end = np.full(len(start), enc.n_accesses, np.int64)
    how = np.full(len(start), 2, np.int8)
    end[matched] = leave_time[l_order][position[matched]]
    how[matched] = leave_how[l_order][position[matched]]
    keep = end > start
    order = np.argsort(start[keep], kind="stable")
    return pd.DataFrame({"code": a_codes[keep][order], "start": start[keep][order], "end": end[keep][order],
                         "left": np.array(["evicted", "dropped", "end"])[how[keep][order]]})


def _size_text(nbytes: float) -> str:
    for unit, scale in (("GB", 2 ** 30), ("MB", 2 ** 20), ("KB", 2 ** 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


_PLOTLY_JS_SENT = [False]  # whether this kernel displayed plotly.js already (with its first interactive figure)


@functools.lru_cache(maxsize=None)
def _interactive_figure_class():
    """A plotly Figure that also displays as self-contained HTML: JupyterLab draws it with plotly's renderer, and
    frontends without that renderer (Voila's, nbconvert's HTML) with the HTML, plotly.js inlined with the first
    figure of the kernel (no network needed)."""
    import plotly.graph_objects as go

    class InteractiveFigure(go.Figure):
        def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
            import plotly.io as pio

            bundle = dict(pio.renderers["plotly_mimetype"].to_mimebundle(self.to_dict()))
            first = not _PLOTLY_JS_SENT[0]
            _PLOTLY_JS_SENT[0] = True
            bundle["text/html"] = self.to_html(full_html=False, include_plotlyjs=first,
                                               config={"displaylogo": False})
            return bundle

        def _ipython_display_(self):
            from IPython.display import display

            display(self._repr_mimebundle_(), raw=True)

    return InteractiveFigure


def occupancy_timeline(result, policy="LRU", capacity_mb: Optional[float] = None, cost=None,
                       max_intervals: int = 120, max_points: int = 400):
    """The buffer's occupancy over time as an interactive plotly figure: zoom (drag), pan, hover.

    Takes a ``SimulationResult`` (per access), or a trace (DataFrame or Workload) simulated here under
    ``policy`` at ``capacity_mb`` MB (default 64) and ``cost``. Like PyTorch's memory_viz, each stay of a
    tensor in the buffer is a band stacked in order of arrival (older below), its height the tensor's size,
    coloured by tensor kind; hovering a band tells which tensor, its kind and size, the op, layer and module of
    the access that brought it in, when it arrived and how it left (evicted by which op, dropped after its last
    use, or still resident). The ``max_intervals`` stays with the most MB x accesses are drawn one by one; the
    rest, one grey band ("other tensors") up to the resident total; the dashed line is the capacity.

    Bounded memory: the stays are one entry per insertion, and what is drawn is at most ``max_intervals`` x
    (``max_points`` + 2 ``max_intervals``) values, whatever the trace's length (no tensors x accesses matrix).
    """
    import plotly.graph_objects as go
    from matplotlib.colors import to_hex

    if not isinstance(result, SimulationResult):
        from lab.sim.simulate import simulate

        result = simulate(result, policy, 64.0 if capacity_mb is None else capacity_mb, cost)
    enc = result.workload
    n = enc.n_accesses
    fig = _interactive_figure_class()()
    fig.update_layout(title=f"{result.policy} buffer occupancy, {result.capacity_mb:g} MB", hovermode="closest",
                      dragmode="zoom", xaxis_title="access (time)", yaxis_title="resident (MB)", height=460,
                      template="plotly_white", legend_title_text="tensor kind",
                      margin=dict(l=60, r=20, t=50, b=50))
    if n == 0:
        return fig
    stays = residency_intervals(result)
    nbytes = enc.tensor_bytes[stays["code"].to_numpy()].astype(np.float64)
    start, end = stays["start"].to_numpy(), stays["end"].to_numpy()
    weight = nbytes * (end - start)
    drawn = np.sort(np.argsort(-weight, kind="stable")[:max_intervals])  # in order of arrival
    grid = np.unique(np.concatenate([np.linspace(0, n - 1, min(n, max_points)).astype(np.int64),
                                     start[drawn], np.maximum(end[drawn] - 1, start[drawn])]))
    resident = (start[drawn, None] <= grid[None, :]) & (grid[None, :] < end[drawn, None])  # drawn x grid
    heights = np.where(resident, nbytes[drawn, None], 0.0) / BYTES_PER_MB
    tops = np.cumsum(heights, axis=0)
    bottoms = tops - heights
    total = result.resident_bytes[grid] / BYTES_PER_MB
    trace = enc.trace if enc.trace is not None else pd.DataFrame(index=range(n))
    column = lambda name, default="": column_or(trace, name, default)
    kinds, ops, layers, modules = column("kind", "tensor"), column("op"), column("layer"), column("module")
    ids = enc.tensor_ids
    polygons: dict = {}
    hover_x, hover_y, hover_text = [], [], []
    for row, k in enumerate(drawn):
        cols = np.flatnonzero(resident[row])
        x = np.append(grid[cols], end[k]).astype(np.float64)
        top = np.append(tops[row, cols], tops[row, cols[-1]])
        bottom = np.append(bottoms[row, cols], bottoms[row, cols[-1]])
        kind = str(kinds[start[k]])
        xs, ys = polygons.setdefault(kind, ([], []))
        xs.extend([*x, *x[::-1], x[0], None])
        ys.extend([*top, *bottom[::-1], top[0], None])
        s, e, how = int(start[k]), int(end[k]), stays["left"].iat[k]
        where = " · ".join(p for p in (f"op {ops[s]}" if str(ops[s]) else "",
                                       f"layer {layers[s]}" if str(layers[s]) not in ("", "-1") else "",
                                       f"module {modules[s]}" if str(modules[s]) else "") if p)
        left = {"evicted": f"evicted at access {e}" + (f" (op {ops[e]})" if e < n and str(ops[e]) else ""),
                "dropped": f"dropped after its last use (access {e})", "end": "resident to the end"}[how]
        text = (f"<b>{ids[enc.codes[s]]}</b><br>{kind}, {_size_text(nbytes[k])}<br>{where}<br>"
                f"in at access {s}, {left}")
        step = max(1, len(cols) // 16)  # hover anchors along the band's middle
        hover_x.extend(x[:-1][::step].tolist() + [float((s + e) / 2)])
        middle = (top + bottom) / 2
        hover_y.extend(middle[:-1][::step].tolist() + [float(middle[len(middle) // 2])])
        hover_text.extend([text] * (len(x[:-1][::step]) + 1))
    order = [k for k in KIND_ORDER if k in polygons] + sorted(set(polygons) - set(KIND_ORDER))
    for kind in order:
        xs, ys = polygons[kind]
        color = to_hex(group_color(kind))
        fig.add_trace(go.Scatter(x=xs, y=ys, fill="toself", mode="lines", line=dict(width=0.5, color="white"),
                                 fillcolor=color, name=kind, hoverinfo="skip"))
    drawn_total = tops[-1] if len(drawn) else np.zeros(len(grid))
    others = len(stays) - len(drawn)
    if others:
        fig.add_trace(go.Scatter(x=np.concatenate([grid, grid[::-1]]), y=np.concatenate([drawn_total, total[::-1]]),
                                 fill="toself", mode="lines", line=dict(width=0), fillcolor="rgba(128,128,128,0.35)",
                                 name=f"other tensors ({others:,} stays)", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=grid, y=total, mode="lines", line=dict(color="black", width=1, shape="hv"),
                             name="resident total",
                             hovertemplate="access %{x}<br>resident %{y:.3g} MB<extra></extra>"))
    fig.add_hline(y=result.capacity_mb, line_dash="dash", line_color="crimson",
                  annotation_text=f"capacity {result.capacity_mb:g} MB", annotation_position="top left")
    fig.add_trace(go.Scatter(x=hover_x, y=hover_y, mode="markers", marker=dict(size=10, opacity=0),
                             hovertext=hover_text, hoverinfo="text", showlegend=False, name="tensor"))
    fig.update_xaxes(range=[0, n])
    return fig


@_styled
def feature_importances(scorers: dict, kind: str = "gain", top: int = 15) -> Figure:
    """The learned scorer's feature importances: each feature's share (%) of the total ``kind`` ("gain" or
    "split") of each fitted model in ``scorers`` ({name, e.g. the held-out model: LearnedScorer}), one dark
    marker per model (a shape each) and a light bar for their mean; the ``top`` features by mean share, largest
    on top."""
    shares = pd.DataFrame({name: scorer.feature_importances(kind) for name, scorer in scorers.items()}).fillna(0.0)
    shares = 100.0 * shares / shares.sum().replace(0.0, 1.0)
    order = shares.mean(axis=1).sort_values(ascending=False).head(top).index
    fig = _new_figure(8, 0.3 * len(order) + 1.3)
    ax = fig.subplots()
    y = np.arange(len(order))[::-1]
    ax.barh(y, shares.loc[order].mean(axis=1), height=0.7, color=PAIR_COLORS[1], label="mean")
    for k, name in enumerate(shares.columns):
        ax.plot(shares.loc[order, name], y, linestyle="none", marker=POLICY_MARKERS[k % len(POLICY_MARKERS)],
                markersize=4.5, markerfacecolor="none", color=PAIR_COLORS[0], label=f"without {name}")
    ax.set_yticks(y, [str(f) for f in order], fontsize="small")
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(f"share of the model's total {kind} (%)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


@_styled
def eviction_scatter(scored: pd.DataFrame, ranking: Optional[pd.DataFrame] = None) -> Figure:
    """Every tensor of a scored trace by size (MB, log scale) and the eviction score of its latest access (what
    the ML policy evicts by: higher first), coloured by tensor kind; the tensors of ``ranking`` (the top-k of
    ``lab.predict_schedule``) circled. Shows where the top of the ranking sits, and its ties."""
    last = scored.drop_duplicates("tensor_id", keep="last")
    fig = _new_figure(7, 3.8)
    ax = fig.subplots()
    kinds = last["kind"].astype(str) if "kind" in last else pd.Series("tensor", index=last.index)
    for kind in [k for k in KIND_ORDER if k in set(kinds)] + sorted(set(kinds) - set(KIND_ORDER)):
        part = last[kinds == kind]
        ax.scatter(part["size_mb"], part["eviction_score"], s=16, color=group_color(kind), edgecolors="0.3",
                   linewidths=0.4, label=kind)
    if ranking is not None and len(ranking):
        top = last[last["tensor_id"].isin(set(ranking["tensor_id"]))]
        ax.scatter(top["size_mb"], top["eviction_score"], s=60, facecolors="none", edgecolors="crimson",
                   linewidths=1.0, label=f"top {len(ranking)} to evict")
    ax.set_xscale("log")
    decades = np.log10(last["size_mb"].max() / last["size_mb"].min()) if len(last) else 0
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0,) if decades > 2 else (1.0, 2.0, 5.0),
                                                            numticks=8))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("tensor size (MB)")
    ax.set_ylabel("eviction score (higher: evicted first)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


# the contenders of a leave-one-model-out table: the learned scorer drives the ML policy (its colour), Belady is
# Belady's; the others have colours no policy has
CONTENDER_COLORS = {"best_classical": "#6f6f6f", "heuristic": "#f2a541", "learned": POLICY_COLORS["ML"],
                    "learned_no_bypass": "#7fd1d1", "llm": "#c2185b", "belady": POLICY_COLORS["Belady"],
                    "belady_bypass": "#9e8ac4"}


@_styled
def gap_closed(table: pd.DataFrame, contenders: Sequence[str] = ("best_classical", "heuristic", "learned", "llm")
               ) -> Figure:
    """Share of the LRU -> optimum gap each contender closes (%) per held-out trace and capacity (a
    ``leave_one_model_out`` table): one group of horizontal bars per trace and capacity (named on the left, in
    the table's order from the top); below 0 is worse than LRU, shown as it is; 100 % reaches the optimum."""
    present = [c for c in contenders if f"{c}_gap_closed_pct" in table.columns]
    labels = [f"{m}, {100 * f:.3g} % of working set" for m, f in zip(table["model"], table["capacity_fraction"])]
    fig = _new_figure(8.5, (0.1 * max(len(present), 1) + 0.16) * len(table) + 1.3)
    ax = fig.subplots()
    y = np.arange(len(table))[::-1]
    height = 0.8 / max(len(present), 1)
    for k, name in enumerate(present):
        ax.barh(y + ((len(present) - 1) / 2 - k) * height, table[f"{name}_gap_closed_pct"].fillna(0.0), height,
                label=name.replace("_", " "), color=CONTENDER_COLORS.get(name, EXTRA_POLICY_COLORS[k % 8]))
    no_gap = table[[f"{name}_gap_closed_pct" for name in present]].isna().all(axis=1).to_numpy()
    for yi in y[no_gap]:  # LRU already reaches the optimum: no share to show
        ax.annotate("no gap: LRU is optimal here", (0.0, yi), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize="x-small", color="0.4")
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.axvline(100.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_yticks(y, labels, fontsize="small")
    ax.set_ylim(-0.6, len(table) - 0.4)
    ax.grid(axis="y", visible=False)
    ax.set_ylabel("held-out model, buffer")
    ax.set_xlabel("LRU → optimum gap closed (%)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


# --- studies (lab.study): views of a study's dataset -------------------------------------------------------


@_styled
def study_traffic(frame: pd.DataFrame, buffer: str = "scratchpad") -> Figure:
    """DRAM traffic (MB read + written) against buffer capacity (MB), one panel per model (rows) and phase
    (columns), one line per policy under ``buffer``, the optimum in black (``OPT``, or its bracket: achievable
    solid, lower bound dashed).

    The same policies stand out in every panel, each in its colour (``highlighted_policies`` over the whole
    figure: the best few by their traffic relative to each panel's best, LRU, Belady (MIN)); the others are
    thin grey lines. Takes a study's rows (``lab.load_study``) for one batch size, sequence length and weight
    dtype (filter first); ValueError when the rows hold more than one of any of them, or none for ``buffer``.
    """
    rows = frame[frame["buffer"] == buffer]
    if rows.empty:
        raise ValueError(f"no rows for buffer {buffer!r}; the study has {sorted(frame['buffer'].unique())}")
    for axis in ("batch_size", "seq_length", "weight_dtype"):
        if rows.groupby(["model", "phase"])[axis].nunique().max() > 1:
            raise ValueError(f"the rows hold several {axis} values per model: filter to one first")
    models, phases = list(dict.fromkeys(rows["model"])), [p for p in ("forward", "training") if p in set(rows["phase"])]
    shown = highlighted_policies(ranking_by_traffic(rows, by=("model", "phase", "capacity_mb")))
    fig = _new_figure(4.4 * len(phases) + 1.8, 3.0 * len(models))
    axes = fig.subplots(len(models), len(phases), squeeze=False)
    for i, model in enumerate(models):
        for j, phase in enumerate(phases):
            ax = axes[i][j]
            cell = rows[(rows["model"] == model) & (rows["phase"] == phase)].sort_values("capacity_mb")
            if cell.empty:
                ax.text(0.5, 0.5, "not in the grid", ha="center", va="center", transform=ax.transAxes, color="grey")
                ax.set_xticks([])
                ax.set_yticks([])
                _set_title(ax, f"{model}, {phase}", fontsize="medium")
                continue
            _draw_policies(ax, cell, "dram_traffic_mb", shown)
            _draw_optimum(ax, cell, "dram_traffic_mb")
            ax.set_xscale("log")
            mark_hardware_buffers(ax, cell["capacity_mb"].min(), cell["capacity_mb"].max())
            _set_title(ax, f"{model}, {phase}", fontsize="medium")
            if i == len(models) - 1:
                ax.set_xlabel("buffer capacity (MB)")
            if j == 0:
                ax.set_ylabel("DRAM traffic (MB)")
    _figure_legend(fig, axes.flat)
    return fig


@_styled
def study_gap(gaps: pd.DataFrame) -> Figure:
    """The gap of each policy's DRAM traffic to the optimum's lower bound (%) over a study's workloads and
    capacities: a horizontal box per policy and phase (forward light, training dark), the least median gap on
    top. Takes ``lab.gap_to_optimum``'s table."""
    rows = gaps.dropna(subset=["gap_pct"])
    if rows.empty:
        raise ValueError("no gap to plot: the study has no optimum rows (optimum: false, or traces too large)")
    order = rows.groupby("policy")["gap_pct"].median().sort_values(kind="stable").index.tolist()
    phases = [p for p in ("forward", "training") if p in set(rows["phase"])]
    phases += sorted(set(rows["phase"]) - set(phases))
    shades = ([PAIR_COLORS[1], PAIR_COLORS[0]] if len(phases) <= 2 else  # forward light, training dark
              [matplotlib.colormaps["Greys"](0.3 + 0.6 * k / (len(phases) - 1)) for k in range(len(phases))])
    palette = dict(zip(phases, shades))
    fig = _new_figure(8, 0.22 * len(order) * max(len(phases), 1) + 1.5)
    ax = fig.subplots()
    shown = rows.assign(policy=rows["policy"].map(policy_label))
    import seaborn as sns  # for this figure only: its import is slow

    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated vert=: its notice, not ours
        warnings.filterwarnings("ignore", message="vert: bool was deprecated", category=DeprecationWarning)
        sns.boxplot(data=shown, y="policy", x="gap_pct", hue="phase", order=[policy_label(p) for p in order],
                    hue_order=phases, palette=palette, ax=ax, fliersize=2, linewidth=0.8, orient="h")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)  # no policy goes below the bound
    ax.set_ylabel("policy (by median gap)")
    ax.set_xlabel("traffic above the optimum's lower bound (%)")
    ax.tick_params(axis="y", labelsize="small")
    ax.legend(title="phase", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _text_color(color) -> str:
    """Black or white, whichever reads better on ``color``."""
    r, g, b, _ = matplotlib.colors.to_rgba(color)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


@_styled
def best_policy_heatmap(best: pd.DataFrame, title: str = "") -> Figure:
    """Which policy moves the least DRAM traffic at each (model, capacity): a cell per pair, coloured by the
    policy (``policy_color``) and labelled with its name. Takes ``lab.best_policy``'s table for one phase,
    batch size, sequence length and weight dtype."""
    if best.duplicated(["model", "capacity_mb"]).any():
        raise ValueError("several rows per (model, capacity_mb): filter to one phase, batch size, sequence length "
                         "and weight dtype first")
    table = best.pivot(index="model", columns="capacity_mb", values="policy")
    table = table.loc[list(dict.fromkeys(best["model"]))]
    fig = _new_figure(1.6 + 0.85 * table.shape[1], 1.3 + 0.45 * table.shape[0])
    ax = fig.subplots()
    colours = np.array([[matplotlib.colors.to_rgba(policy_color(p)) if isinstance(p, str) else (1, 1, 1, 1)
                         for p in row] for row in table.to_numpy()])
    ax.imshow(colours, aspect="auto")
    for (i, j), policy in np.ndenumerate(table.to_numpy()):
        if isinstance(policy, str):
            ax.text(j, i, policy_label(policy), ha="center", va="center", fontsize="x-small",
                    color=_text_color(policy_color(policy)))
    ax.set_xticks(range(table.shape[1]), [f"{c:.3g}" for c in table.columns], rotation=45)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_xlabel("buffer capacity (MB)")
    if title:
        _set_title(ax, title, fontsize="medium")
    capacities = np.log(table.columns.to_numpy(np.float64))  # the columns' places, in log MB between them
    mark_hardware_buffers(ax, float(table.columns.min()), float(table.columns.max()),
                          position=lambda mb: float(np.interp(np.log(mb), capacities, np.arange(len(capacities)))),
                          span=(0.94, 1.0))  # above the cells' names, not through them
    ax.grid(False)
    return fig
