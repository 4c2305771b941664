"""Step time: each op's time on the GPU (a roofline), and the host that issues the ops (a queue).

The one module that prices time from a preset's physical numbers (``CostModel.peak_tflops``, the efficiencies,
bandwidths, launch and host costs). For op *i* of a trace that records its ops (``op_index``, a capture's):

- compute   ``flops_i / (peak_tflops[dtype_i] * 1e12 * efficiency)``, the efficiency ``compute_efficiency``, or
  ``misaligned_gemm_efficiency`` for a matrix product with an operand whose innermost dimension is not a multiple
  of 8 elements (cuBLAS runs an older ``mma.sync`` fallback kernel for it);
- DRAM      ``(dram_read_bytes_i + dram_write_bytes_i) / (dram_bandwidth_gb_s * 1e9 * dram_efficiency)``, the
  bytes the buffer model moved at the op (``lab.simulate``: a victim's writeback is charged to the op whose
  access evicted it, as Nsight Compute charges a kernel the writebacks that occur while it runs);
- on-chip   ``onchip_bytes_i / (onchip_bandwidth_gb_s * 1e9)``, the bytes the SMs move through the L2: every byte
  the op accesses, and for a matrix product of M x N output the tile re-reads of its operands,
  ``K_bytes * (M * ceil(N / Tn) + N * ceil(M / Tm)) + output bytes`` with (Tm, Tn) = ``gemm_tile`` and
  ``K_bytes`` = operand bytes read / (M + N) (the two operands' shared dimension, times the element size);
- launch    ``launches_i * kernel_launch_us``: the shortest a kernel takes, back to back.

``gpu_ms_i`` is the largest of the four (``memory_combine="max"``, the hierarchical roofline: a GPU streams its
HBM and L2 traffic at once, and every DRAM byte also crosses the L2), or the largest of compute, launch and
DRAM + on-chip (``"sum"``, XLA's cost analysis, which fits a TPU's separate memory spaces better than a GPU's
L2). ``bound_i`` names the term that set it: ``"compute"``, ``"dram"``, ``"on-chip"`` or ``"launch"``.

Eager execution is a queue: the host issues op *i* after spending ``host_ms_i`` on it (``host_dispatch_us``,
times ``autograd_factor`` for an op recorded by autograd: a training forward or a backward op), the GPU starts it
``launch_latency_us`` later or when the op before it ends, whichever is later (one stream, in order)::

    h_i = h_{i-1} + host_ms_i;   s_i = max(h_i + launch_latency, e_{i-1});   e_i = s_i + gpu_ms_i

``execution="graph"`` (a CUDA graph or a compiler) issues without host cost; each kernel keeps its launch
floor. The step time is the last op's end. Op *i* exposes ``e_i - e_{i-1}`` of it: ``gpu_ms_i`` busy and
``s_i - e_{i-1}`` waiting for the host; the exposed times sum to the step time, so any grouping of the ops
(phase, layer, module) adds up. Bytes outside any op (persist writebacks, a cache's final flush) form a last
pseudo-op, ``flush``, paid at DRAM bandwidth after the last op.

The host numbers are the measuring host's (its CPU, Python and PyTorch), not the GPU's: they are fitted once per
preset from measured steps (issue 26, slice 4). The host cost is per recorded op that the host dispatched (its
``host_calls`` > 0: an op a library launches from inside another op's call, such as cuDNN's layout transforms
around a convolution, costs none); the count itself (the aten calls dispatched per op, views included) is kept
for a per-call model, should measurements ask for one. ``total_latency`` and ``bandwidth_wait_time`` (the seed's per-access
latencies, ``CostModel.latency_ms``) are another model, kept as they were.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import numpy as np
import pandas as pd

from lab.checks import check_str
from lab.compiled import kernel, kernel_array
from lab.sim.cost import resolve_cost
from lab.units import BYTES_PER_GB_DECIMAL, MS_PER_S

EXECUTION_MODES = ("eager", "graph")
BOUNDS = ("compute", "dram", "on-chip", "launch")
MEMORY_BOUNDS = ("dram", "on-chip")
FLUSH = "flush"  # the pseudo-op of the bytes outside any op
US_PER_MS = 1000.0
TIME_METRICS = ("step_time_ms", "gpu_time_ms", "host_time_ms", "memory_bound_ops")


@kernel
def issue_queue(host_ms, gpu_ms, latency_ms):
    """Start and end (ms, float64 arrays) of ops issued in order by a host and run in order by one GPU stream.

    ``host_ms``: host time spent on each op before it is issued (float64); ``gpu_ms``: each op's time on the GPU
    (float64); ``latency_ms``: from issue to start on an idle GPU. Op i is issued at ``h_i`` = the sum of
    ``host_ms[:i + 1]``, starts at ``max(h_i + latency_ms, end[i - 1])`` and ends ``gpu_ms[i]`` later."""
    n = gpu_ms.shape[0]
    start = np.empty(n, np.float64)
    end = np.empty(n, np.float64)
    issued = 0.0
    previous = 0.0
    for i in range(n):
        issued += host_ms[i]
        begin = max(issued + latency_ms, previous)
        start[i] = begin
        previous = begin + gpu_ms[i]
        end[i] = previous
    return start, end


def check_execution(execution) -> str:
    """``execution`` if it is one of ``EXECUTION_MODES`` (ValueError naming the argument otherwise)."""
    return check_str("execution", execution, EXECUTION_MODES)


def missing_numbers(cost) -> str:
    """Why ``cost`` cannot price time ("" when it can): the preset and the physical numbers it lacks."""
    missing = cost.missing_time_fields
    if not missing:
        return ""
    return (f"cost preset {cost.name!r} has no physical numbers for the step time (it lacks {', '.join(missing)}): "
            "use a GPU preset (H200, H100-SXM5, A100-SXM4-40GB) or a CostModel that sets them")


def onchip_bytes(ops: pd.DataFrame, gemm_tile) -> np.ndarray:
    """Bytes the SMs move through the L2 for each op of ``ops`` (``lab.trace.ops.op_table``), float64: its accessed
    bytes, a matrix product's operands once per tile row or column of its output (``gemm_tile``: (Tm, Tn))."""
    read = ops["read_bytes"].to_numpy(np.float64)
    write = ops["write_bytes"].to_numpy(np.float64)
    m = ops["gemm_m"].to_numpy(np.float64)
    n = ops["gemm_n"].to_numpy(np.float64)
    tm, tn = gemm_tile
    gemm = (m > 0) & (n > 0)
    k_bytes = np.divide(read, m + n, out=np.zeros_like(read), where=gemm)
    tiled = k_bytes * (m * np.ceil(n / tn) + n * np.ceil(m / tm)) + write
    return np.where(gemm, np.maximum(tiled, read + write), read + write)


