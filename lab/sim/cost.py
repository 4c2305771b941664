"""Latency cost model of the on-chip buffer and its DRAM, with hardware presets.

Units: latencies in ms, sizes in MB (MiB, 2**20 bytes), bandwidth in decimal
GB/s (10**9 bytes/s, as vendor data sheets give it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

from lab.checks import check_number, check_positive_mb, check_str
from lab.registry import Registry
from lab.sim.model import check_buffer
from lab.units import BYTES_PER_GB_DECIMAL, BYTES_PER_MB, MS_PER_S


# Bounds that keep every total finite in float64 (a latency of 1e308 ms per access would sum to inf): a day per
# access, or a byte per second, is already far outside any memory system.
MAX_COST_VALUE = 1e9  # ms, ms per MB, GB/s, MB
MIN_BANDWIDTH_GB_S = 1e-9


@dataclass(frozen=True)
class CostModel:
    """What each access costs.

    A hit costs ``hit_latency_ms``. A miss (a DRAM read of the whole tensor)
    costs ``miss_latency_ms + size_mb * miss_latency_ms_per_mb`` plus the
    transfer time ``size_bytes / (dram_bandwidth_gb_s * 1e9)`` s; the transfer
    part is what the metrics report as ``bandwidth_wait_time``.

    The defaults are the seed's: 0.01 ms per hit and 0.1 ms per MB missed. The
    seed leaves the bandwidth unnamed; 100 GB/s is our default, the order of a
    DDR5 server socket. ``buffer_mb`` is the preset's on-chip buffer size (a
    suggested ``capacity_mb``), None when the model is not tied to a chip.

    ``buffer`` is the buffer model that fits the chip (``lab.sim.model.BUFFERS``):
    ``"cache"`` for a GPU's L2, a hardware cache (the A100, H100 and H200
    presets), ``"scratchpad"`` for a software-managed on-chip buffer (the
    seed's defaults, and a CostModel built without it). ``lab.simulate`` runs
    it where its own ``buffer`` is not given; the result's ``model`` says which
    ran.
    """

    name: str = "seed"
    hit_latency_ms: float = 0.01
    miss_latency_ms: float = 0.0
    miss_latency_ms_per_mb: float = 0.1
    dram_bandwidth_gb_s: float = 100.0
    buffer_mb: Optional[float] = None
    buffer: str = "scratchpad"

    def __post_init__(self):
        check_str("CostModel.name", self.name)
        check_buffer(self.buffer, name="CostModel.buffer")
        if self.buffer_mb is not None:
            check_positive_mb("CostModel.buffer_mb", self.buffer_mb)
        for f in fields(self):
            if f.name not in ("name", "buffer_mb", "buffer"):
                check_number(f"CostModel.{f.name}", getattr(self, f.name), 0, MAX_COST_VALUE)
        if self.dram_bandwidth_gb_s < MIN_BANDWIDTH_GB_S:
            raise ValueError(f"CostModel.dram_bandwidth_gb_s must be at least {MIN_BANDWIDTH_GB_S:g} GB/s, got "
                             f"{self.dram_bandwidth_gb_s!r}")

    def transfer_ms(self, n_bytes):
        """Time in ms to move ``n_bytes`` (int or array) from DRAM at ``dram_bandwidth_gb_s``."""
        return n_bytes / (self.dram_bandwidth_gb_s * BYTES_PER_GB_DECIMAL) * MS_PER_S

    def latency_ms(self, on_chip, transfers, moved_bytes):
        """The cost model's time in ms, the one formula of ``total_latency`` (per access with arrays, or totals):
        ``on_chip`` accesses served on chip (hits and write allocations) cost ``hit_latency_ms`` each;
        ``transfers`` DRAM transfers (misses, writebacks) ``miss_latency_ms`` each; the ``moved_bytes`` they
        move ``miss_latency_ms_per_mb`` per MB plus their time at ``dram_bandwidth_gb_s``."""
        return (on_chip * self.hit_latency_ms + transfers * self.miss_latency_ms
                + moved_bytes / BYTES_PER_MB * self.miss_latency_ms_per_mb + self.transfer_ms(moved_bytes))


# The GPUs' L2 is a hardware cache: their presets run the hardware-cache model unless a run names another
# (``lab.sim.hardware``; it predicts the H200's measured DRAM traffic, see ``tests/test_fidelity.py``).
_H100 = CostModel(name="H100-SXM5", hit_latency_ms=0.26e-3, miss_latency_ms=0.5e-3, miss_latency_ms_per_mb=0.0,
                  dram_bandwidth_gb_s=3350.0, buffer_mb=50.0, buffer="cache")
HARDWARE_PRESETS: Registry[CostModel] = Registry("hardware preset")
for _preset in (
    CostModel(),
    # NVIDIA H100 SXM5. L2 of 50 MB and HBM3 at 3.35 TB/s: NVIDIA H100 Tensor
    # Core GPU data sheet and "NVIDIA H100 Tensor Core GPU Architecture"
    # white paper (2022). Latencies are round figures of the order that
    # pointer-chasing microbenchmarks report (L2 hit ~0.26 us, HBM ~0.5 us):
    # Luo et al., "Benchmarking and Dissecting the Nvidia Hopper GPU
    # Architecture", IPDPS 2024; Chips and Cheese, "Nvidia's H100: Funny L2,
    # and Tons of Bandwidth" (2023).
    _H100,
    # NVIDIA H200 SXM. L2 of 60 MB (the GH100 die's full L2; what
    # cudaDevAttrL2CacheSize reports on the H200 that measured
    # ground_truth/h200) and 141 GB of HBM3e at 4.8 TB/s: NVIDIA H200 Tensor
    # Core GPU data sheet (2024). Latencies as the H100's (same SM and L2
    # design): Luo et al., IPDPS 2024; Chips and Cheese (2023).
    replace(_H100, name="H200", dram_bandwidth_gb_s=4800.0, buffer_mb=60.0),
    # NVIDIA A100 SXM4 40 GB. L2 of 40 MB and HBM2 at 1,555 GB/s: "NVIDIA
    # A100 Tensor Core GPU Architecture" white paper (2020). Latencies as
    # above (L2 hit ~0.2 us, HBM ~0.45 us): Jia et al., "Dissecting the
    # Ampere GPU Architecture through Microbenchmarking", GTC 2021.
    CostModel(
        name="A100-SXM4-40GB",
        hit_latency_ms=0.2e-3,
        miss_latency_ms=0.45e-3,
        miss_latency_ms_per_mb=0.0,
        dram_bandwidth_gb_s=1555.0,
        buffer_mb=40.0,
        buffer="cache",
    ),
):
    HARDWARE_PRESETS.add(_preset.name, _preset)


def resolve_cost(cost) -> CostModel:
    """Return a CostModel from None (the seed's defaults), a CostModel, or a preset name (case-insensitive)."""
    if cost is None:
        return HARDWARE_PRESETS["seed"]
    if isinstance(cost, CostModel):
        return cost
    if isinstance(cost, str) and cost in HARDWARE_PRESETS:
        return HARDWARE_PRESETS[cost]
    raise ValueError(f"cost must be a CostModel, None or a hardware preset name in {HARDWARE_PRESETS.names()}; "
                     f"got {cost!r}")
