"""The interactive explorer: the seed's Streamlit page as ipywidgets, logic here, display in a notebook.

``Explorer()`` shows controls and, updated on every change (debounced), the
headline (per policy: DRAM traffic, reads + writes with writebacks, and byte
hit rate; the best online policy against the optimum's bracket, policies
within ``TIE_PCT`` % of the least traffic named as tied), the metrics table
per policy with the optimum's bracket as the bound (row ``OPT``,
``lab.optimal``; skipped with a message on traces of more than
``optimum_max_accesses`` accesses), shown with the headline metrics in words
and units (``table``; every metric in ``metrics``), and in tabs: the tensors
to evict first grouped by score (ties are one row), the occupancy heatmap,
the interactive occupancy timeline (``plots.occupancy_timeline``: zoom,
hover), DRAM traffic and byte hit rate against capacity (*sweep capacity*,
with a progress bar) and the validation summary.

Nothing out of date stays on screen unmarked: from a change of a control
until its update is done the results are greyed (``stale``); a sweep whose
inputs (workload, policies, hardware, buffer model) changed since it ran is
cleared and says so (``sweep_stale``); an input error clears every result
and shows the message. The capacity is a number field (``capacity_mb``,
exactly what is simulated: a preset's 50 MB is 50 MB) beside a log slider
for coarse moves (``capacity_slider``), whose steps never overwrite the
exact value.

The workload is ``synthetic`` (``lab.generate_trace``: model type, layers,
batch, sequence length, reuse probability, seed) or ``captured``
(``lab.capture_model``: a preset, batch, sequence length, training step or
forward pass, weight dtype, layers; captures are cached on disk). The policy
list holds every registered policy (``lab.policy_names()``); the featured
ones are selected by default and *every policy* selects them all. The last
workload, its scores and its optimum are kept, so a change of capacity or
policy simulates only. Bad values show a message, never a traceback. Tests
drive it headlessly: set widget values, call ``update()``, read the tables.

The *buffer model* control chooses what the policies run in
(``lab.simulate``'s ``buffer``): the scratchpad (a liveness-aware
software-managed whole-tensor buffer) or the cache (a hardware cache of
lines, ``lab.sim.hardware``). Choosing a hardware preset sets it to the
preset's model (the cache for a GPU's L2), as it sets the capacity to the
preset's buffer; either can then be changed. The headline names the model
(``model``, a ``SimulationModel``) and says why a result is degenerate; the
metrics table names each row's buffer model, the policy's parameters and
its note. The optimum's row is always the whole-tensor schedule of a
software-managed buffer (the scratchpad), what a compiler could plan; the
occupancy views show whole tensors, so the scratchpad's only.

Time: where the trace records its ops (a captured workload) and the hardware
preset has the physical numbers (a GPU preset), the headline and the table
give each row's step time beside its traffic (``lab.sim.timing``, eager
execution, in the row's buffer model), and the *time & planner* tab sets LRU,
the best online policy and Belady beside the prefetching planner
(``lab.plan``) and its lower bound, in graph and eager step time and DRAM
traffic, every row in the planner's model (``compare_time``), made when the
tab is opened (``time_comparison``; under a second on a 12-layer GPT-2).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import warnings
from typing import Optional, Sequence

import ipywidgets as w
import pandas as pd
from IPython import get_ipython
from IPython.display import display

import lab
from lab.ui import plots
from lab.sim.cost import HARDWARE_PRESETS, resolve_cost
from lab.sim.model import BUFFERS, PLAN_BUFFER, SimulationModel, check_buffer, params_text
from lab.workloads.generator import MODEL_TYPES
from lab.sim.policy import policy_names
from lab.learn.scoring import scorer_names
from lab.analysis.contenders import (AUTO_OPTIMUM_ACCESSES, TIE_PCT, above_optimum_pct, auto_skips_optimum,
                                     best_online_policy, is_offline, online_policies)
from lab.analysis.sweep import compare_time, evaluate_contenders, optimum_bracket
from lab.sim.timing import TIME_METRICS, missing_numbers
from lab.bounds.capacities import default_capacities_mb

# headline metrics first: DRAM traffic (reads + writes, writebacks included) and byte hit rate; hit rates that
# count accesses (where tiny tensors weigh as much as big ones) after them
TABLE_COLUMNS = ["dram_traffic_mb", "dram_reads_mb", "dram_writes_mb", "byte_hit_rate", "gap_closed_pct",
                 "opt_lower_mb", "opt_upper_mb", "writebacks", "evictions", "dram_accesses", "cache_hits",
                 "cache_hit_rate", "read_hit_rate", "total_latency", "bandwidth_wait_time", "peak_occupancy_mb",
                 *TIME_METRICS]
SOURCES = ("synthetic", "captured")
SWEEP_METRICS = ("dram_traffic_mb", "byte_hit_rate")
# the table shown: the headline metrics in words with their units, then what produced each row
SHOWN_COLUMNS = {"dram_traffic_mb": "DRAM traffic (MB)", "dram_reads_mb": "read (MB)", "dram_writes_mb": "written (MB)",
                 TIME_METRICS[0]: "step time, eager (ms)",  # step_time_ms: lab.sim.timing's, eager
                 "byte_hit_rate": "byte hit rate (%)", "cache_hit_rate": "hit rate (%)", "evictions": "evictions",
                 "vs_optimum_pct": "vs optimum (%)", "total_latency": "latency (ms)", "buffer model": "buffer model",
                 "parameters": "parameters", "note": "note"}
SHOWN_FORMATS = {"DRAM traffic (MB)": "{:,.1f}", "read (MB)": "{:,.1f}", "written (MB)": "{:,.1f}",
                 "step time, eager (ms)": "{:,.4g}",
                 "byte hit rate (%)": "{:.1f}", "hit rate (%)": "{:.1f}", "evictions": "{:,.0f}",
                 "vs optimum (%)": "{:+.1f}", "latency (ms)": "{:,.2f}"}
TABLE_CAPTION = ("DRAM traffic: MB read from and written to DRAM (writebacks included), the number to minimize. Byte "
                 "hit rate: share of the bytes accessed that were served on chip; hit rate: share of the accesses. "
                 "vs optimum: % more DRAM traffic than the optimum (its lower bound when bracketed). Latency: the "
                 "hardware preset's time for the accesses and transfers.")
TIME_CAPTION = ("Step time, eager (ms), where the trace records its ops and the hardware preset has the physical "
                "numbers: lab.sim.timing's model (per op a roofline of compute, DRAM and on-chip time; the host "
                "issuing each op) of each row's schedule in its buffer model, under the hardware preset.")
# the time tab (compare_time): its columns as shown, in words with units and the model behind each
TIME_SHOWN_COLUMNS = {"role": "role", "dram_traffic_mb": "DRAM traffic (MB)",
                      "graph_step_time_ms": "step time, graph (ms)", "eager_step_time_ms": "step time, eager (ms)",
                      "graph_gpu_time_ms": "GPU busy, graph (ms)", "eager_host_time_ms": "host, eager (ms)",
                      "graph_memory_bound_ops": "memory-bound ops, graph", "algorithm": "algorithm"}
TIME_SHOWN_FORMATS = {"DRAM traffic (MB)": "{:,.1f}", "step time, graph (ms)": "{:,.4g}",
                      "step time, eager (ms)": "{:,.4g}", "GPU busy, graph (ms)": "{:,.4g}",
                      "host, eager (ms)": "{:,.4g}", "memory-bound ops, graph": "{:,.0f}"}
GROUPS_CAPTION = ("Tensors in the order to evict them first, by the eviction score of their latest access (1: evict "
                  "first). Tensors with the same score are one row: many tensors often tie, and within a tie the "
                  "order is by size only.")
STALE_CSS = "<style>.lab-stale { opacity: 0.35; pointer-events: none; }</style>"
CAPACITY_SLIDER_STEP = 0.25  # the slider's steps, in log2 MB


def _capture_presets() -> list[str]:
    from lab.workloads.models import PRESETS

    return list(PRESETS.names()) if hasattr(PRESETS, "names") else list(PRESETS)


class Explorer:
    """Controls and live results for one workload; ``widget`` is the whole layout."""

    def __init__(self, model_type: str = "Transformer", num_layers: int = 12, batch_size: int = 32,
                 seq_length: int = 128, reuse_probability: float = 0.3, seed: int = 0, scorer: str = "heuristic",
                 policies: Optional[Sequence[str]] = None, capacity_mb: float = 64.0,
                 hardware: str = "seed", top: int = 20, sweep_points: int = 12, debounce_s: float = 0.25,
                 heatmap_policy: Optional[str] = None, source: str = "synthetic", preset: str = "gpt2",
                 training: bool = False, weight_dtype: str = "bf16", capture_layers: int = 0,
                 optimum_max_accesses: int = AUTO_OPTIMUM_ACCESSES, buffer: Optional[str] = None):
        from lab.workloads.models import WEIGHT_DTYPES

        buffer = check_buffer(buffer, allow_none=True) or HARDWARE_PRESETS[hardware.lower()].buffer  # the preset's

        style = {"description_width": "initial"}
        self.source = w.ToggleButtons(options=list(SOURCES), value=source, description="workload",
                                      tooltips=["lab.generate_trace", "lab.capture_model (cached on disk)"])
        self.model_type = w.Dropdown(options=list(MODEL_TYPES), value=model_type, description="model")
        self.num_layers = w.IntText(value=num_layers, description="layers")
        self.batch_size = w.IntText(value=batch_size, description="batch")
        self.seq_length = w.IntText(value=seq_length, description="seq length")
        self.reuse_probability = w.FloatSlider(value=reuse_probability, min=0.0, max=1.0, step=0.05,
                                               description="reuse p", style=style)
        self.seed = w.IntText(value=seed, description="seed")
        self.preset = w.Dropdown(options=_capture_presets(), value=preset, description="preset")
        self.training = w.Checkbox(value=training, description="training step", indent=True)
        self.weight_dtype = w.Dropdown(options=list(WEIGHT_DTYPES), value=weight_dtype, description="weights")
        self.capture_layers = w.IntText(value=capture_layers, description="layers (0: preset's)", style=style)
        self.scorer = w.Dropdown(options=scorer_names(), value=scorer, description="scorer")
        policies = policy_names(featured=True) if policies is None else policies
        registered = policy_names()
        self.policies = w.SelectMultiple(options=registered, value=tuple(lab.get_policy(p).name for p in policies),
                                         description="policies", rows=min(len(registered), 10))
        self.all_policies_button = w.Button(description="every policy", tooltip="select every registered policy")
        self.capacity_mb = w.FloatText(value=capacity_mb, description="capacity MB", style=style,
                                       layout=w.Layout(width="190px"))
        self.capacity_slider = w.FloatLogSlider(value=_slider_value(capacity_mb), base=2, min=-2, max=14,
                                                step=CAPACITY_SLIDER_STEP, readout=False,
                                                layout=w.Layout(width="220px"),
                                                tooltip="move to change the capacity in steps; type an exact value "
                                                        "in the field")
        presets = {p.name: key for key, p in HARDWARE_PRESETS.items()}
        self.hardware = w.Dropdown(options=list(presets), value=HARDWARE_PRESETS[hardware.lower()].name,
                                   description="hardware")
        self.buffer = w.ToggleButtons(options=list(BUFFERS), value=buffer, description="buffer model", style=style,
                                      tooltips=list(BUFFERS.values()))
        self.sweep_button = w.Button(description="sweep capacity", icon="line-chart")
        self.sweep_progress = w.IntProgress(value=0, min=0, max=1, description="sweep", style=style,
                                            layout=w.Layout(visibility="hidden"))
        self.sweep_status = w.HTML()
        self.synthetic_controls = [self.model_type, self.num_layers, self.reuse_probability, self.seed]
        self.captured_controls = [self.preset, self.training, self.weight_dtype, self.capture_layers]
        self.controls = [self.source, *self.synthetic_controls, self.batch_size, self.seq_length,
                         *self.captured_controls, self.scorer, self.policies, self.capacity_mb, self.buffer]
        self.message = w.HTML()
        self.headline = w.HTML()
        self.table: Optional[pd.DataFrame] = None  # the metrics as shown: headline metrics in words and units
        self.metrics_out, self.ranking_out, self.heatmap_out = w.Output(), w.Output(), w.Output()
        self.timeline_out, self.curves_out, self.validation_out = w.Output(), w.Output(), w.Output()
        self.time_out = w.Output()
        self.top, self.sweep_points, self.debounce_s = top, sweep_points, debounce_s
        self.heatmap_policy = heatmap_policy
        self.optimum_max_accesses = optimum_max_accesses
        # results of the last update, for tests and for users who want the numbers
        self.trace: Optional[pd.DataFrame] = None
        self.results: Optional[dict] = None
        self.metrics: Optional[pd.DataFrame] = None
        self.ranking: Optional[pd.DataFrame] = None
        self.validation: Optional[pd.DataFrame] = None
        self.sweep: Optional[pd.DataFrame] = None
        self.sweep_stale = False  # a sweep ran, and its inputs changed since: cleared, and the status says so
        self._sweep_inputs: Optional[dict] = None  # what the last sweep ran on
        self.groups: Optional[pd.DataFrame] = None  # every tensor grouped by eviction score (ties: one row)
        self.shown_result = None  # the result the occupancy figures show (the first chosen policy's)
        self._timeline = None
        self._time_comparison = None  # compare_time's table of the last update, made on first use
        self._time_note: Optional[str] = None  # why there is none ("" when there is one; None: not looked at yet)
        self.model: Optional[SimulationModel] = None  # buffer model, cost preset and capacity of the results
        self.notes: dict = {}  # policy -> why its result is degenerate (SimulationResult.note) or it did not run
        self.optimum_note: str = ""
        self.error: Optional[str] = None
        self.last_update_s: Optional[float] = None
        self._workload_key = None
        self._workload_value = None
        self._optimum_cache: dict = {}
        self._plotly_sent = False  # whether plotly.js went to the page with a figure already
        self._timer: Optional[threading.Timer] = None
        self._lock = threading.Lock()
        self._quiet = False  # True while a preset sets several controls: one update for them all
        self._skipped: set = set()  # the chosen policies that cannot run in the chosen buffer model
        for control in self.controls:
            control.observe(self._changed, names="value")
        self.hardware.observe(self._hardware_changed, names="value")
        self.capacity_mb.observe(self._capacity_typed, names="value")
        self.capacity_slider.observe(self._slider_moved, names="value")
        self.source.observe(self._source_changed, names="value")
        self.sweep_button.on_click(lambda _: self.run_sweep())
        self.all_policies_button.on_click(lambda _: setattr(self.policies, "value", tuple(self.policies.options)))
        self.widget = self._layout()
        self._source_changed()
        self.update()

    def _layout(self) -> w.Widget:
        left = w.VBox([self.source, *self.synthetic_controls, *self.captured_controls, self.batch_size,
                       self.seq_length])
        right = w.VBox([self.scorer, self.policies, self.all_policies_button, self.hardware, self.buffer,
                        w.HBox([self.capacity_mb, self.capacity_slider]), self.sweep_button])
        self.tabs = w.Tab(children=[self.ranking_out, self.heatmap_out, self.timeline_out,
                                    w.VBox([w.HBox([self.sweep_progress, self.sweep_status]), self.curves_out]),
                                    self.validation_out, self.time_out])
        for i, title in enumerate(["top evictions", "occupancy", "timeline", "traffic vs capacity", "validation",
                                   "time & planner"]):
            self.tabs.set_title(i, title)
        self.tabs.observe(self._draw_tab, names="selected_index")
        self.results_box = w.VBox([self.headline, self.metrics_out, self.tabs])
        return w.VBox([w.HBox([left, right]), self.message, self.results_box, w.HTML(STALE_CSS)])

    @property
    def stale(self) -> bool:
        """Whether the results shown are greyed: a control changed and its update has not finished."""
        return "lab-stale" in self.results_box._dom_classes

    def _mark_stale(self, stale: bool) -> None:
        (self.results_box.add_class if stale else self.results_box.remove_class)("lab-stale")

    def _capacity_typed(self, change) -> None:
        """The exact capacity moved (typed, or set by a preset): the slider follows, as near as its steps go."""
        value = change["new"]
        if isinstance(value, (int, float)) and value > 0 and not _same_step(self.capacity_slider.value, value):
            self.capacity_slider.value = _slider_value(value)

    def _slider_moved(self, change) -> None:
        """The slider moved: the capacity becomes its value (4 significant digits), unless the slider only sits on
        its step nearest the exact capacity (the page snaps a typed 50 MB to the step at 53.82 MB and sends that
        back: it must not replace the exact value)."""
        value = float(change["new"])
        if not _same_step(value, self.capacity_mb.value):
            self.capacity_mb.value = float(f"{value:.4g}")

    def _ipython_display_(self):
        display(self.widget)

    def _source_changed(self, change=None):
        captured = self.source.value == "captured"
        for control in self.synthetic_controls:
            control.layout.display = "none" if captured else None
        for control in self.captured_controls:
            control.layout.display = None if captured else "none"

    def _hardware_changed(self, change):
        """A preset brings its on-chip buffer's size and model (the cache for a GPU's L2), then one update."""
        preset = resolve_cost(change["new"])
        self._quiet = True
        try:
            if preset.buffer_mb:
                self.capacity_mb.value = preset.buffer_mb
            self.buffer.value = preset.buffer
        finally:
            self._quiet = False
        self._changed()

    def _cost(self):
        """The chosen preset's cost model, running the chosen buffer model (what ``lab.simulate`` and the sweep
        follow where no ``buffer`` is given)."""
        return dataclasses.replace(resolve_cost(self.hardware.value), buffer=self.buffer.value)

    def _changed(self, change=None):
        if self._quiet:
            return
        self._mark_stale(True)  # greyed until the update is done: what is shown is of the old inputs
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

    def _trace(self) -> pd.DataFrame:
        if self.source.value == "captured":
            from lab.workloads.models import capture_model

            layers = self.capture_layers.value
            if not isinstance(layers, int) or layers < 0:
                raise ValueError(f"layers must be 0 (the preset's depth) or an integer >= 1, got {layers!r}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. an unusable capture cache: the capture still runs
                try:
                    return capture_model(self.preset.value, batch_size=self.batch_size.value,
                                         seq_length=self.seq_length.value, training=self.training.value,
                                         weight_dtype=self.weight_dtype.value, num_layers=layers or None)
                except (ValueError, TypeError, KeyError, ImportError):
                    raise
                except Exception as error:  # noqa: BLE001 (torch or transformers refusing the model): a message
                    raise ValueError(f"the capture of {self.preset.value} failed: {type(error).__name__}: "
                                     f"{error}") from error
        return lab.generate_trace(self.model_type.value, self.num_layers.value, self.batch_size.value,
                                  self.seq_length.value, self.reuse_probability.value, self.seed.value)

    def _workload_description(self) -> tuple:
        common = (self.batch_size.value, self.seq_length.value, self.scorer.value, self.top)
        if self.source.value == "captured":
            return ("captured", self.preset.value, self.training.value, self.weight_dtype.value,
                    self.capture_layers.value, *common)
        return ("synthetic", self.model_type.value, self.num_layers.value, self.reuse_probability.value,
                self.seed.value, *common)

    def _workload(self):
        """(trace, schedule, encoded scored workload, validation table); the last one is kept and reused."""
        if not self.policies.value:
            raise ValueError("choose at least one policy")
        key = self._workload_description()
        if key != self._workload_key:
            try:
                trace = self._trace()
            except (TypeError, KeyError, ImportError) as error:  # bad values; a capture without torch
                raise ValueError(str(error)) from error
            schedule = lab.predict_schedule(trace, top=self.top, scorer=self.scorer.value)
            workload = lab.encode_trace(schedule.scored)
            self._workload_value = (trace, schedule, workload, lab.validate(trace).to_frame())
            self._workload_key = key
            self._optimum_cache = {}
        return self._workload_value

    def _optimum_note(self, workload) -> str:
        """Why the table has no optimum ("" when it has one): the trace is too long for it, or the buffer model
        is not the scratchpad, whose schedule the optimum is."""
        if auto_skips_optimum("auto", workload.n_accesses, self.optimum_max_accesses):
            return (f"The optimum (lab.optimal) is skipped on this trace of {workload.n_accesses:,} "
                    f"accesses (more than {self.optimum_max_accesses:,}: its flow takes minutes).")
        if self.buffer.value != PLAN_BUFFER:
            return ("The optimum (lab.optimal) is a schedule of the scratchpad, not of the cache's lines: "
                    "choose the scratchpad buffer model to set the policies against it.")
        return ""

    def _show_error(self, error: Exception) -> None:
        """Show the message and clear every result: none of them answers the inputs now on screen."""
        self.error = str(error)
        self.message.value = f"<b style='color:#b00'>Cannot run:</b> {_escape(self.error)}"
        self.trace = self.results = self.metrics = self.table = self.ranking = self.groups = None
        self.validation = self.shown_result = self.model = None
        self._timeline = self._time_comparison = self._time_note = None
        self.notes = {}
        self.headline.value = ""
        self._tab_content, self._stale = {}, set()
        for output in (self.metrics_out, self.ranking_out, self.heatmap_out, self.timeline_out, self.validation_out,
                       self.time_out):
            output.outputs = ()
        if self.sweep is not None or self.sweep_stale:
            self._clear_sweep("the inputs above have an error")
        self._mark_stale(False)

    def _sweep_key(self) -> dict:
        """What a capacity sweep depends on (not the capacity: the sweep spans capacities and marks the chosen one)."""
        return {"workload": self._workload_description()[:-1], "policies": tuple(self.policies.value),
                "hardware": self.hardware.value, "buffer model": self.buffer.value, "points": self.sweep_points}

    def _clear_sweep(self, why: str) -> None:
        """Clear the sweep's figure and say why it is gone (its inputs changed, or an error)."""
        self.sweep, self.sweep_stale = None, True
        self.curves_out.outputs = ()
        self.sweep_progress.layout.visibility = "hidden"
        self.sweep_status.value = (f"<span style='color:#b00'>The capacity sweep was cleared: {_escape(why)}.</span> "
                                   "Press <i>sweep capacity</i> to sweep again.")

    def update(self) -> None:
        """Recompute everything from the controls' values and redraw the outputs."""
        start = time.perf_counter()
        try:
            trace, schedule, workload, validation = self._workload()
            contenders = self._evaluate(workload)
        except (ValueError, TypeError) as error:
            self._show_error(error)
            return
        self.error = None
        self.message.value = ""
        results, skipped = contenders.at(self.capacity_mb.value), contenders.skipped
        self.trace, self.results = trace, results
        self.model = next(iter(results.values())).model.without_policy()
        self.notes = {**{name: r.note for name, r in results.items() if r.note}, **skipped}
        self._skipped = set(skipped)
        self.metrics = with_model_columns(contenders.comparison(self.capacity_mb.value).reindex(columns=TABLE_COLUMNS),
                                          results)
        self.table = shown_table(self.metrics)
        self.ranking = schedule.ranking.head(self.top)
        self.groups = schedule.groups
        self.validation = validation
        self.headline.value = headline_html(self.metrics, self.capacity_mb.value, self.optimum_note, self.model,
                                            self.notes)
        shown = results[self._shown_policy(results)]
        self.shown_result, self._timeline = shown, None
        self._time_comparison, self._time_note = None, None
        tensors = shown.buffer == PLAN_BUFFER  # the occupancy views draw whole tensors
        self._tab_content = {  # what each tab shows; drawn when shown (the open tab now, the others on opening)
            0: (self.ranking_out, lambda: [_html(GROUPS_CAPTION), groups_table(self.groups.head(self.top)),
                                           plots.eviction_scatter(schedule.scored, self.ranking)]),
            1: (self.heatmap_out, lambda: [plots.occupancy_heatmap(shown, scores=schedule.scored["eviction_score"])
                                           if tensors else _html(OCCUPANCY_OF_TENSORS)]),
            2: (self.timeline_out, lambda: [self._plotly_html(self.timeline) if tensors
                                            else _html(OCCUPANCY_OF_TENSORS)]),
            4: (self.validation_out, lambda: [self.validation, plots.reuse_distance_histogram(trace)]),
            5: (self.time_out, lambda: self._time_views()),
        }
        if self._sweep_inputs is not None and self.sweep is not None:
            changed = [name for name, value in self._sweep_key().items() if self._sweep_inputs[name] != value]
            if changed:
                self._clear_sweep(f"the {' and the '.join(changed)} changed since it ran")
            else:  # the same sweep, the chosen capacity marked anew
                capacity = self.capacity_mb.value
                self._tab_content[3] = (self.curves_out, lambda: [plots.capacity_curves(
                    self.sweep, metrics=SWEEP_METRICS, capacity_mb=capacity)])
        self._stale = set(self._tab_content)
        self._render(self.metrics_out, table_html(self.table))
        self._draw_tab()
        self._mark_stale(False)
        self.last_update_s = time.perf_counter() - start

    def _shown_policy(self, results: dict) -> str:
        """The policy whose result the occupancy views show: ``heatmap_policy`` when chosen, else the first."""
        name = lab.get_policy(self.heatmap_policy or self.policies.value[0]).name
        return name if name in results else next(iter(results))

    def _evaluate(self, workload):
        """The contenders (``lab.analysis.sweep.evaluate_contenders``) at the chosen capacity, cost preset and
        buffer model: the chosen policies, per access in the scratchpad and for the shown policy only in the
        cache (its line traces are long), the ones that cannot run in this buffer model skipped and said why;
        the optimum when ``_optimum_note`` says nothing against it (kept per cost preset: a change of policies
        does not solve it again). ValueError when no chosen policy can run."""
        cost, buffer, capacity = self._cost(), self.buffer.value, self.capacity_mb.value
        chosen = [lab.get_policy(p) for p in self.policies.value]
        shown = self._shown_policy({p.name: p for p in chosen})
        self.optimum_note = self._optimum_note(workload)
        contenders = evaluate_contenders(
            workload, chosen, [capacity], cost, optimum=not self.optimum_note, buffer=buffer,
            per_access=True if buffer == PLAN_BUFFER else {shown}, skip_unsupported=True,
            optima=self._optimum_cache.setdefault(self.hardware.value, {}))
        if not contenders.at(capacity):
            raise ValueError("; ".join(contenders.skipped.values()))
        return contenders

    @property
    def timeline(self):
        """The occupancy timeline (plotly figure, ``plots.occupancy_timeline``) of the shown policy's result, built
        on first use after each update; None for the hardware cache (its result is one of lines, not tensors)."""
        shown = self.shown_result
        if self._timeline is None and shown is not None and shown.buffer == PLAN_BUFFER:
            self._timeline = plots.occupancy_timeline(shown)
        return self._timeline

    @property
    def time_comparison(self) -> Optional[pd.DataFrame]:
        """The demand-fetch policies (LRU, the best online of the chosen ones, Belady) beside the prefetching
        planner and its lower bound, in step time (graph and eager, ms) and DRAM traffic (MB), every row in the
        planner's model (``lab.analysis.sweep.compare_time``: a scratchpad of the chosen capacity, the chosen
        hardware preset), made on first use after each update (the *time & planner* tab); None, with
        ``time_note`` saying why, when the trace does not record its ops or the preset lacks the physical
        numbers."""
        if self._time_note is None and self.trace is not None:
            self._time_comparison, self._time_note = None, self._why_untimed()
            if not self._time_note:
                scored = self._workload_value[1].scored
                try:
                    self._time_comparison = compare_time(scored, self.capacity_mb.value, self.hardware.value,
                                                         [lab.get_policy(p).name for p in self.policies.value],
                                                         scorer=self.scorer.value)
                except (ValueError, TypeError) as error:
                    self._time_note = f"No time comparison: {error}"
        return self._time_comparison

    @property
    def time_note(self) -> str:
        """Why ``time_comparison`` is None ("" when it is not)."""
        self.time_comparison  # noqa: B018 (made on first use)
        if self.trace is None and self.error:
            return f"No results: {self.error}"
        return self._time_note or ""

    def _why_untimed(self) -> str:
        """Why the results have no step time ("" when they have one)."""
        if "op_index" not in self.trace.columns:
            return ("No step time: this trace does not record its ops (generated traces do not); choose a captured "
                    "workload.")
        why = missing_numbers(resolve_cost(self.hardware.value))
        return f"No step time: {why}." if why else ""

    def _time_views(self) -> list:
        """The time tab's content: the comparison's model in a sentence and its table, or why there is none."""
        from IPython.display import HTML

        table = self.time_comparison
        if table is None:
            return [_html(self.time_note)]
        shown = table[list(TIME_SHOWN_COLUMNS)].rename(columns=TIME_SHOWN_COLUMNS)
        shown.index.name = "policy"
        styled = shown.style.format(TIME_SHOWN_FORMATS, na_rep="")
        return [_html(table.attrs["model"]), HTML(styled.to_html())]

    def _plotly_html(self, figure):
        """``figure`` as HTML that draws itself with plotly.js, inlined with the first figure of this explorer (no
        network needed). Voilà's frontend cannot load plotly's JupyterLab renderer (built for a newer JupyterLab),
        so the explorer does not rely on it; JupyterLab runs the same HTML."""
        from IPython.display import HTML

        first = not self._plotly_sent
        self._plotly_sent = True
        return HTML(figure.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False}))

    def _draw_tab(self, change=None) -> None:
        """Draw the open tab's content if it is out of date (after an update, or never drawn)."""
        index = self.tabs.selected_index
        if index in getattr(self, "_stale", ()) and get_ipython() is not None:
            output, content = self._tab_content[index]
            self._render(output, *content())
            self._stale.discard(index)

    def run_sweep(self) -> None:
        """DRAM traffic and byte hit rate against capacity for the chosen policies and the optimum, one capacity
        at a time under a progress bar (an IntProgress beside the figure, never in its output), in the chosen
        buffer model (the policies that cannot run in it left out, as in the table)."""
        try:
            trace, schedule, workload, _ = self._workload()
        except ValueError as error:
            self._show_error(error)
            return
        inputs = self._sweep_key()
        policies = [p for p in self.policies.value if lab.get_policy(p).name not in self._skipped]
        capacities = default_capacities_mb(workload, self.sweep_points)
        with_optimum = not auto_skips_optimum("auto", workload.n_accesses, self.optimum_max_accesses)
        bar = self.sweep_progress
        bar.max, bar.value, bar.bar_style = len(capacities), 0, ""
        bar.layout.visibility = "visible"
        self.sweep_button.disabled = True
        parts = []
        try:
            for i, capacity in enumerate(capacities):
                self.sweep_status.value = f"{i}/{len(capacities)} capacities"
                parts.append(lab.sweep_capacity(workload, policies, [float(capacity)], self._cost(),
                                                optimum=with_optimum and self.buffer.value == PLAN_BUFFER,
                                                threads=1))
                bar.value = i + 1
        except (ValueError, TypeError) as error:  # the sweep cannot run: it is cleared, the results above stay
            self.error = str(error)
            self.message.value = f"<b style='color:#b00'>Cannot sweep:</b> {_escape(self.error)}"
            self._clear_sweep("it could not run")
            bar.bar_style = "danger"
            return
        finally:
            self.sweep_button.disabled = False
        self.sweep, self.sweep_stale, self._sweep_inputs = pd.concat(parts, ignore_index=True), False, inputs
        bar.bar_style = "success"
        note = "" if with_optimum else " (optimum skipped: trace too long)"
        self.sweep_status.value = f"{len(capacities)} capacities from {capacities[0]:.3g} to {capacities[-1]:.4g} MB{note}"
        self._render(self.curves_out, plots.capacity_curves(self.sweep, metrics=SWEEP_METRICS,
                                                            capacity_mb=self.capacity_mb.value))

    @staticmethod
    def _render(output: w.Output, *values) -> None:
        """Replace ``output``'s content by ``values``; works from a callback, outside any cell's execution."""
        if get_ipython() is None:  # headless (tests, scripts): keep the results, draw nothing
            return
        output.outputs = ()  # set the state, send no clear message: safe outside a cell's execution
        for value in values:
            output.append_display_data(value)


