"""How long the explorer takes to update after a control changes, for the default workload.

Drives ``lab.Explorer`` headlessly (nothing drawn into a browser) and prints
the median and slowest update over changes of capacity, policy set and seed:
the tables and the headline, recomputed on every change (the workload, its
scores and the optimum are kept while their inputs stay). The figures are
drawn for the open tab only, when it opens or after an update; the second
line times building each of them (the heatmap, the occupancy timeline, the
eviction scatter) for the last update. Target: well under a second.
Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_explorer.py``.
"""

from __future__ import annotations

import statistics
import time

from lab.ui import plots
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
          f"{explorer.shown_result.workload.n_accesses} accesses): median {1e3 * statistics.median(times):.0f} ms, "
          f"slowest {1e3 * max(times):.0f} ms over {len(times)} changes")
    figures = {}
    for name, build in (("heatmap", lambda: plots.occupancy_heatmap(explorer.shown_result)),
                        ("timeline", lambda: plots.occupancy_timeline(explorer.shown_result)),
                        ("eviction scatter", lambda: plots.eviction_scatter(explorer.trace.assign(
                            eviction_score=explorer.shown_result.workload.trace["eviction_score"]),
                            explorer.ranking))):
        build()  # imports and first-use caches
        start = time.perf_counter()
        build()
        figures[name] = time.perf_counter() - start
    print("figures of the open tab, built on opening: " + ", ".join(f"{name} {1e3 * s:.0f} ms"
                                                                     for name, s in figures.items()))


if __name__ == "__main__":
    main()
