"""Who causes the DRAM traffic: a simulation's reads and writes attributed to a column of the trace."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lab.sim.simulate import SimulationResult
from lab.sim.timing import FLUSH, MEMORY_BOUNDS, step_time_of
from lab.trace.schema import TRACE_PHASES
from lab.units import BYTES_PER_MB


def dram_traffic_by(result: SimulationResult, trace: pd.DataFrame, by: str = "kind") -> pd.DataFrame:
    """DRAM traffic of ``result`` (a simulation of ``trace``) grouped by ``trace[by]`` (e.g. kind, phase, op).

    A read miss counts for the accessed tensor's group; a writeback for the
    evicted tensor's group (the group of its first access); a write too
    large for the buffer for the writing access's group. Returns one row per
    group: ``dram_read_mb``, ``dram_write_mb``, ``dram_mb`` (MB, MiB),
    ``share_pct`` of all DRAM traffic, and ``misses`` (read misses), sorted
    by ``dram_mb``, largest first.
    """
    if by not in trace.columns:
        raise ValueError(f"trace has no column {by!r} to group by; columns: {list(map(str, trace.columns))}")
    if len(trace) != result.hit.shape[0]:
        raise ValueError("trace and result differ in length: pass the trace that was simulated")
    enc = result.workload
    labels = trace[by].astype(str).to_numpy()
    tensor_label = np.empty(enc.n_tensors, dtype=object)
    tensor_label[enc.codes[::-1]] = labels[::-1]  # each tensor's label at its first access
    written_back = result.victim_written_back
    victim_bytes = enc.tensor_bytes[result.victim_code[written_back]]
    writeback_at = np.bincount(result.victim_access[written_back], weights=victim_bytes,
                               minlength=enc.n_accesses).astype(np.int64)
    streamed = result.write_bytes - writeback_at
    rows = [
        pd.DataFrame({"group": labels, "read": result.read_bytes, "write": streamed,
                      "misses": (~result.hit & ~result.is_write & ~result.is_persist).astype(np.int64)}),
        pd.DataFrame({"group": tensor_label[result.victim_code[written_back]], "read": 0, "write": victim_bytes,
                      "misses": 0}),
    ]
    table = pd.concat(rows).groupby("group", sort=False)[["read", "write", "misses"]].sum()
    out = pd.DataFrame({
        "dram_read_mb": table["read"] / BYTES_PER_MB,
        "dram_write_mb": table["write"] / BYTES_PER_MB,
    })
    out["dram_mb"] = out["dram_read_mb"] + out["dram_write_mb"]
    total = out["dram_mb"].sum()
    out["share_pct"] = 100 * out["dram_mb"] / total if total else 0.0
    out["misses"] = table["misses"]
    return out.rename_axis(by).sort_values("dram_mb", ascending=False)


def module_family(modules) -> pd.Series:
    """Module paths with each layer's index replaced by ``*`` (``transformer.h.3.attn.c_attn`` ->
    ``transformer.h.*.attn.c_attn``): the same module of every layer in one group. Empty paths (the optimizer,
    tensors outside modules) become ``(no module)``."""
    series = pd.Series(modules, dtype=object).astype(str)
    family = series.str.replace(r"(?<=\.)\d+(?=\.|$)", "*", regex=True)
    return family.where(family != "", "(no module)")


def dram_traffic_by_module_layer_phase(result: SimulationResult, trace: pd.DataFrame,
                                       top_modules: int = 12) -> dict:
    """DRAM traffic of ``result`` (a simulation of the captured ``trace``) three ways: {"phase": ..., "layer": ...,
    "module": ...}, each a ``dram_traffic_by`` table. Modules are grouped across layers (``module_family``); the
    ``top_modules`` largest are kept and the rest summed into ``(other)``. Layers are sorted by index (-1: outside
    the layers). A trace without a ``phase``, ``layer`` or ``module`` column leaves that entry out."""
    tables = {}
    if "phase" in trace.columns:
        by_phase = dram_traffic_by(result, trace, "phase")
        order = [p for p in TRACE_PHASES if p in by_phase.index]
        tables["phase"] = by_phase.loc[order + [p for p in by_phase.index if p not in order]]
    if "layer" in trace.columns:
        by_layer = dram_traffic_by(result, trace, "layer")
        by_layer.index = by_layer.index.astype(int)
        tables["layer"] = by_layer.sort_index()
    if "module" in trace.columns:
        families = trace.assign(module=module_family(trace["module"].to_numpy()))
        by_module = dram_traffic_by(result, families, "module")
        if len(by_module) > top_modules:
            head, rest = by_module.iloc[:top_modules], by_module.iloc[top_modules:]
            other = rest.sum().to_frame("(other)").T.rename_axis("module")
            by_module = pd.concat([head, other])
        tables["module"] = by_module
    return tables


TIME_GROUPS = ("phase", "layer", "module", "op")
NO_GROUP = "(flush)"  # the group of the pseudo-op of bytes outside any op


def time_breakdown(result: SimulationResult, trace: pd.DataFrame, by: str = "phase", execution: str = "eager",
                   cost=None) -> pd.DataFrame:
    """The step time of ``result`` (``lab.step_time``: a simulation of ``trace``, a trace that records its ops)
    split by ``by``: ``"phase"``, ``"layer"``, ``"module"`` (modules grouped across layers, ``module_family``) or
    ``"op"`` (one row per op, every term of ``lab.sim.timing``).

    One row per group, in order of first appearance (layers sorted): ``exposed_ms`` (the share of the step time
    its ops expose; the rows sum to ``step_time_ms``), ``gpu_ms`` (busy), ``wait_ms`` (the GPU waiting for the
    host), ``host_ms``, ``ops`` and ``memory_bound_ops``. Bytes outside any op (persist writebacks, a cache's
    final flush) form the group ``(flush)``. Times in ms. Raises ValueError as ``lab.step_time`` does, and for a
    ``by`` that is not one of these or a column the trace lacks."""
    if by not in TIME_GROUPS:
        raise ValueError(f"by must be one of {list(TIME_GROUPS)}, got {by!r}")
    times = step_time_of(result, trace, execution, cost)
    ops = times.ops
    if by == "op":
        return ops
    if by not in trace.columns:
        raise ValueError(f"trace has no column {by!r} to group the step time by; columns: "
                         f"{list(map(str, trace.columns))}")
    real = (ops["op"] != FLUSH).to_numpy()
    labels = ops[by].to_numpy(dtype=object).copy()
    if by == "module":
        labels[real] = module_family(labels[real]).to_numpy()
    labels[~real] = NO_GROUP
    frame = pd.DataFrame({by: labels, "exposed_ms": ops["exposed_ms"].to_numpy(), "gpu_ms": ops["gpu_ms"].to_numpy(),
                          "wait_ms": ops["wait_ms"].to_numpy(), "host_ms": ops["host_ms"].to_numpy(),
                          "ops": real.astype(np.int64),
                          "memory_bound_ops": (real & ops["bound"].isin(MEMORY_BOUNDS).to_numpy()).astype(np.int64)})
    table = frame.groupby(by, sort=False).sum()
    if by == "layer":
        flush = table.loc[[NO_GROUP]] if NO_GROUP in table.index else table.iloc[:0]
        layers = table.drop(index=NO_GROUP, errors="ignore")
        layers.index = layers.index.astype(int)
        table = pd.concat([layers.sort_index(), flush])
    return table