OCCUPANCY_OF_TENSORS = ("The occupancy views show whole tensors: choose the scratchpad buffer model to see them "
                        "(the hardware cache holds lines).")


def _html(text: str):
    from IPython.display import HTML

    return HTML(f"<p>{_escape(text)}</p>")


def with_model_columns(metrics: pd.DataFrame, results: dict) -> pd.DataFrame:
    """``metrics`` (one row per policy, and ``OPT``) with what produced each row, after the numbers: ``buffer
    model`` (the optimum's is the scratchpad: a whole-tensor software plan), ``parameters`` (the policy's) and
    ``note`` (why the result is degenerate, or "")."""
    def of(name, what, optimum):
        result = results.get(name)
        return what(result) if result is not None else optimum

    index = metrics.index
    return metrics.assign(**{
        "buffer model": [of(p, lambda r: r.buffer, PLAN_BUFFER) for p in index],
        "parameters": [of(p, lambda r: params_text(r.params), "") for p in index],
        "note": [of(p, lambda r: r.note, "") for p in index],
    })


def headline_html(metrics: pd.DataFrame, capacity_mb: float, optimum_note: str = "",
                  model: Optional[SimulationModel] = None, notes: Optional[dict] = None) -> str:
    """The explorer's headline: the best online policy by DRAM traffic (reads + writes, writebacks included),
    its byte hit rate, how far above the optimum it is, and the optimum (exact, or its bracket); then the model
    that produced the numbers (``model.describe()``) and, per policy, why its result is degenerate (``notes``)."""
    tied = best_online_policy(metrics)  # only offline policies (Belady and kin) chosen: the best of them
    best = tied[0]
    row = metrics.loc[best]
    kind = "online" if not is_offline(best) else "offline"
    online = online_policies(metrics) if kind == "online" else metrics.loc[[p for p in metrics.index
                                                                             if is_offline(p)]]
    if len(tied) == 1:
        who = f"best {kind} policy <b>{_escape(str(best))}</b>"
    else:
        names = ", ".join(f"<b>{_escape(p)}</b>" for p in tied[:5]) + (f" and {len(tied) - 5} more"
                                                                       if len(tied) > 5 else "")
        who = (f"{'all ' + str(len(tied)) if len(tied) == len(online) else len(tied)} {kind} policies tie for best "
               f"(within {TIE_PCT:g} % of the least DRAM traffic): {names}; the least, <b>{_escape(str(best))}</b>:")
    step = row.get("step_time_ms", float("nan"))
    timed = f", step time <b>{step:,.4g} ms</b> (eager, lab.sim.timing)" if step == step else ""
    parts = [f"<b>At {capacity_mb:.4g} MB</b>: {who}{',' if len(tied) == 1 else ''} DRAM traffic "
             f"<b>{row['dram_traffic_mb']:,.1f} MB</b> (read {row['dram_reads_mb']:,.1f} + written "
             f"{row['dram_writes_mb']:,.1f}), byte hit rate <b>{row['byte_hit_rate']:.1f} %</b>{timed}"]
    bracket = optimum_bracket(metrics)
    if bracket is not None:
        lower, upper = bracket
        above = above_optimum_pct(row["dram_traffic_mb"], lower)
        exact = upper <= lower
        gap = (f"; {_escape(str(best))} is {above:.1f} % above {'it' if exact else 'its lower end'}"
               if above == above else "")
        parts.append(f"the optimum is <b>{upper:,.1f} MB</b> (exact{gap})" if exact else
                     f"the optimum is between <b>{lower:,.1f} and {upper:,.1f} MB</b> (a bracket{gap})")
    elif optimum_note:
        parts.append(_escape(optimum_note))
    lines = ["; ".join(parts)]
    if model is not None:
        lines.append(f"<b>Model</b>: {_escape(model.describe())}")
    lines += [f"<b>{_escape(str(policy))}</b>: {_escape(note)}" for policy, note in (notes or {}).items()]
    return "<div style='font-size:1.05em;margin:4px 0'>" + "<br>".join(lines) + "</div>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slider_value(capacity_mb: float) -> float:
    """Where the log slider shows ``capacity_mb``: the value itself (the page snaps it to a step; the exact value
    stays in the number field), within the slider's range."""
    return float(min(max(capacity_mb, 2.0 ** -2), 2.0 ** 14))