def combined_memory_ms(dram_ms, onchip_ms, cost):
    """An op's memory time from its DRAM and on-chip times (ms, arrays or floats), by ``cost.memory_combine``:
    ``"max"`` (they overlap) or ``"sum"`` (XLA's cost analysis)."""
    return np.maximum(dram_ms, onchip_ms) if cost.memory_combine == "max" else dram_ms + onchip_ms


def memory_combine_of(cost) -> str:
    """How ``cost`` combines an op's DRAM and on-chip times (``"max"`` or ``"sum"``)."""
    return cost.memory_combine


def with_memory_combine(cost, memory_combine=None):
    """``cost`` with its ``memory_combine`` replaced (None: ``cost`` as it is)."""
    return cost if memory_combine is None else replace(cost, memory_combine=memory_combine)


def dram_bytes_per_ms(cost) -> float:
    """The DRAM bandwidth ops reach under ``cost``, in bytes per ms: ``dram_bandwidth_gb_s * dram_efficiency``."""
    return cost.dram_bandwidth_gb_s * cost.dram_efficiency * BYTES_PER_GB_DECIMAL / MS_PER_S


def launch_latency_ms(cost) -> float:
    """From issue to start on an idle GPU under ``cost`` (ms)."""
    return cost.launch_latency_us / US_PER_MS


