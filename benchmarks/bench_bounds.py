"""Speed of the optimum's bounds and of one-pass miss-ratio curves, against libCacheSim in the same run.

1. The exact LRU curve over every capacity of a 2,000,000-access trace (one
   pass, byte stack distances) against libCacheSim's LRU at one capacity.
2. The optimum's bracket on captured models (the five of issue 22 and other
   families captured the same way) at 16, 64 and 256 MB: lower and upper
   end, width (%), seconds, exact or not, and the byte-granular bound beside
   it; the verdict on "at most 1 % wide, each bound within 30 s".
3. LRU, Belady and the optimum side by side on a GPT-2 training step.
4. The largest Zipf trace whose flow bound is solved within ``--budget-s``
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


CAPTURES = {  # name: lab.capture_model arguments
    "GPT-2 training step, b1 s512": dict(name="gpt2", batch_size=1, seq_length=512, training=True),
    "Llama-2-7B forward, b1 s2048": dict(name="llama-2-7b", batch_size=1, seq_length=2048),
    "BERT-base forward, b8 s512": dict(name="bert-base", batch_size=8, seq_length=512),
    "ResNet-50 forward, b32": dict(name="resnet-50", batch_size=32),
    "Mixtral-8x7B forward, b1 s512": dict(name="mixtral-8x7b", batch_size=1, seq_length=512),
    # other families, captured the same way
    "GPT-2 forward, b8 s1024": dict(name="gpt2", batch_size=8, seq_length=1024),
    "ViT-base forward, b32": dict(name="vit-base", batch_size=32),
    "MLP forward, b32 s128": dict(name="mlp", batch_size=32, seq_length=128),
    "BERT-base training step, b8 s256": dict(name="bert-base", batch_size=8, seq_length=256, training=True),
    "Llama-2-70B forward, b1 s512": dict(name="llama-2-70b", batch_size=1, seq_length=512),
}
CAPACITIES_MB = (16.0, 64.0, 256.0)
WIDTH_TARGET_PCT = 1.0
SECONDS_TARGET = 30.0


def bracket_table(time_limit_s: float, names=None) -> pd.DataFrame:
    """The optimum on each capture at each capacity: one row each, printed as it comes."""
    lab.optimal(pd.DataFrame({"tensor_id": [1, 2, 1], "size_mb": 1.0}), 1.0)  # compile outside the timing
    rows = []
    print(f"The optimum's bracket (lab.optimal, time limit {time_limit_s:g} s; DRAM traffic, MB read + written):")
    print(f"{'capture':34} {'MB':>5} {'accesses':>8} {'lower':>11} {'upper':>11} {'width %':>8} {'s':>6} "
          f"{'exact':>5} {'byte-gran.':>11}")
    for name, kwargs in CAPTURES.items():
        if names and name not in names:
            continue
        workload = lab.encode_trace(lab.capture_model(**kwargs))
        for capacity in CAPACITIES_MB:
            seconds, result = timed(lambda: lab.optimal(workload, capacity, time_limit_s=time_limit_s,
                                                        progress=False))
            rows.append({"capture": name, "capacity_mb": capacity, "accesses": workload.n_accesses,
                         "lower_mb": result.lower_mb, "upper_mb": result.upper_mb, "width_pct": result.gap_pct,
                         "seconds": seconds, "exact": result.exact, "byte_granular_mb": result.byte_granular_mb})
            print(f"{name:34} {capacity:5g} {workload.n_accesses:8,} {result.lower_mb:11,.1f} "
                  f"{result.upper_mb:11,.1f} {result.gap_pct:8.3f} {seconds:6.1f} {'yes' if result.exact else 'no':>5} "
                  f"{result.byte_granular_mb:11,.1f}", flush=True)
    table = pd.DataFrame(rows)
    widest, slowest = table["width_pct"].max(), table["seconds"].max()
    print(f"widest bracket {widest:.3f} % (target at most {WIDTH_TARGET_PCT:g} %), slowest {slowest:.1f} s (target "
          f"at most {SECONDS_TARGET:g} s), exact in {int(table['exact'].sum())} of {len(table)}: "
          f"{'MET' if widest <= WIDTH_TARGET_PCT and slowest <= SECONDS_TARGET else 'NOT MET'}")
    return table


def policies_beside_the_optimum() -> None:
    workload = lab.encode_trace(lab.capture_model(**CAPTURES["GPT-2 training step, b1 s512"]))
    rows = []
    for capacity in CAPACITIES_MB:
        opt = lab.optimal(workload, capacity, progress=False)
        rows.append({"capacity_mb": capacity,
                     "LRU_mb": lab.simulate(workload, "LRU", capacity, per_access=False).metrics["dram_traffic_mb"],
                     "Belady_mb": lab.simulate(workload, "Belady", capacity, per_access=False).metrics[
                         "dram_traffic_mb"],
                     "OPT_lower_mb": opt.lower_mb, "OPT_achievable_mb": opt.upper_mb,
                     "byte_granular_mb": opt.byte_granular_mb})
    print("GPT-2 training step, b1 s512, DRAM traffic (MB read + written):")
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
    parser.add_argument("--time-limit-s", type=float, default=SECONDS_TARGET - 2.0,
                        help="the integer program's time limit per bound (s)")
    parser.add_argument("--only-brackets", action="store_true", help="print the bracket table only")
    args = parser.parse_args()
    if not args.only_brackets:
        lru_curve_against_libcachesim(args.accesses, args.tensors, args.points)
    bracket_table(args.time_limit_s)
    if not args.only_brackets:
        policies_beside_the_optimum()
        largest_in_budget(args.budget_s, args.start)


if __name__ == "__main__":
    main()
