"""Latency cost model of the on-chip buffer and its DRAM, with hardware presets.

Units: latencies in ms, sizes in MB (MiB, 2**20 bytes), bandwidth in decimal
GB/s (10**9 bytes/s, as vendor data sheets give it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from numbers import Integral
from typing import Optional

from lab.checks import check_int, check_number, check_positive_mb, check_str
from lab.registry import Registry
from lab.sim.model import check_buffer
from lab.units import BYTES_PER_GB_DECIMAL, BYTES_PER_MB, MS_PER_S


# Bounds that keep every total finite in float64 (a latency of 1e308 ms per access would sum to inf): a day per
# access, or a byte per second, is already far outside any memory system.
MAX_COST_VALUE = 1e9  # ms, ms per MB, GB/s, MB
MIN_BANDWIDTH_GB_S = 1e-9
LATENCY_FIELDS = ("hit_latency_ms", "miss_latency_ms", "miss_latency_ms_per_mb", "dram_bandwidth_gb_s")
# The step-time model's numbers (lab.sim.timing), by the range each must lie in.
POSITIVE_FIELDS = ("onchip_bandwidth_gb_s", "autograd_factor")  # > 0
FRACTION_FIELDS = ("compute_efficiency", "misaligned_gemm_efficiency", "dram_efficiency")  # in (0, 1]
DURATION_FIELDS = ("kernel_launch_us", "launch_latency_us", "host_dispatch_us")  # >= 0, microseconds
TIME_FIELDS = ("peak_tflops",) + FRACTION_FIELDS + POSITIVE_FIELDS[:1] + DURATION_FIELDS + POSITIVE_FIELDS[1:] + (
    "gemm_tile",)
MEMORY_COMBINE = ("max", "sum")  # how an op's DRAM and on-chip times combine (lab.sim.timing)


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

    The latencies above are the seed's per-access model (``total_latency``,
    ``latency_ms``), kept as they were. The step time (``lab.sim.timing``: a
    per-op roofline and the host that issues the ops) reads these physical
    numbers instead, None in a preset without them (the seed's: no step time):

    - ``peak_tflops``: dense TFLOP/s per dtype name of the trace's ``dtype``
      column (``{"bfloat16": 989.4, ...}``, kept as sorted pairs so the model
      stays hashable), each > 0;
    - ``compute_efficiency``, ``misaligned_gemm_efficiency`` (a matrix product
      with an operand's innermost dimension not a multiple of 8 elements) and
      ``dram_efficiency``: shares of the peak and of ``dram_bandwidth_gb_s``
      reached, in (0, 1];
    - ``onchip_bandwidth_gb_s``: SM <-> L2 bandwidth (decimal GB/s, > 0);
    - ``kernel_launch_us`` (the shortest kernel, back to back),
      ``launch_latency_us`` (issue to start), ``host_dispatch_us`` (host time
      per op in eager execution), all >= 0, and ``autograd_factor`` (> 0: the
      host time of an op autograd records, a multiple of ``host_dispatch_us``);
    - ``gemm_tile``: the (rows, columns) of a matrix product's output tile;
    - ``memory_combine``: ``"max"`` (an op's DRAM and on-chip times overlap)
      or ``"sum"`` (XLA's rule: they add).

    Every field is checked on construction: ValueError naming it (TypeError
    for a name that is not a string).
    """

    name: str = "seed"
    hit_latency_ms: float = 0.01
    miss_latency_ms: float = 0.0
    miss_latency_ms_per_mb: float = 0.1
    dram_bandwidth_gb_s: float = 100.0
    buffer_mb: Optional[float] = None
    buffer: str = "scratchpad"
    # The physical numbers of the step-time model (``lab.sim.timing``); None: the preset has none (the seed's),
    # and no step time is computed with it.
    peak_tflops: Optional[tuple] = None
    compute_efficiency: Optional[float] = None
    misaligned_gemm_efficiency: Optional[float] = None
    dram_efficiency: Optional[float] = None
    onchip_bandwidth_gb_s: Optional[float] = None
    kernel_launch_us: Optional[float] = None
    launch_latency_us: Optional[float] = None
    host_dispatch_us: Optional[float] = None
    autograd_factor: Optional[float] = None
    gemm_tile: Optional[tuple] = None
    memory_combine: str = "max"

    def __post_init__(self):
        check_str("CostModel.name", self.name)
        check_buffer(self.buffer, name="CostModel.buffer")
        if self.buffer_mb is not None:
            check_positive_mb("CostModel.buffer_mb", self.buffer_mb)
        for f in fields(self):
            if f.name in LATENCY_FIELDS:
                check_number(f"CostModel.{f.name}", getattr(self, f.name), 0, MAX_COST_VALUE)
        if self.dram_bandwidth_gb_s < MIN_BANDWIDTH_GB_S:
            raise ValueError(f"CostModel.dram_bandwidth_gb_s must be at least {MIN_BANDWIDTH_GB_S:g} GB/s, got "
                             f"{self.dram_bandwidth_gb_s!r}")
        self._check_time_fields()

    def _check_time_fields(self):
        check_str("CostModel.memory_combine", self.memory_combine, MEMORY_COMBINE)
        for name in POSITIVE_FIELDS + FRACTION_FIELDS + DURATION_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            value = check_number(f"CostModel.{name}", value, 0, MAX_COST_VALUE)
            if name in FRACTION_FIELDS and not 0 < value <= 1:
                raise ValueError(f"CostModel.{name} must be a number in (0, 1], got {value!r}")
            if name in POSITIVE_FIELDS and value < MIN_BANDWIDTH_GB_S:
                raise ValueError(f"CostModel.{name} must be a number > 0, got {value!r}")
        if self.peak_tflops is not None:
            pairs = self.peak_tflops.items() if isinstance(self.peak_tflops, dict) else self.peak_tflops
            try:
                pairs = tuple((key, value) for key, value in pairs)
            except (TypeError, ValueError):
                raise ValueError("CostModel.peak_tflops must map dtype names to dense TFLOP/s (a dict or pairs), got "
                                 f"{self.peak_tflops!r}") from None
            for key, value in pairs:
                check_str("CostModel.peak_tflops key", key)
                if check_number(f"CostModel.peak_tflops[{key!r}]", value, 0, MAX_COST_VALUE) < MIN_BANDWIDTH_GB_S:
                    raise ValueError(f"CostModel.peak_tflops[{key!r}] must be a number > 0, got {value!r}")
            object.__setattr__(self, "peak_tflops", tuple(sorted((k, float(v)) for k, v in pairs)))
        if self.gemm_tile is not None:
            tile = self.gemm_tile
            if (not isinstance(tile, tuple) or len(tile) != 2
                    or not all(isinstance(t, Integral) and not isinstance(t, bool) for t in tile)):
                raise ValueError(f"CostModel.gemm_tile must be a pair of integers (rows, columns), got {tile!r}")
            object.__setattr__(self, "gemm_tile", tuple(check_int("CostModel.gemm_tile", t) for t in tile))

    @property
    def missing_time_fields(self) -> list:
        """The physical numbers the step-time model needs that this preset lacks (None): [] when it has them all."""
        return [name for name in TIME_FIELDS if getattr(self, name) is None]

    def peak_tflops_for(self, dtype: str) -> float:
        """Dense peak TFLOP/s for ``dtype`` (a trace's ``dtype`` value, ``"bfloat16"``; ``"torch."`` prefix
        accepted). ValueError naming the dtype and the ones the preset has when it has none for it."""
        peaks = dict(self.peak_tflops or ())
        key = str(dtype).removeprefix("torch.")
        if key not in peaks:
            raise ValueError(f"CostModel.peak_tflops of cost preset {self.name!r} has no entry for dtype {key!r} "
                             f"(it has {sorted(peaks)}): add one, e.g. replace(cost, peak_tflops={{..., {key!r}: ...}})")
        return peaks[key]

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
#
# Step-time numbers (lab.sim.timing). Peaks are dense (no 2:4 sparsity): NVIDIA's data sheets list the tensor-core
# rates "with sparsity", twice the dense rate, so those figures are halved here. H100 SXM5 data sheet (2022):
# FP64 34, FP64 tensor core 67, FP32 67, TF32 989*, BF16/FP16 1,979*, FP8 3,958* TFLOP/s (* with sparsity); the
# H200 SXM data sheet (2024) lists the same compute (same GH100 die and clocks). Dense: bf16/fp16 989.4, tf32
# 494.7, fp8 1,978.9; fp32 66.9 (no tensor core: PyTorch runs fp32 matmuls without TF32 by default); fp64 66.9 on
# the tensor cores (DMMA). Checked against itkb.uw.cz, "NVIDIA H200 vs B300" (2026; "dense mode ... FP8 ~1,979,
# FP16/BF16 ~989, FP64 34 (Tensor 67)") and the H200 sheet's sparsity footnote as quoted at lzwjava.github.io
# ("FP8 Tensor Core 3,958 TFLOPS*, *Performance figures include sparsity").
# On-chip (SM <-> L2) bandwidth is not published; Chips and Cheese, "Nvidia's H100: Funny L2, and Tons of
# Bandwidth" (2023) measures it on an H100 PCIe (114 SMs, 1.755 GHz): the SXM parts, 132 SMs at 1.98 GHz, should
# reach more. 5,500 GB/s is the plan's starting value, to be calibrated within [5,000, 8,000] (issue 26 slice 4).
# Launch: ~2.5 us is the shortest back-to-back kernel, ~4 us from issue to start (NVIDIA, "Getting Started with
# CUDA Graphs", Gray 2019: a few us of launch overhead per kernel). UNCALIBRATED PLACEHOLDERS (the H200 preset
# fits three of them, below; the H100 and A100 keep these, not to be read as measurements): compute_efficiency 0.5,
# misaligned_gemm_efficiency 0.25 (GPT-2's LM head, vocabulary 50,257, runs an sm75 mma.sync fallback kernel),
# dram_efficiency 0.7, host_dispatch_us 26 (the measuring host's CPU, Python and PyTorch per recorded aten op,
# read off ground_truth/h200's host-bound steps by the plan's arithmetic, not fitted) and autograd_factor 1.8.
_HOPPER_PEAKS = (("bfloat16", 989.4), ("float16", 989.4), ("float32", 66.9), ("tf32", 494.7),
                 ("float8_e4m3fn", 1978.9), ("float8_e5m2", 1978.9), ("float64", 66.9))
