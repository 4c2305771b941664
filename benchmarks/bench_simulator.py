"""Throughput of lab.simulate against libCacheSim on the same 2,000,000-access Zipf trace, in the same run.

Prints accesses/s of each and the ratio per policy, checks that both count the
same misses, and times a first lab.simulate in a fresh process (numba cache
warm). Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_simulator.py``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libcachesim as lcs
import numpy as np
import pandas as pd

import lab

LIBCACHESIM = {"LRU": lcs.LRU, "FIFO": lcs.FIFO, "Belady": lcs.Belady}


def zipf_trace(n_accesses: int, n_tensors: int, alpha: float, seed: int) -> pd.DataFrame:
    """Unit-size (1 MB) trace whose tensor popularity follows Zipf(alpha) over ``n_tensors`` ids."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_tensors + 1) ** alpha
    ranks = rng.choice(n_tensors, size=n_accesses, p=weights / weights.sum())
    tensor_id = rng.permutation(n_tensors)[ranks]  # popular ids scattered over the id space
    return pd.DataFrame({"tensor_id": tensor_id, "size_mb": 1.0, "eviction_score": rng.random(n_accesses)})


def best_time(fn, repeats: int):
    """Fastest of ``repeats`` runs (seconds) and the last result: the least disturbed by other load."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def fresh_process_seconds() -> float:
    code = (
        "import time; t = time.perf_counter()\n"
        "import pandas as pd, lab\n"
        "lab.simulate(pd.DataFrame({'tensor_id': ['a', 'b', 'a'], 'size_mb': [1.0, 2.0, 1.0]}), 'LRU', 2.0)\n"
        "print(time.perf_counter() - t)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # make sure the cache is warm
    start = time.perf_counter()
    inner = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    return inner, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", type=int, default=2_000_000)
    parser.add_argument("--tensors", type=int, default=200_000)
    parser.add_argument("--alpha", type=float, default=1.0, help="Zipf exponent")
    parser.add_argument("--capacity-fraction", type=float, default=0.1, help="buffer size / unique tensors")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    trace = zipf_trace(args.accesses, args.tensors, args.alpha, args.seed)
    capacity = int(args.tensors * args.capacity_fraction)  # in tensors = MB, each tensor 1 MB
    lab.simulate(trace.head(1000), "LRU", 1.0)  # load the compiled kernels once
    print(f"trace: {args.accesses:,} accesses, {args.tensors:,} tensors, Zipf alpha={args.alpha}, unit sizes; "
          f"buffer {capacity:,} tensors; best of {args.repeats} runs each")
    print(f"{'policy':8} {'lab acc/s':>14} {'libCacheSim acc/s':>18} {'ratio':>7} {'misses lab':>11} {'misses lcs':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        path = lab.write_trace(trace, Path(tmp) / "zipf.oracleGeneral.bin")
        for policy in ["LRU", "FIFO", "Belady", "ML"]:
            lab_s, result = best_time(lambda: lab.simulate(trace, policy, capacity_mb=capacity), args.repeats)
            lab_rate = args.accesses / lab_s
            if policy not in LIBCACHESIM:
                print(f"{policy:8} {lab_rate:14,.0f} {'(none)':>18} {'':>7} {result.metrics['dram_accesses']:11,}")
                continue

            def run_libcachesim():
                reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE, lcs.ReaderInitParam())
                return LIBCACHESIM[policy](capacity * lab.units.BYTES_PER_MB).process_trace(reader)

            lcs_s, (miss_ratio, _) = best_time(run_libcachesim, args.repeats)
            lcs_misses = round(miss_ratio * args.accesses)
            lab_misses = result.metrics["dram_accesses"]
            flag = "" if lcs_misses == lab_misses else "  MISMATCH"
            print(f"{policy:8} {lab_rate:14,.0f} {args.accesses / lcs_s:18,.0f} {lcs_s / lab_s:6.1f}x "
                  f"{lab_misses:11,} {lcs_misses:11,}{flag}")
    inner, outer = fresh_process_seconds()
    print(f"first lab.simulate in a fresh process: {inner:.2f} s including imports ({outer:.2f} s with interpreter start)")


if __name__ == "__main__":
    main()