def _same_step(slider_mb: float, capacity_mb) -> bool:
    """Whether the slider at ``slider_mb`` sits on the step nearest ``capacity_mb`` (within half a step, in log2):
    then it shows that capacity and says nothing new about it."""
    import math

    if not isinstance(capacity_mb, (int, float)) or not capacity_mb > 0 or not slider_mb > 0:
        return False
    return abs(math.log2(slider_mb) - math.log2(min(max(capacity_mb, 2.0 ** -2), 2.0 ** 14))) <= \
        CAPACITY_SLIDER_STEP / 2 + 1e-9


def shown_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The metrics table as the explorer shows it: the headline metrics under their names in words with units
    (``SHOWN_COLUMNS``: DRAM traffic, read and written in MB, byte hit rate and hit rate in %, evictions, how
    far above the optimum in %, latency in ms) and what produced each row (buffer model, parameters, note),
    columns with nothing to say (every value NaN or empty) left out. ``vs optimum (%)``: 100 (traffic -
    optimum) / optimum, the optimum's lower end when it is bracketed."""
    table = metrics.copy()
    bracket = optimum_bracket(metrics)
    if bracket is not None and bracket[0] > 0:
        table["vs_optimum_pct"] = above_optimum_pct(table["dram_traffic_mb"], bracket[0])
    table = table[[c for c in SHOWN_COLUMNS if c in table]].rename(columns=SHOWN_COLUMNS)
    informative = [c for c in table if not (table[c].isna() | (table[c].astype(str) == "")).all()]
    table = table[informative]
    table.index.name = "policy"
    return table