class StepTime:
    """The step time of one simulation: ``ops``, one row per op (in op order) and the ``flush`` pseudo-op last,
    with ``compute_ms``, ``dram_ms``, ``onchip_ms``, ``launch_ms``, ``gpu_ms``, ``bound``, ``host_ms``,
    ``start_ms``, ``end_ms``, ``exposed_ms`` (``end_ms`` minus the previous op's: ``gpu_ms`` + ``wait_ms``) and
    ``wait_ms`` (the GPU idle, waiting for the host), and the op's own columns (``lab.trace.ops.op_table``);
    ``execution``: ``"eager"`` or ``"graph"``. All times in ms.

    ``step_times`` leaves the table to be built when ``ops`` is first read and gives the metrics' totals from its
    arrays: a simulation reports the metrics, and building the DataFrame took most of the time of pricing its
    ops. A ``StepTime`` made from a whole table reads its totals from it."""

    __slots__ = ("_ops", "_build", "_totals", "execution")

    def __init__(self, ops: Optional[pd.DataFrame], execution: str, *, build=None, totals: Optional[dict] = None):
        self._ops, self._build, self._totals, self.execution = ops, build, totals, execution

    @property
    def ops(self) -> Optional[pd.DataFrame]:
        """The table of the ops' times (see the class), built on first use; None for ``UNTIMED``."""
        if self._ops is None and self._build is not None:
            self._ops, self._build = self._build(), None
        return self._ops

    def _total(self, name: str):
        if self._totals is None:
            table = self.ops
            self._totals = step_totals(table["end_ms"].to_numpy(), table["gpu_ms"].to_numpy(),
                                       table["host_ms"].to_numpy(), table["bound"][table["op"] != FLUSH].to_numpy())
        return self._totals[name]

    @property
    def step_time_ms(self) -> float:
        """The step's time in ms: the end of its last op (the flush included)."""
        return self._total("step_time_ms")

    @property
    def gpu_time_ms(self) -> float:
        """The GPU's busy time in ms (the ops' ``gpu_ms`` summed)."""
        return self._total("gpu_time_ms")

    @property
    def host_time_ms(self) -> float:
        """The host's time in ms to issue every op (0 in graph execution)."""
        return self._total("host_time_ms")

    @property
    def memory_bound_ops(self) -> int:
        """Ops (the flush aside) whose time is set by DRAM or on-chip bandwidth."""
        return self._total("memory_bound_ops")

    def metrics(self) -> dict:
        """The time metrics (``TIME_METRICS``) of ``lab.sim.simulate.metrics_of_counts``: NaN for ``UNTIMED``."""
        if self._ops is None and self._build is None:
            return dict.fromkeys(TIME_METRICS, math.nan)
        return {name: self._total(name) for name in TIME_METRICS}


def step_totals(end_ms: np.ndarray, gpu_ms: np.ndarray, host_ms: np.ndarray, op_bounds: np.ndarray) -> dict:
    """The time metrics (``TIME_METRICS``) of a step: ``end_ms``, ``gpu_ms``, ``host_ms`` per row of its table
    (the flush included), ``op_bounds`` the ``bound`` of each op (the flush aside). Sums as pandas sums a column
    (numpy's, in row order), so the totals are the same whether or not the table was built."""
    return {"step_time_ms": float(end_ms[-1]) if len(end_ms) else 0.0,
            "gpu_time_ms": float(np.sum(np.asarray(gpu_ms, np.float64))),
            "host_time_ms": float(np.sum(np.asarray(host_ms, np.float64))),
            "memory_bound_ops": int(np.count_nonzero(np.isin(op_bounds, MEMORY_BOUNDS)))}


# No step time: a trace that records its ops, simulated with a preset that lacks the numbers (metrics: NaN).
UNTIMED = StepTime(ops=None, execution="")


