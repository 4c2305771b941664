"""The interactive explorer: the seed's Streamlit page as ipywidgets, logic here, display in a notebook.

``Explorer()`` shows controls (model type, layers, batch, sequence length,
reuse probability, seed, scorer, policies, capacity, hardware preset) and,
updated on every change (debounced), the metrics table per policy with the
optimum's bracket as the bound (row ``OPT``, ``lab.optimal``; ``gap_closed_pct``
on DRAM traffic), the top-20 eviction table, the occupancy heatmap, hit rate
and DRAM traffic against capacity (the optimum's bracket shaded) and the
validation summary. By default the featured policies are selected
(``lab.policy_names(featured=True)``); every registered one can be. Bad values show a message, never a traceback. Tests drive
it headlessly: set widget values, call ``update()``, read the tables.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Optional, Sequence

import ipywidgets as w
import pandas as pd
from IPython import get_ipython
from IPython.display import display

import lab
from lab.ui import plots
from lab.sim.cost import HARDWARE_PRESETS
from lab.workloads.generator import MODEL_TYPES
from lab.sim.policy import policy_names
from lab.learn.scoring import scorer_names
from lab.analysis.sweep import default_capacities_mb, optimum_metrics

TABLE_COLUMNS = ["cache_hit_rate", "read_hit_rate", "cache_hits", "dram_accesses", "evictions", "total_latency",
                 "bandwidth_wait_time", "dram_reads_mb", "dram_writes_mb", "dram_traffic_mb", "gap_closed_pct", "opt_lower_mb", "opt_upper_mb",
                 "peak_occupancy_mb"]


class Explorer:
    """Controls and live results for one workload; ``widget`` is the whole layout."""

    def __init__(self, model_type: str = "Transformer", num_layers: int = 12, batch_size: int = 32,
                 seq_length: int = 128, reuse_probability: float = 0.3, seed: int = 0, scorer: str = "heuristic",
                 policies: Optional[Sequence[str]] = None, capacity_mb: float = 64.0,
                 hardware: str = "seed", top: int = 20, sweep_points: int = 12, debounce_s: float = 0.25,
                 heatmap_policy: Optional[str] = None):
        style = {"description_width": "initial"}
        self.model_type = w.Dropdown(options=list(MODEL_TYPES), value=model_type, description="model")
        self.num_layers = w.IntText(value=num_layers, description="layers")
        self.batch_size = w.IntText(value=batch_size, description="batch")
        self.seq_length = w.IntText(value=seq_length, description="seq length")
        self.reuse_probability = w.FloatSlider(value=reuse_probability, min=0.0, max=1.0, step=0.05,
                                               description="reuse p", style=style)
        self.seed = w.IntText(value=seed, description="seed")
        self.scorer = w.Dropdown(options=scorer_names(), value=scorer, description="scorer")
        policies = policy_names(featured=True) if policies is None else policies
        self.policies = w.SelectMultiple(options=policy_names(), value=tuple(lab.get_policy(p).name for p in policies),
                                         description="policies", rows=8)
        self.capacity_mb = w.FloatLogSlider(value=capacity_mb, base=2, min=-2, max=14, step=0.25,
                                            description="capacity MB", style=style, readout_format=".4g")
        presets = {p.name: key for key, p in HARDWARE_PRESETS.items()}
        self.hardware = w.Dropdown(options=list(presets), value=HARDWARE_PRESETS[hardware.lower()].name,
                                   description="hardware")
        self.sweep_button = w.Button(description="sweep capacity", icon="line-chart")
        self.controls = [self.model_type, self.num_layers, self.batch_size, self.seq_length, self.reuse_probability,
                         self.seed, self.scorer, self.policies, self.capacity_mb, self.hardware]
        self.message = w.HTML()
        self.metrics_out, self.ranking_out, self.heatmap_out = w.Output(), w.Output(), w.Output()
        self.curves_out, self.validation_out = w.Output(), w.Output()
        self.top, self.sweep_points, self.debounce_s = top, sweep_points, debounce_s
        self.heatmap_policy = heatmap_policy
        # results of the last update, for tests and for users who want the numbers
        self.metrics: Optional[pd.DataFrame] = None
        self.ranking: Optional[pd.DataFrame] = None
        self.validation: Optional[pd.DataFrame] = None
        self.sweep: Optional[pd.DataFrame] = None
        self.error: Optional[str] = None
        self.last_update_s: Optional[float] = None
        self._timer: Optional[threading.Timer] = None
        self._lock = threading.Lock()
        for control in self.controls:
            control.observe(self._changed, names="value")
        self.hardware.observe(self._hardware_changed, names="value")
        self.sweep_button.on_click(lambda _: self.run_sweep())
        self.widget = self._layout()
        self.update()

    def _layout(self) -> w.Widget:
        left = w.VBox([self.model_type, self.num_layers, self.batch_size, self.seq_length, self.reuse_probability,
                       self.seed])
        right = w.VBox([self.scorer, self.policies, self.hardware, self.capacity_mb, self.sweep_button])
        tabs = w.Tab(children=[self.ranking_out, self.heatmap_out, self.curves_out, self.validation_out])
        for i, title in enumerate(["top evictions", "occupancy", "hit rate vs capacity", "validation"]):
            tabs.set_title(i, title)
        return w.VBox([w.HBox([left, right]), self.message, self.metrics_out, tabs])

    def _ipython_display_(self):
        display(self.widget)

    def _hardware_changed(self, change):
        preset = lab.sim.cost.resolve_cost(change["new"])
        if preset.buffer_mb:
            self.capacity_mb.value = preset.buffer_mb  # its on-chip buffer; this change triggers the update

    def _changed(self, change=None):
        if self.debounce_s <= 0:
            self.update()
            return
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            try:  # in a kernel: the update runs on its event loop, between messages
                self._timer = asyncio.get_running_loop().call_later(self.debounce_s, self.update)
            except RuntimeError:  # no event loop (a script, a test): a timer thread
                self._timer = threading.Timer(self.debounce_s, self.update)
                self._timer.start()

    def _workload(self):
        trace = lab.generate_trace(self.model_type.value, self.num_layers.value, self.batch_size.value,
                                   self.seq_length.value, self.reuse_probability.value, self.seed.value)
        if not self.policies.value:
            raise ValueError("choose at least one policy")
        return trace, lab.predict_schedule(trace, top=self.top, method=self.scorer.value)

    def _show_error(self, error: Exception) -> None:
        self.error = str(error)
        self.message.value = f"<b style='color:#b00'>Cannot run:</b> {_escape(self.error)}"

    def update(self) -> None:
        """Recompute everything from the controls' values and redraw the outputs."""
        start = time.perf_counter()
        try:
            trace, schedule = self._workload()
            results = lab.run_policies(schedule.scored, self.policies.value, self.capacity_mb.value,
                                       self.hardware.value)
        except ValueError as error:
            self._show_error(error)
            return
        self.error = None
        self.message.value = ""
        optimum = optimum_metrics(next(iter(results.values())).workload, self.capacity_mb.value, self.hardware.value)
        self.metrics = lab.metrics_table(results, optimum).reindex(columns=TABLE_COLUMNS)
        self.ranking = schedule.ranking
        self.validation = lab.validate(trace).to_frame()
        heat_policy = lab.get_policy(self.heatmap_policy or self.policies.value[0]).name
        figure = plots.occupancy_heatmap(results.get(heat_policy, next(iter(results.values()))),
                                         scores=schedule.scored["eviction_score"])
        self._render(self.metrics_out, self.metrics.round(3))
        self._render(self.ranking_out, plots.eviction_table(self.ranking))
        self._render(self.heatmap_out, figure)
        self._render(self.validation_out, self.validation)
        self.last_update_s = time.perf_counter() - start

    def run_sweep(self) -> None:
        """Hit rate against capacity for the chosen policies, with a progress bar."""
        try:
            trace, schedule = self._workload()
            capacities = default_capacities_mb(trace, self.sweep_points)
            self.curves_out.outputs = ()
            with self.curves_out:  # the progress bar shows in the tab it fills
                self.sweep = lab.sweep_capacity(schedule.scored, self.policies.value, capacities, self.hardware.value,
                                                progress=get_ipython() is not None)
        except ValueError as error:
            self._show_error(error)
            return
        self._render(self.curves_out, plots.capacity_curves(self.sweep, capacity_mb=self.capacity_mb.value))

    @staticmethod
    def _render(output: w.Output, value) -> None:
        """Replace ``output``'s content by ``value``; works from a callback, outside any cell's execution."""
        if get_ipython() is None:  # headless (tests, scripts): keep the results, draw nothing
            return
        output.outputs = ()  # set the state, send no clear message: safe outside a cell's execution
        output.append_display_data(value)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