def table_html(table: pd.DataFrame):
    """``shown_table``'s table styled (thousands separated, units in the headers) with its caption."""
    from IPython.display import HTML

    styled = table.style.format({c: f for c, f in SHOWN_FORMATS.items() if c in table}, na_rep="")
    caption = TABLE_CAPTION + (f" {TIME_CAPTION}" if SHOWN_COLUMNS["step_time_ms"] in table else "")
    return HTML(styled.to_html() + f"<p style='font-size:0.85em;color:#555'>{_escape(caption)}</p>")


def groups_table(groups: pd.DataFrame):
    """The tensors to evict first, one row per score (``lab.learn.scoring.score_groups``): ranks, score, how many
    tensors share it, their MB, examples and ops; the score shaded from keep (light) to evict first (dark)."""
    shown = pd.DataFrame({
        "ranks": [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(groups["first_rank"], groups["last_rank"])],
        "eviction score": groups["eviction_score"],
        "tensors": groups["tensors"],
        "size (MB, all of them)": groups["size_mb"],
        "tensors (first few)": groups["examples"],
        "ops": groups["ops"],
    })
    return (shown.style.hide(axis="index")
            .format({"eviction score": "{:.3f}", "size (MB, all of them)": "{:,.4g}"})
            .background_gradient(subset=["eviction score"], cmap="Reds", vmin=0, vmax=1))
