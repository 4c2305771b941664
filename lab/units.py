"""Units used across the workbench.

MB means MiB everywhere: 1 MB = 2**20 bytes. Bandwidths follow vendor data
sheets and are decimal: 1 GB/s = 10**9 bytes per second.
"""

from __future__ import annotations

import numpy as np

BYTES_PER_MB = 2**20
BYTES_PER_GB_DECIMAL = 10**9
MS_PER_S = 1e3

# Largest size the simulator accepts for one tensor or buffer: keeps every
# byte count, and their sum over a long trace, far inside int64.
MAX_SIZE_MB = float(2**40)


def mb_to_bytes(size_mb: np.ndarray) -> np.ndarray:
    """Convert sizes in MB (MiB) to integer bytes, rounded to nearest, at least 1 byte.

    Takes a float array of sizes in MB; returns an int64 array of bytes.
    """
    size_bytes = np.rint(np.asarray(size_mb, dtype=np.float64) * BYTES_PER_MB).astype(np.int64)
    return np.maximum(size_bytes, 1)


def bytes_to_mb(size_bytes):
    """Convert bytes (an int or an int array) to MB (MiB), as a float64 scalar or array."""
    return np.divide(size_bytes, BYTES_PER_MB, dtype=np.float64)


# The unit of each of ``SimulationResult.metrics`` (and ``lab.optimal``'s ``metrics``), for what prints or tables
# them: counts of accesses or events, ms of modelled time, % and MB (MiB).
METRIC_UNITS = {
    "cache_hits": "accesses", "dram_accesses": "accesses", "accesses": "accesses", "write_allocations": "accesses",
    "read_hits": "accesses", "compulsory_misses": "accesses", "uncacheable_accesses": "accesses",
    "evictions": "evictions", "writebacks": "writebacks", "writebacks_skipped": "writebacks",
    "dead_drops": "tensors",
    "total_latency": "ms", "bandwidth_wait_time": "ms",
    "cache_hit_rate": "%", "read_hit_rate": "%", "byte_hit_rate": "%",
    "bytes_from_dram": "bytes",
    "dram_reads_mb": "MB", "dram_writes_mb": "MB", "dram_traffic_mb": "MB", "persist_writeback_mb": "MB",
    "peak_occupancy_mb": "MB",
    "step_time_ms": "ms", "gpu_time_ms": "ms", "host_time_ms": "ms", "memory_bound_ops": "ops",
}


def percent_above(value, base):
    """How far ``value`` is above ``base`` (numbers or arrays), in % of ``base``: 100 (value - base) / base; NaN
    where ``base`` is not > 0. The one definition of a gap to an optimum or a bound (``above_optimum_pct`` for
    traffic, ``lab.plan``'s ``gap_to_bound_pct`` for time)."""
    value = np.asarray(value, dtype=np.float64)
    base = np.asarray(base, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(base > 0, 100.0 * (value - base) / np.where(base > 0, base, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out
