"""Speedup of a study on Dask with 1, 2 and all cores (lab.run_study on a LocalCluster).

A 64-cell grid (2 synthetic families x 2 batch sizes x 4 policies x 4 capacities, the hardware-cache buffer
model: 16 tasks of 4 cells) runs on a LocalCluster of 1, 2 and ``os.cpu_count()`` worker processes (one
thread each). Each cluster is started and warmed first (a small study loads lab and its compiled kernels in
every worker), so "run" is the study itself; "with start" adds the cluster's start. Speedup = run on 1
worker / run on N. Target: at least 1.7x on 2 workers (on a machine whose 2 cores are otherwise idle: other
processes on the cores show as a lower speedup). The serial run (this process, no Dask) is the reference.
Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_study.py [--workers 1 2 4]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import lab

GRID = {
    "name": "bench",
    "models": [{"synthetic": "Transformer", "num_layers": 12}, {"synthetic": "MoE", "num_layers": 8}],
    "batch_sizes": [4, 8],
    "seq_lengths": [256],
    "policies": ["LRU", "S3-FIFO", "ARC", "GDSF"],
    "capacities_mb": [8, 32, 128, 512],
    "buffers": ["cache"],
    "optimum": False,
}
WARM = {**GRID, "name": "warm", "batch_sizes": [1], "seq_lengths": [16], "capacities_mb": [8]}
TARGET = 1.7


def _timed(**where) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = lab.run_study(GRID, out, progress=False, verbose=False, **where)
        seconds = time.perf_counter() - start
    assert summary.done == 64 and summary.failed == 0, summary
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, 2, os.cpu_count() or 1}))
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    assert lab.study.load_study_spec(GRID).n_cells == 64
    with tempfile.TemporaryDirectory() as out:  # this process's kernels, then the serial reference
        lab.run_study(WARM, out, serial=True, progress=False, verbose=False)
    serial = _timed(serial=True)
    print(f"64-cell study (16 tasks), {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'workers':>8} {'run (s)':>9} {'with start (s)':>15} {'speedup':>8}")
    print(f"{'serial':>8} {serial:9.2f} {'':>15} {'':>8}")
    runs = {}
    for n in args.workers:
        start = time.perf_counter()
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=50) as cluster, Client(cluster) as client:
            with tempfile.TemporaryDirectory() as out:
                lab.run_study(WARM, out, client=client, progress=False, verbose=False)
            client.run(lambda: __import__("lab.study") and None)
            started = time.perf_counter() - start
            runs[n] = _timed(client=client)
        base = runs.get(1)
        speedup = f"{base / runs[n]:7.2f}x" if base else ""
        print(f"{n:>8} {runs[n]:9.2f} {runs[n] + started:15.2f} {speedup:>8}", flush=True)
    if 1 in runs and 2 in runs:
        speedup = runs[1] / runs[2]
        verdict = "meets" if speedup >= TARGET else "misses"
        print(f"2 workers over 1: {speedup:.2f}x ({verdict} the {TARGET}x target); load average "
              f"{os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