_PLACEHOLDERS = dict(compute_efficiency=0.5, misaligned_gemm_efficiency=0.25, dram_efficiency=0.7,
                     kernel_launch_us=2.5, launch_latency_us=4.0, host_dispatch_us=26.0, autograd_factor=1.8,
                     gemm_tile=(128, 128), memory_combine="max")
_H100 = CostModel(name="H100-SXM5", hit_latency_ms=0.26e-3, miss_latency_ms=0.5e-3, miss_latency_ms_per_mb=0.0,
                  dram_bandwidth_gb_s=3350.0, buffer_mb=50.0, buffer="cache", peak_tflops=_HOPPER_PEAKS,
                  onchip_bandwidth_gb_s=5500.0, **_PLACEHOLDERS)
HARDWARE_PRESETS: Registry[CostModel] = Registry("hardware preset")
for _preset in (
    CostModel(),  # the seed's: no physical numbers, so no step time ("a preset without the numbers")
    # NVIDIA H100 SXM5. L2 of 50 MB and HBM3 at 3.35 TB/s: NVIDIA H100 Tensor
    # Core GPU data sheet and "NVIDIA H100 Tensor Core GPU Architecture"
    # white paper (2022). Latencies are round figures of the order that
    # pointer-chasing microbenchmarks report (L2 hit ~0.26 us, HBM ~0.5 us):
    # Luo et al., "Benchmarking and Dissecting the Nvidia Hopper GPU
    # Architecture", IPDPS 2024; Chips and Cheese, "Nvidia's H100: Funny L2,
    # and Tons of Bandwidth" (2023). Step-time numbers: above.
    _H100,
    # NVIDIA H200 SXM. L2 of 60 MB (the GH100 die's full L2; what
    # cudaDevAttrL2CacheSize reports on the H200 that measured
    # ground_truth/h200) and 141 GB of HBM3e at 4.8 TB/s: NVIDIA H200 Tensor
    # Core GPU data sheet (2024). Latencies as the H100's (same SM and L2
    # design): Luo et al., IPDPS 2024; Chips and Cheese (2023). Compute as the
    # H100 SXM5's (same die and clocks): above.
    # Step time: host_dispatch_us, autograd_factor and misaligned_gemm_efficiency fitted once on the five
    # measured steps of ground_truth/h200 (benchmarks/calibrate_time.py, 2026-12-06: 26.93 us, 1.775, 0.110;
    # predicted / measured eager step 0.91-1.08 on the five cases, 0.87-1.52 held out one case at a time: GPT-2
    # b8 is the only GPU-bound step, so the fallback kernel's rate rests on it alone). The other numbers as above.
    replace(_H100, name="H200", dram_bandwidth_gb_s=4800.0, buffer_mb=60.0, host_dispatch_us=26.9,
            autograd_factor=1.78, misaligned_gemm_efficiency=0.11),
    # NVIDIA A100 SXM4 40 GB. L2 of 40 MB and HBM2 at 1,555 GB/s: "NVIDIA
    # A100 Tensor Core GPU Architecture" white paper (2020). Latencies as
    # above (L2 hit ~0.2 us, HBM ~0.45 us): Jia et al., "Dissecting the
    # Ampere GPU Architecture through Microbenchmarking", GTC 2021. Dense peaks
    # from the same white paper: BF16/FP16 312, TF32 156 (312 with sparsity),
    # FP32 19.5, FP64 tensor core 19.5 TFLOP/s; no FP8. On-chip bandwidth ~4,000
    # GB/s (the plan's figure after Jia et al., 2021; not re-verified: a
    # placeholder to calibrate, as the efficiencies and host numbers above).
    CostModel(
        name="A100-SXM4-40GB",
        hit_latency_ms=0.2e-3,
        miss_latency_ms=0.45e-3,
        miss_latency_ms_per_mb=0.0,
        dram_bandwidth_gb_s=1555.0,
        buffer_mb=40.0,
        buffer="cache",
        peak_tflops=(("bfloat16", 312.0), ("float16", 312.0), ("float32", 19.5), ("tf32", 156.0),
                     ("float64", 19.5)),
        onchip_bandwidth_gb_s=4000.0,
        **_PLACEHOLDERS,
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