def step_times(ops: pd.DataFrame, dram_read_bytes, dram_write_bytes, flush_bytes: int, cost,
               execution: str = "eager") -> StepTime:
    """Price each op of ``ops`` (``lab.trace.ops.op_table``) and run the issue queue (see the module).

    ``dram_read_bytes``, ``dram_write_bytes``: bytes the buffer model moved at each op (one per row of ``ops``);
    ``flush_bytes``: bytes written outside any op (the ``flush`` pseudo-op); ``cost``: a ``CostModel`` with the
    physical numbers (ValueError naming what it lacks otherwise, or a dtype of an op with FLOPs missing from its
    ``peak_tflops``); ``execution``: ``"eager"`` (the host issues each op) or ``"graph"`` (no host cost)."""
    execution = check_execution(execution)
    why = missing_numbers(cost)
    if why:
        raise ValueError(why)
    n = len(ops)
    flops = ops["flops"].to_numpy(np.float64)
    peak = np.zeros(n, np.float64)
    computes = flops > 0
    if computes.any():
        dtypes = ops["dtype"].astype(str).to_numpy()
        for dtype in np.unique(dtypes[computes]):
            peak[dtypes == dtype] = cost.peak_tflops_for(dtype)
    efficiency = np.where(ops["misaligned"].to_numpy(np.bool_), cost.misaligned_gemm_efficiency,
                          cost.compute_efficiency)
    compute = np.divide(flops, peak * 1e12 * efficiency, out=np.zeros(n), where=computes) * MS_PER_S
    dram_bytes = np.asarray(dram_read_bytes, np.float64) + np.asarray(dram_write_bytes, np.float64)
    dram = dram_bytes / (cost.dram_bandwidth_gb_s * BYTES_PER_GB_DECIMAL * cost.dram_efficiency) * MS_PER_S
    onchip = onchip_bytes(ops, cost.gemm_tile) / (cost.onchip_bandwidth_gb_s * BYTES_PER_GB_DECIMAL) * MS_PER_S
    launch = ops["launches"].to_numpy(np.float64) * cost.kernel_launch_us / US_PER_MS
    memory = combined_memory_ms(dram, onchip, cost)
    terms = np.stack([compute, memory, launch])
    gpu = terms.max(axis=0)
    which = terms.argmax(axis=0)  # ties: compute, then memory, then launch
    bound = np.where(which == 0, "compute", np.where(which == 2, "launch", np.where(dram >= onchip, "dram", "on-chip")))
    if execution == "eager":
        factor = np.where(ops["grad_mode"].to_numpy(np.bool_), cost.autograd_factor, 1.0)
        # an op the library launches from inside another op's call (a layout transform cuDNN runs around a
        # convolution: lab.workloads.lowering) has no aten call of its own (host_calls 0): no host cost
        dispatched = ops["host_calls"].to_numpy(np.int64) > 0
        host = np.where(dispatched, cost.host_dispatch_us / US_PER_MS * factor, 0.0)
    else:
        host = np.zeros(n)
    flush_ms = flush_bytes / (cost.dram_bandwidth_gb_s * BYTES_PER_GB_DECIMAL * cost.dram_efficiency) * MS_PER_S
    host_all = np.concatenate([np.asarray(host, np.float64), [0.0]])  # the flush last, as in the table
    gpu_all = np.concatenate([gpu, [flush_ms]])
    start, end = issue_queue(host_all, gpu_all, np.float64(cost.launch_latency_us / US_PER_MS))
    read_bytes = np.asarray(dram_read_bytes, np.int64)
    write_bytes = np.asarray(dram_write_bytes, np.int64)

    def build() -> pd.DataFrame:
        table = ops.copy()
        table["op"] = table["op"].astype(str)
        table["dram_read_bytes"] = read_bytes
        table["dram_write_bytes"] = write_bytes
        table = table.assign(compute_ms=compute, dram_ms=dram, onchip_ms=onchip, launch_ms=launch, gpu_ms=gpu,
                             bound=bound, host_ms=host)
        flush = pd.DataFrame({"op": [FLUSH], "dram_read_bytes": [0], "dram_write_bytes": [int(flush_bytes)],
                              "compute_ms": [0.0], "dram_ms": [flush_ms], "onchip_ms": [0.0], "launch_ms": [0.0],
                              "gpu_ms": [flush_ms], "bound": ["dram"], "host_ms": [0.0]},
                             index=pd.Index([-1], name=ops.index.name))
        table = pd.concat([table, flush])
        previous = np.concatenate([[0.0], end[:-1]])
        table["start_ms"] = start
        table["end_ms"] = end
        table["exposed_ms"] = end - previous
        table["wait_ms"] = start - previous
        return table

    return StepTime(None, execution, build=build, totals=step_totals(end, gpu_all, host_all, bound))


