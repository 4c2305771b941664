"""Predicted against measured DRAM traffic and step time of five real model steps on an NVIDIA H200 (60 MB L2).

For each case of ``ground_truth/h200`` (per-kernel Nsight Compute CSVs, README
there): the measured DRAM read and write MiB, lab's prediction under the
``H200`` preset with ``buffer="scratchpad"`` (LRU, liveness-aware whole
tensors) and ``buffer="cache"`` (the hardware-cache model of
``lab.sim.hardware``, FIFO replacement), and the ratios predicted / measured.
Then, per case, the kernels the GPU launched against the ops the capture
recorded (``op_index``) and the kernels those ops launch (``launches``), the
capture's TFLOP and the measured step time; and per kernel category (``kernel_categories``) the measured
against the cache model's DRAM writes. Captures are cached
(``lab.capture_model``); a cold run captures five models.
Run: ``.venv/bin/python benchmarks/bench_fidelity.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from lab.analysis.fidelity import (H200_POLICY, category_traffic, fidelity_table,  # noqa: E402
                                   h200_case, measured_steps, measured_totals)
from lab.sim.cost import resolve_cost  # noqa: E402
from lab.sim.simulate import simulate  # noqa: E402
from lab.workloads.models import capture_model  # noqa: E402


def ops_table(directory, traces: dict) -> pd.DataFrame:
    """Per case: measured kernels and step ms beside the capture's ops, their launches and TFLOP."""
    totals = measured_totals(directory).set_index("case")
    steps = measured_steps(directory).set_index("case")
    rows = []
    for case, trace in traces.items():
        ops = trace[trace["op_index"] >= 0].groupby("op_index", sort=False).first()
        rows.append({"case": case, "kernels": int(totals.loc[case, "kernels"]), "capture_ops": len(ops),
                     "ops_ratio": len(ops) / totals.loc[case, "kernels"], "launches": int(ops["launches"].sum()),
                     "launches_ratio": ops["launches"].sum() / totals.loc[case, "kernels"],
                     "host_calls": int(ops["host_calls"].sum()), "tflop": ops["flops"].sum() / 1e12,
                     "step_ms": steps.loc[case, "step_ms"] if case in steps.index else float("nan")})
    return pd.DataFrame(rows)


def categories_table(directory, traces: dict) -> pd.DataFrame:
    """Per case and kernel category: measured kernels and the capture's launches, measured and predicted DRAM
    MiB under buffer="cache" (H200 preset)."""
    cost = resolve_cost("H200")
    frames = []
    for case, trace in traces.items():
        result = simulate(trace, H200_POLICY, cost.buffer_mb, cost=cost, buffer="cache", per_access=False)
        frames.append(category_traffic(Path(directory) / f"{case}.csv", result).assign(case=case))
    table = pd.concat(frames, ignore_index=True)
    return table[["case"] + [c for c in table.columns if c != "case"]]


def main():
    start = time.perf_counter()
    directory = ROOT / "ground_truth" / "h200"
    traces = {case: capture_model(**h200_case(case)) for case in measured_totals(directory)["case"]}
    table = fidelity_table(directory, traces=traces)
    cols = ["case", "buffer", "measured_read_mb", "read_mb", "read_ratio", "measured_write_mb", "write_mb",
            "write_ratio", "measured_total_mb", "total_mb", "total_ratio"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:,.2f}" if v < 10 else f"{v:,.0f}"))
    for buffer, rows in table.groupby("buffer", sort=False):
        worst = rows["total_ratio"].map(lambda r: max(r, 1 / r)).max()
        print(f"{buffer}: worst total ratio {worst:.2f}x")
    print()
    print("step time (ms): measured (eager PyTorch, one step) against lab.sim.timing, eager and graph execution")
    times = ["case", "buffer", "measured_step_ms", "step_ms", "step_ratio", "graph_step_ms"]
    print(table[times].to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    for buffer, rows in table.groupby("buffer", sort=False):
        worst = rows["step_ratio"].map(lambda r: max(r, 1 / r)).max()
        print(f"{buffer}: worst step ratio {worst:.2f}x")
    print()
    print(ops_table(directory, traces).to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    print()
    print(categories_table(directory, traces).to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
