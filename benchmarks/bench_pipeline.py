"""The seed's request cycle in-process, warm: generate + score + simulate + validate.

The seed quotes 30-50 ms for its example (Transformer, 12 layers, batch 32,
seq 128, reuse 0.3, LRU, 64 MB); our target is under 5 ms. The 100- and
1,000-layer versions show that cost grows linearly with the trace.

Two columns: "warm" is a repeated request, where the architecture graph (a
pure function of the model's parameters) comes from the generator's memo;
"graph rebuilt" clears that memo before every cycle, as a first request for
a new model would. Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_pipeline.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lab
from lab.workloads.generator import _architecture


def cycle(num_layers: int):
    trace = lab.generate_trace("Transformer", num_layers=num_layers, batch_size=32, seq_length=128,
                               reuse_probability=0.3, seed=0)
    scored = lab.score(trace)
    metrics = lab.simulate(scored, "LRU", capacity_mb=64.0).metrics
    validation = lab.validate(trace)
    return len(trace), metrics, validation


def timed(num_layers: int, repeats: int, rebuild_graph: bool):
    cycle(num_layers)  # warm: numba kernels loaded, scipy imported
    times = []
    for _ in range(repeats):
        if rebuild_graph:
            _architecture.cache_clear()
        start = time.perf_counter()
        accesses, _, _ = cycle(num_layers)
        times.append(time.perf_counter() - start)
    return accesses, statistics.median(times) * 1e3, min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print(f"{'layers':>7} {'accesses':>9} {'warm median ms':>15} {'(min)':>7} {'graph rebuilt median ms':>24} "
          f"{'(min)':>7} {'us/access':>10}")
    for layers, repeats in ((12, args.repeats), (100, max(5, args.repeats // 5)), (1000, max(3, args.repeats // 25))):
        accesses, warm, warm_min = timed(layers, repeats, rebuild_graph=False)
        _, cold, cold_min = timed(layers, repeats, rebuild_graph=True)
        print(f"{layers:7d} {accesses:9,d} {warm:15.2f} {warm_min:7.2f} {cold:24.2f} {cold_min:7.2f} "
              f"{1e3 * cold / accesses:10.2f}")
    print("target: the 12-layer cycle under 5 ms (the seed quotes 30-50 ms)")


if __name__ == "__main__":
    main()