@kernel
def sum_by_op(position, read_bytes, write_bytes, n_ops):
    """Per-access bytes summed by op: (read, write) int64 arrays of ``n_ops + 1``, the last slot for the accesses
    outside any op. ``position``: each access's op (int32 row of ``op_table``, -1 outside any op)."""
    read = np.zeros(n_ops + 1, np.int64)
    write = np.zeros(n_ops + 1, np.int64)
    for i in range(position.shape[0]):
        p = position[i]
        if p < 0:
            p = n_ops
        read[p] += read_bytes[i]
        write[p] += write_bytes[i]
    return read, write


def bytes_by_op(ops: pd.DataFrame, position: np.ndarray, read_bytes: np.ndarray, write_bytes: np.ndarray,
                outside: int = 0) -> tuple:
    """Per-access DRAM bytes summed by op: (``ops``, read bytes per op, write bytes per op, bytes outside any op),
    the arrays int64, one per row of ``ops`` (``lab.trace.ops.op_table``). ``position``: each access's row of
    ``ops`` (``lab.trace.ops.op_positions``; -1 outside any op: its bytes join ``outside``, the ``flush``
    pseudo-op's)."""
    n = len(ops)
    read, write = sum_by_op(kernel_array(position, np.int32), kernel_array(read_bytes, np.int64),
                            kernel_array(write_bytes, np.int64), np.int64(n))
    return ops, read[:n], write[:n], int(read[n] + write[n]) + int(outside)


def priced(op_bytes: tuple, cost) -> tuple:
    """(``StepTime``, "") of ``op_bytes`` (``bytes_by_op``) under ``cost`` in eager execution, or (``UNTIMED``,
    a sentence saying why) when ``cost`` lacks the numbers or a dtype's peak: what a simulation reports, never
    raising."""
    ops, read, write, outside = op_bytes
    try:
        return step_times(ops, read, write, outside, cost), ""
    except ValueError as error:
        return UNTIMED, f"No step time: {error}."


def step_time(result, trace=None, execution: str = "eager", cost=None) -> float:
    """The modelled step time in ms of ``result`` (``lab.simulate`` of a trace that records its ops, as captures
    do: an ``op_index`` column) under its cost preset (or ``cost``: a ``CostModel`` or preset name), in
    ``execution`` ``"eager"`` (the host issues each op: a queue) or ``"graph"`` (no host cost). See the module for
    the model; ``lab.time_breakdown`` splits it by phase, layer, module or op.

    ``trace``: the simulated trace, to check it records its ops (optional). Raises a one-line ValueError when the
    preset lacks the physical numbers (the seed's), when the trace has no ``op_index`` column, or for an unknown
    ``execution``."""
    return step_time_of(result, trace, execution, cost).step_time_ms


def step_time_of(result, trace=None, execution: str = "eager", cost=None) -> StepTime:
    """The ``StepTime`` of ``result`` (see ``step_time``)."""
    execution = check_execution(execution)
    cost = result.cost if cost is None else resolve_cost(cost)
    why = missing_numbers(cost)
    if why:
        raise ValueError(f"no step time: {why}")
    if trace is not None and not (isinstance(trace, pd.DataFrame) and "op_index" in trace.columns):
        raise ValueError("no step time: the trace has no 'op_index' column (generated traces do not record their ops; "
                         "capture a model with lab.capture_model to get one)")
    op_bytes: Optional[tuple] = getattr(result, "op_bytes", None)
    if op_bytes is None:
        raise ValueError("no step time: the simulated trace had no 'op_index' column (generated traces do not record "
                         "their ops; capture a model with lab.capture_model to get one)")
    ops, read, write, flush = op_bytes
    return step_times(ops, read, write, flush, cost, execution)
