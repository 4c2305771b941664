"""How long the explorer takes to update after a control changes, for the default workload.

Drives ``lab.Explorer`` headlessly (no drawing into a browser, but
every table and figure computed) and prints the median and slowest update
over changes of capacity, policy set and seed. Target: well under a second.
Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_explorer.py``.
"""

from __future__ import annotations

import statistics

from lab.ui.widgets import Explorer


def main() -> None:
    explorer = Explorer(debounce_s=0)
    times = []
    for i in range(30):
        if i % 3 == 0:
            explorer.capacity_mb.value = 16.0 * (1 + i % 7)
        elif i % 3 == 1:
            explorer.policies.value = ("LRU", "Belady") if i % 2 else ("LRU", "FIFO", "ML", "Belady")
        else:
            explorer.seed.value = i
        times.append(explorer.last_update_s)
    print(f"explorer update, default workload ({len(explorer.ranking)} ranked tensors, "
          f"{int(explorer.metrics['cache_hits'].iloc[0] + explorer.metrics['dram_accesses'].iloc[0])} accesses): "
          f"median {1e3 * statistics.median(times):.0f} ms, slowest {1e3 * max(times):.0f} ms over {len(times)} changes")


if __name__ == "__main__":
    main()
