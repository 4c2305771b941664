"""Predicted against measured DRAM traffic of five real model steps on an NVIDIA H200 (60 MB L2).

For each case of ``ground_truth/h200`` (per-kernel Nsight Compute CSVs, README
there): the measured DRAM read and write MiB, lab's prediction under the
``H200`` preset with ``buffer="scratchpad"`` (LRU, liveness-aware whole
tensors) and ``buffer="cache"`` (the hardware-cache model of
``lab.sim.hardware``, FIFO replacement), and the ratios predicted / measured.
Captures are cached (``lab.capture_model``); a cold run captures five models.
Run: ``.venv/bin/python benchmarks/bench_fidelity.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.analysis.fidelity import fidelity_table  # noqa: E402


def main():
    start = time.perf_counter()
    table = fidelity_table(ROOT / "ground_truth" / "h200")
    cols = ["case", "buffer", "measured_read_mb", "read_mb", "read_ratio", "measured_write_mb", "write_mb",
            "write_ratio", "measured_total_mb", "total_mb", "total_ratio"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:,.2f}" if v < 10 else f"{v:,.0f}"))
    for buffer, rows in table.groupby("buffer", sort=False):
        worst = rows["total_ratio"].map(lambda r: max(r, 1 / r)).max()
        print(f"{buffer}: worst total ratio {worst:.2f}x")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
