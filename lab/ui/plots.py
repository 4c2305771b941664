"""Figures of ``lab`` results (matplotlib, seaborn styling); every notebook and report draws with these.

Each function takes lab results and returns a matplotlib Figure, labelled with
units. Nothing here is random: the same results give the same figure. Each
figure is closed in pyplot before it is returned, so a notebook shows it once
(as the cell's value) and pyplot does not keep it alive.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
import numpy as np
import pandas as pd
import seaborn as sns

from lab.analysis.sweep import OPTIMUM
from lab.sim.simulate import SimulationResult
from lab.units import BYTES_PER_MB

TRAFFIC_METRICS = ("dram_traffic_mb",)  # what the optimum's bracket bounds


def _styled(plot):
    """Draw ``plot`` in seaborn's whitegrid style without changing the caller's matplotlib settings."""

    @functools.wraps(plot)
    def draw(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
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
    mesh = ax.imshow(cells, aspect="auto", interpolation="nearest", cmap="viridis",
                     extent=(0, enc.n_accesses, len(rows) - 0.5, -0.5), vmin=0, vmax=1)
    fig.colorbar(mesh, ax=ax, label=label, pad=0.01)
    row_of = {code: i for i, code in enumerate(rows)}
    marks = [(a, row_of[v]) for a, v in zip(result.victim_access, result.victim_code) if v in row_of]
    if marks:
        ax.scatter(*zip(*marks), marker="x", color="crimson", s=14, linewidths=0.8, label="eviction")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_yticks(range(len(rows)), [str(t) for t in enc.tensor_ids[rows]], fontsize=6)
    ax.set_xlabel("access (time)")
    ax.set_ylabel("tensor")
    ax.grid(False)
    ax.set_title(f"{result.policy} buffer occupancy, {result.capacity_mb:g} MB")
    return fig


@_styled
def capacity_curves(sweep: pd.DataFrame, metrics: Sequence[str] = ("cache_hit_rate", "dram_traffic_mb"),
                    capacity_mb: Optional[float] = None) -> Figure:
    """Metrics against capacity, one line per policy, the optimum in black as the bound.

    Takes ``lab.sweep_capacity`` output; ``capacity_mb`` draws a marker line.
    On DRAM traffic (MB read + written) the optimum's bracket is shaded, from
    its lower bound (dashed: no policy goes below it) to its achievable
    whole-tensor schedule; on other metrics that schedule is drawn dotted (it
    minimizes traffic, not misses, so it bounds nothing there). Belady (MIN)
    is a policy like the others.
    """
    labels = {"cache_hit_rate": "hit rate (%)", "byte_hit_rate": "byte hit rate (%)",
              "bytes_from_dram": "DRAM reads (MB)", "dram_traffic_mb": "DRAM traffic, read + written (MB)",
              "total_latency": "total latency (ms)"}
    fig = _new_figure(5.5 * len(metrics), 4)
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for policy, group in sweep.groupby("policy", sort=False):
            y = group[metric] / BYTES_PER_MB if metric == "bytes_from_dram" else group[metric]
            if policy != OPTIMUM:
                ax.plot(group["capacity_mb"], y, marker="o", markersize=3, color=policy_color(policy),
                        label="Belady (MIN)" if policy == "Belady" else policy)
            elif metric in TRAFFIC_METRICS:
                ax.fill_between(group["capacity_mb"], group["opt_lower_mb"], group["opt_upper_mb"], color="black",
                                alpha=0.15, linewidth=0, label="OPT bracket")
                ax.plot(group["capacity_mb"], group["opt_lower_mb"], linestyle="--", color="black",
                        label="OPT (bound)")
            else:
                ax.plot(group["capacity_mb"], y, linestyle=":", color="black", label="OPT schedule")
        if capacity_mb is not None:
            ax.axvline(capacity_mb, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlabel("buffer capacity (MB)")
        ax.set_ylabel(labels.get(metric, metric))
    axes[0][-1].legend(fontsize="small")
    return fig


def policy_color(policy: str):
    """The colour of ``policy`` in every figure: fixed by its place among the registered policies (tab20), the
    optimum black; a policy defined elsewhere gets a grey."""
    from lab.sim.policy import policy_names

    if policy == OPTIMUM:
        return "black"
    names = policy_names()
    canonical = "Belady" if policy == "Belady (MIN)" else policy
    if canonical not in names:
        return "grey"
    return matplotlib.colormaps["tab20"](names.index(canonical) % 20)


# tensor kinds of captured traces (lab.workloads.capture.KINDS), then the generator's
KIND_ORDER = ("weight", "activation", "gradient", "optimizer_state", "input", "buffer", "kv_cache", "output")


def group_color(group) -> object:
    """The colour of a tensor kind in every figure (tab10 by KIND_ORDER); other groups (layers, modules) by
    their hash, the same in every figure of a session."""
    name = str(group)
    if name in KIND_ORDER:
        return matplotlib.colormaps["tab10"](KIND_ORDER.index(name))
    return matplotlib.colormaps["tab20b"](sum(map(ord, name)) % 20)


@_styled
def metric_bars(comparison: pd.DataFrame,
                metrics: Sequence[str] = ("cache_hit_rate", "bytes_from_dram", "total_latency")) -> Figure:
    """One bar chart per metric, one bar per policy; takes ``lab.compare_policies`` output."""
    labels = {"cache_hit_rate": "hit rate (%)", "bytes_from_dram": "DRAM reads (MB)",
              "dram_traffic_mb": "DRAM traffic, read + written (MB)", "total_latency": "total latency (ms)",
              "evictions": "evictions", "byte_hit_rate": "byte hit rate (%)"}
    fig = _new_figure(4.2 * len(metrics), 3.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = comparison[metric] / (BYTES_PER_MB if metric == "bytes_from_dram" else 1)
        ax.bar([str(p) for p in values.index], values.to_numpy(), color=[policy_color(p) for p in values.index])
        ax.set_ylabel(labels.get(metric, metric))
        ax.set_xlabel("")
    return fig


@_styled
def reuse_distance_histogram(trace: pd.DataFrame, reference: Optional[pd.DataFrame] = None,
                             bins: int = 40) -> Figure:
    """Histogram of reuse distances (accesses, log-spaced bins; first accesses left out), with a reference."""
    from lab.trace.workload import reuse_distances

    fig = _new_figure(7, 3.6)
    ax = fig.subplots()
    samples = {"trace": reuse_distances(trace["tensor_id"])}
    if reference is not None:
        samples["reference"] = reuse_distances(reference["tensor_id"])
    finite = np.concatenate([s[~np.isnan(s)] for s in samples.values()])
    if finite.size:
        edges = np.geomspace(1, finite.max() + 2, bins) - 1
        for name, s in samples.items():
            ax.hist(s[~np.isnan(s)], bins=edges, alpha=0.6, label=name, density=reference is not None)
        ax.set_xscale("symlog", linthresh=1)
        ax.legend(fontsize="small")
    ax.set_xlabel("reuse distance (accesses)")
    ax.set_ylabel("density" if reference is not None else "reuses")
    return fig


@_styled
def traffic_breakdown(tables: dict, by: str = "kind") -> Figure:
    """DRAM traffic (MB) per policy, stacked by group; takes {policy: ``lab.dram_traffic_by``}."""
    frame = pd.DataFrame({policy: table["dram_mb"] for policy, table in tables.items()}).fillna(0.0).T
    fig = _new_figure(7, 3.8)
    ax = fig.subplots()
    bottom = np.zeros(len(frame))
    for group in frame.columns:
        ax.bar(frame.index, frame[group], bottom=bottom, label=str(group), color=group_color(group))
        bottom += frame[group].to_numpy()
    ax.set_ylabel("DRAM traffic, read + written (MB)")
    ax.legend(title=by, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def eviction_table(ranking: pd.DataFrame):
    """The top-k eviction table (``lab.predict_schedule(...).ranking``) as a styled DataFrame: sizes in MB,
    scores shaded from keep (light) to evict first (dark)."""
    formats = {"size_mb": "{:.3g}", "eviction_score": "{:.3f}", "reuse_distance": "{:.0f}"}
    return (ranking.style.hide(axis="index")
            .format({k: v for k, v in formats.items() if k in ranking}, na_rep="first access")
            .background_gradient(subset=["eviction_score"], cmap="Reds", vmin=0, vmax=1))


# --- studies (lab.study): views of a study's dataset -------------------------------------------------------


@_styled
def study_traffic(frame: pd.DataFrame, buffer: str = "scratchpad") -> Figure:
    """DRAM traffic (MB read + written) against buffer capacity (MB), one panel per model (rows) and phase
    (columns), one line per policy under ``buffer``, the optimum's bracket shaded on the scratchpad.

    Takes a study's rows (``lab.load_study``) for one batch size, sequence
    length and weight dtype (filter first); ValueError when the rows hold more
    than one of any of them, or none for ``buffer``.
    """
    rows = frame[frame["buffer"] == buffer]
    if rows.empty:
        raise ValueError(f"no rows for buffer {buffer!r}; the study has {sorted(frame['buffer'].unique())}")
    for axis in ("batch_size", "seq_length", "weight_dtype"):
        if rows.groupby(["model", "phase"])[axis].nunique().max() > 1:
            raise ValueError(f"the rows hold several {axis} values per model: filter to one first")
    models, phases = list(dict.fromkeys(rows["model"])), [p for p in ("forward", "training") if p in set(rows["phase"])]
    fig = _new_figure(4.2 * len(phases), 2.8 * len(models))
    axes = fig.subplots(len(models), len(phases), squeeze=False)
    for i, model in enumerate(models):
        for j, phase in enumerate(phases):
            ax = axes[i][j]
            cell = rows[(rows["model"] == model) & (rows["phase"] == phase)].sort_values("capacity_mb")
            if cell.empty:
                ax.text(0.5, 0.5, "not in the grid", ha="center", va="center", transform=ax.transAxes, color="grey")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{model}, {phase}", fontsize="medium")
                continue
            for policy, group in cell.groupby("policy", sort=True):
                if policy == OPTIMUM:
                    if "opt_lower_mb" in group and group["opt_lower_mb"].notna().any():
                        ax.fill_between(group["capacity_mb"], group["opt_lower_mb"], group["opt_upper_mb"],
                                        color="black", alpha=0.15, linewidth=0, label="OPT bracket")
                        ax.plot(group["capacity_mb"], group["opt_lower_mb"], "--", color="black", label="OPT (bound)")
                    continue
                ax.plot(group["capacity_mb"], group["dram_traffic_mb"], marker="o", markersize=2.5,
                        color=policy_color(policy), label=policy)
            ax.set_xscale("log")
            ax.set_title(f"{model}, {phase}", fontsize="medium")
            if i == len(models) - 1:
                ax.set_xlabel("buffer capacity (MB)")
            if j == 0:
                ax.set_ylabel("DRAM traffic (MB)")
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize="small")
    return fig


@_styled
def study_gap(gaps: pd.DataFrame) -> Figure:
    """The gap of each policy's DRAM traffic to the optimum's lower bound (%) over a study's workloads and
    capacities, a box per policy and phase. Takes ``lab.gap_to_optimum``'s table."""
    rows = gaps.dropna(subset=["gap_pct"])
    if rows.empty:
        raise ValueError("no gap to plot: the study has no optimum rows (optimum: false, or traces too large)")
    order = rows.groupby("policy")["gap_pct"].median().sort_values().index.tolist()
    fig = _new_figure(max(6.0, 0.7 * len(order) + 2), 4)
    ax = fig.subplots()
    sns.boxplot(data=rows, x="policy", y="gap_pct", hue="phase", order=order, ax=ax, fliersize=2, linewidth=0.8)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)  # no policy goes below the bound
    ax.set_xlabel("policy (by median gap)")
    ax.set_ylabel("traffic above the optimum's bound (%)")
    ax.tick_params(axis="x", rotation=30)
    return fig


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
    fig = _new_figure(1.0 + 0.75 * table.shape[1], 0.9 + 0.45 * table.shape[0])
    ax = fig.subplots()
    colours = np.array([[matplotlib.colors.to_rgba(policy_color(p)) if isinstance(p, str) else (1, 1, 1, 1)
                         for p in row] for row in table.to_numpy()])
    ax.imshow(colours, aspect="auto")
    for (i, j), policy in np.ndenumerate(table.to_numpy()):
        if isinstance(policy, str):
            ax.text(j, i, policy, ha="center", va="center", fontsize="x-small")
    ax.set_xticks(range(table.shape[1]), [f"{c:.3g}" for c in table.columns], rotation=45)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_xlabel("buffer capacity (MB)")
    ax.grid(False)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig
