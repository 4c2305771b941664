"""Speed of the optimum's bounds and of one-pass miss-ratio curves, against libCacheSim in the same run.

1. The exact LRU curve over every capacity of a 2,000,000-access trace (one
   pass, byte stack distances) against libCacheSim's LRU at one capacity.
2. ``lab.optimal`` (min-cost flow) at one capacity on the Llama-2-7B forward
   capture and on a GPT-2 training-step capture, with LRU, Belady and the
   optimum's bracket side by side at 16, 64 and 256 MB for GPT-2.
3. The largest Zipf trace whose flow bound is solved within ``--budget-s``
   seconds (doubling the length).
Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_bounds.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import libcachesim as lcs
import numpy as np
import pandas as pd

import lab
from lab.units import BYTES_PER_MB

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_simulator import zipf_trace  # noqa: E402  (one trace generator for the benchmarks)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def lru_curve_against_libcachesim(accesses: int, tensors: int, points: int) -> None:
    trace = zipf_trace(accesses, tensors, 1.0, 0)
    workload = lab.encode_trace(trace)
    capacities = np.unique(np.geomspace(1, tensors, points).round())  # MB: each tensor is 1 MB
    lab.miss_ratio_curve(workload.trace.head(1000), "LRU", [1.0, 2.0])  # compile outside the timing
    curve_s, curve = timed(lambda: lab.miss_ratio_curve(workload, "LRU", capacities))
    middle = float(capacities[len(capacities) // 2])
    with tempfile.TemporaryDirectory() as tmp:
        path = lab.write_trace(trace, Path(tmp) / "t.oracleGeneral.bin")
        reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE)
        cache = lcs.LRU(int(middle * BYTES_PER_MB))
        lcs_s, (miss_ratio, _) = timed(lambda: cache.process_trace(reader))
    row = curve[curve["capacity_mb"] == middle].iloc[0]
    print(f"LRU curve, {accesses:,} accesses, {len(capacities)} capacities in one pass: {curve_s:.2f} s "
          f"({curve['algorithm'].iloc[0]}); libCacheSim LRU at one capacity ({middle:g} MB): {lcs_s:.2f} s; "
          f"ratio {lcs_s / curve_s:.1f}x; miss ratio there lab {row['miss_ratio']:.5f}, libCacheSim {miss_ratio:.5f}")


def captured_bounds() -> None:
    captures = {
        "llama-2-7b forward, batch 1, seq 2048": lab.capture_model("llama-2-7b", batch_size=1, seq_length=2048),
        "gpt2 training step, batch 8, seq 1024": lab.capture_model("gpt2", batch_size=8, seq_length=1024,
                                                                   training=True),
    }
    lab.optimal(pd.DataFrame({"tensor_id": [1, 2, 1], "size_mb": 1.0}), 1.0)  # compile outside the timing
    for name, trace in captures.items():
        workload = lab.encode_trace(trace)
        seconds, result = timed(lambda: lab.optimal(workload, 64.0))
        print(f"optimal at 64 MB, {name} ({workload.n_accesses:,} accesses): {seconds:.2f} s; "
              f"bracket {result.lower_mb:,.1f} .. {result.upper_mb:,.1f} MB (gap {result.gap_pct:.2f} %)")
    workload = lab.encode_trace(captures["gpt2 training step, batch 8, seq 1024"])
    rows = []
    for capacity in (16.0, 64.0, 256.0):
        opt = lab.optimal(workload, capacity)
        rows.append({"capacity_mb": capacity,
                     "LRU_mb": lab.simulate(workload, "LRU", capacity, per_access=False).metrics["dram_traffic_mb"],
                     "Belady_mb": lab.simulate(workload, "Belady", capacity, per_access=False).metrics[
                         "dram_traffic_mb"],
                     "OPT_lower_mb": opt.lower_mb, "OPT_upper_mb": opt.upper_mb})
    print("GPT-2 training step, DRAM traffic (MB read + written):")
    print(pd.DataFrame(rows).round(1).to_string(index=False))


def largest_in_budget(budget_s: float, start: int) -> None:
    n, largest = start, None
    while True:
        trace = zipf_trace(n, max(n // 10, 10), 1.0, 1)
        trace["size_mb"] = np.random.default_rng(n).integers(1, 64, len(trace)) / 16  # varied sizes
        trace["size_mb"] = trace.groupby("tensor_id")["size_mb"].transform("first")
        workload = lab.encode_trace(trace)
        capacity = lab.working_set_mb(workload) * 0.1
        seconds, _ = timed(lambda: lab.optimal(workload, capacity))
        print(f"  flow bound, {n:,} accesses: {seconds:.2f} s")
        if seconds > budget_s:
            break
        largest = (n, seconds)
        if seconds * 5 > budget_s:  # the flow grows faster than n**2 here: the next doubling would pass
            break
        n *= 2
    if largest:
        print(f"largest trace bounded within {budget_s:g} s: {largest[0]:,} accesses ({largest[1]:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", type=int, default=2_000_000)
    parser.add_argument("--tensors", type=int, default=200_000)
    parser.add_argument("--points", type=int, default=100, help="capacities on the LRU curve")
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--start", type=int, default=4_000, help="first trace length of the budget search")
    args = parser.parse_args()
    lru_curve_against_libcachesim(args.accesses, args.tensors, args.points)
    captured_bounds()
    largest_in_budget(args.budget_s, args.start)


if __name__ == "__main__":
    main()
