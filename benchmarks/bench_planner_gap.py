"""How far ``lab.plan`` is from the optimum of its own model (issue 26, slice 6): ``lab.planning.exact``.

1. 20 seeded small traces (``gap_case(0..19)``: 4-6 ops, 4-11 intervals) under the H200 preset and under an H200
   whose L2 is very fast (``onchip_bandwidth_gb_s=1e7``: ops compute- or DRAM-bound, so prefetching matters):
   the gap against ``exhaustive_plan`` where the decision vectors enumerate (the exact gap) and against
   ``plan_optimum``'s integer-program bound on every trace (an upper bound on the gap).
2. The tiny captured MLP (``capture_model("mlp", batch_size=1, seq_length=64, num_hidden_layers=2)``, 27 rows) at
   8, 32 and 128 MB, against the integer program (19 intervals: too many to enumerate).
Prints the median and maximum gap (%), the number of traces, the command and the date.
Run: ``.venv/bin/python benchmarks/bench_planner_gap.py [--seeds 20] [--time-limit-s 30]``.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

import lab
from lab.planning.exact import planner_gap, planner_gaps
from lab.sim.cost import resolve_cost


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _summary(name: str, gaps: pd.Series) -> str:
    return (f"{name}: median {gaps.median():.2f} %, mean {gaps.mean():.2f} %, max {gaps.max():.2f} % over "
            f"{len(gaps)} traces ({int((gaps > 0.01).sum())} above 0.01 %)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeded traces gap_case(0..seeds-1)")
    parser.add_argument("--time-limit-s", type=float, default=30.0, help="the integer program's limit per trace")
    args = parser.parse_args(argv)
    print(f"$ {' '.join([Path(sys.executable).name] + sys.argv)}")
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, lab {lab.__version__}, commit "
          f"{_commit()}")
    fast = replace(resolve_cost("H200"), name="H200, fast L2", onchip_bandwidth_gb_s=1e7)
    for cost in (resolve_cost("H200"), fast):
        start = time.perf_counter()
        milp = planner_gaps(range(args.seeds), cost, method="milp", time_limit_s=args.time_limit_s)
        milp_s = time.perf_counter() - start
        start = time.perf_counter()
        auto = planner_gaps(range(args.seeds), cost, method="auto", time_limit_s=args.time_limit_s)
        auto_s = time.perf_counter() - start
        table = milp.rename(columns={"gap_pct": "milp_gap_pct", "optimum_ms": "milp_bound_ms"}).drop(columns="method")
        exact = auto[auto["method"] == "exhaustive"].set_index("seed")
        table["exhaustive_ms"] = table["seed"].map(exact["optimum_ms"])
        table["exact_gap_pct"] = table["seed"].map(exact["gap_pct"])
        print(f"\n## {cost.name}: lab.plan against its model's optimum (integer program {milp_s:.1f} s, "
              f"exhaustive where it enumerates {auto_s:.1f} s)")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
        print(_summary("gap to the integer program's bound (an upper bound on the gap)", table["milp_gap_pct"]))
        print(_summary("exact gap (exhaustive)", table["exact_gap_pct"].dropna()))
    trace = lab.capture_model("mlp", batch_size=1, seq_length=64, num_hidden_layers=2)
    print(f"\n## the captured MLP ({len(trace)} rows, {trace['op_index'].nunique()} ops)")
    for cost in (resolve_cost("H200"), fast):
        for capacity_mb in (8.0, 32.0, 128.0):
            start = time.perf_counter()
            gap = planner_gap(trace, capacity_mb, cost, method="milp", time_limit_s=args.time_limit_s)
            print(f"{cost.name}, {capacity_mb:g} MB: plan {gap.planner_ms:.6g} ms, bound {gap.optimum_ms:.6g} ms, "
                  f"gap {gap.gap_pct:.3f} % ({gap.intervals} intervals, {time.perf_counter() - start:.2f} s)")


if __name__ == "__main__":
    main()
