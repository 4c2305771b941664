"""The work of a study, as plain functions a Dask worker (or this process) runs: make a workload's trace
once, then run each task (a policy under a buffer model over the capacities, or the optimum) on it.

Neither function raises for a failing cell: each returns a ``Failed`` record with the error, so that one
bad cell never stops the others.
"""

from __future__ import annotations

import platform
import traceback
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.study.dataset import arrow_table
from lab.study.spec import StudyWorkload, Task
from lab.units import BYTES_PER_MB


@dataclass(frozen=True)
class Failed:
    """A trace or task that raised: what failed, the exception's type and message, and its traceback."""

    stage: str  # "trace" or "task"
    error: str
    traceback: str


def versions(source: str) -> dict:
    """The versions that produced a row: lab, Python, numpy, pandas; torch and transformers for captures."""
    from lab.version import __version__

    out = {"lab_version": __version__, "python_version": platform.python_version(),
           "numpy_version": np.__version__, "pandas_version": pd.__version__, "torch_version": "",
           "transformers_version": ""}
    if source == "preset":
        import torch
        import transformers

        out["torch_version"], out["transformers_version"] = torch.__version__, transformers.__version__
    return out


def make_trace(workload: StudyWorkload):
    """The trace of ``workload``: a capture (``lab.capture_model``, through its on-disk cache) or a generated
    trace (``lab.generate_trace``); a ``Failed`` record if that raises."""
    try:
        model = workload.model
        if model.source == "preset":
            from lab.workloads.models import capture_model

            return capture_model(model.name, workload.batch_size, workload.seq_length, dtype=workload.dtype,
                                 training=workload.phase == "training", weight_dtype=workload.weight_dtype,
                                 seed=workload.seed, num_layers=model.num_layers, **dict(model.options))
        from lab.workloads.generator import generate_trace

        return generate_trace(model.name, model.num_layers, workload.batch_size, workload.seq_length,
                              model.reuse_probability, workload.seed, **dict(model.options))
    except Exception as error:  # noqa: BLE001 - recorded per cell, never stops the study
        return Failed("trace", f"{type(error).__name__}: {error}", traceback.format_exc())


def _rows(task: Task, trace) -> tuple[list[dict], float]:
    """(one dict per cell: policy, capacity_mb, the metrics, algorithm; the working set in MB): the sweep's
    rows (``lab.analysis.sweep``: the one evaluation of contenders) of the task's cells."""
    from lab.analysis.contenders import AUTO_OPTIMUM_ACCESSES, auto_skips_optimum, is_optimum
    from lab.analysis.sweep import evaluate_contenders, sweep_capacity, with_scores
    from lab.bounds.capacities import working_set_mb
    from lab.trace.workload import encode_trace

    policies = [p for p in task.policies if not is_optimum(p)]
    scored = with_scores(trace, policies) if policies else trace  # the ML policy's scores
    workload = encode_trace(scored)
    working_set = working_set_mb(workload)
    if task.buffer == "cache":  # every policy at one capacity: the line trace is built once and shared
        rows = {}
        for capacity in task.capacities_mb:
            here = [p for p, c in task.cells if c == capacity]
            table = sweep_capacity(workload, here, [capacity], task.cost, threads=1, optimum=False,
                                   method="simulation", buffer="cache")
            rows.update({(row["policy"], capacity): row for row in table.to_dict(orient="records")})
        return [rows[cell] for cell in task.cells], working_set
    (policy,) = task.policies  # the scratchpad: one policy over the capacities
    capacities = list(task.capacities_mb)
    if is_optimum(policy):
        if auto_skips_optimum(task.optimum, workload.n_accesses):
            reason = f"skipped: {workload.n_accesses:,} accesses > {AUTO_OPTIMUM_ACCESSES:,} (optimum: auto)"
            return [{"policy": policy, "capacity_mb": c, "algorithm": reason} for c in capacities], working_set
        # one cell, one row: the optimum's best schedule (exact, or the achievable end of its bracket, whose
        # lower end is opt_lower_mb)
        optima = evaluate_contenders(workload, [], capacities, task.cost, optimum=True).optima
        return [{**optima[float(c)].table_rows()[-1], "policy": policy, "capacity_mb": c}
                for c in capacities], working_set
    table = sweep_capacity(workload, [policy], capacities, task.cost, threads=1, optimum=False, method="auto",
                           buffer="scratchpad")
    return table.to_dict(orient="records"), working_set


def run_task(trace, task: Task):
    """The result rows of ``task`` on ``trace`` (a pyarrow Table, see ``lab.study.dataset.arrow_table``: every
    grid coordinate, ``cell_id``, the metrics, ``algorithm``, ``working_set_mb``, ``trace_accesses`` and the
    versions), or a ``Failed`` record when the trace failed or the task raised."""
    if isinstance(trace, Failed):
        return trace
    try:
        rows, working_set = _rows(task, trace)
        context = {"working_set_mb": working_set, "trace_accesses": len(trace),
                   **versions(task.workload.model.source)}
        frame = pd.DataFrame([{**task.coordinates(row.pop("policy"), row["capacity_mb"]), **row, **context}
                              for row in rows])
        return arrow_table(frame)  # made here, on the worker: the client only writes it
    except Exception as error:  # noqa: BLE001 - recorded per cell, never stops the study
        return Failed("task", f"{type(error).__name__}: {error}", traceback.format_exc())


OPTIMUM_WEIGHT = 100  # the optimum's flow costs ~100x a policy's simulation per access (only an ordering)


def task_costs(trace, tasks) -> list[int]:
    """The relative cost of each of ``tasks`` on ``trace``, in accesses simulated: line accesses under the
    hardware cache (the GEMM re-reads of each capacity included), trace accesses on the scratchpad, each
    times the task's policies (the optimum weighted by ``OPTIMUM_WEIGHT``). Only an ordering: the runner
    starts the costliest tasks first, so that none of them is left for the end while other workers idle.
    Zeros when the trace failed (its tasks only record the failure)."""
    if isinstance(trace, Failed):
        return [0] * len(tasks)
    try:
        from lab.analysis.contenders import auto_skips_optimum, is_optimum
        from lab.sim import hardware

        model = hardware.CacheModel()
        # + 1 line: a tensor's byte range rarely starts on a line boundary
        lines = trace["size_mb"].to_numpy(np.float64) * BYTES_PER_MB // model.line_bytes + 1
        out = []
        for task in tasks:
            if task.buffer != "cache":
                skipped = auto_skips_optimum(task.optimum, len(trace))  # OPT: a row saying so
                weight = 0 if skipped else OPTIMUM_WEIGHT
                out.append(int(len(trace) * sum(weight if is_optimum(p) else 1 for p, _ in task.cells)))
                continue
            per_capacity = {c: float(lines @ (1 + hardware.gemm_rereads(
                trace, int(c * BYTES_PER_MB * model.effective_fraction), model))) for c in task.capacities_mb}
            out.append(int(sum(per_capacity[c] for _, c in task.cells)))
        return out
    except Exception:  # noqa: BLE001 - a trace the tasks will reject: they record why; no order needed
        return [0] * len(tasks)


def failure_record(task: Task, failed: Failed) -> dict:
    """The JSON record of a failed task: its coordinates, cells, the error and its traceback."""
    return {"task": task.key, **task.workload.coordinates(), "buffer": task.buffer,
            "policy": ", ".join(task.policies), "capacities_mb": list(task.capacities_mb),
            "cells": [task.cell_id(p, c) for p, c in task.cells], "stage": failed.stage, "error": failed.error,
            "traceback": failed.traceback}
