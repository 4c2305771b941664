"""Fidelity: lab's predicted DRAM traffic next to what a GPU measured for the same model steps.

The measurements are per-kernel Nsight Compute CSVs (``ground_truth/h200/`` in
the repository: DRAM bytes read and written by each kernel of one step on an
NVIDIA H200, README there) and the wall time of each step (``steps.jsonl``).
``read_kernels`` reads one CSV, ``measured_totals`` sums them per case,
``measured_steps`` reads the step times; ``fidelity_table`` captures each case
with ``lab.capture_model``, simulates it under both buffer models and puts the
two side by side. MB means MiB.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lab.units import BYTES_PER_MB

# Each measured case and the capture that reproduces its step (ground_truth/h200/workloads.py: bf16, SDPA
# attention, eval under no_grad or train with dropout, AdamW(lr=1e-4, foreach=True), and language models called
# with use_cache=False: no KV cache is built), with the kernels the H200's libraries run for each call
# (H200_LOWERING: cuDNN's layout transforms around ResNet's NCHW convolutions, see lab.workloads.lowering)
H200_LOWERING = "cuda-sm90"
# workloads.py's case names: MODEL-{fwd,train}-bB[-sS] -> the lab preset, whether it has a token length and whether
# it is a decoder (called with use_cache=False); vision models take images, no tokens, and run forward only
CASE_MODELS = {"gpt2": ("gpt2", True, True), "llama7b": ("llama-2-7b", True, True), "bert": ("bert-base", True, False),
               "vit": ("vit-base", False, False), "resnet50": ("resnet-50", False, False)}
CASE_PATTERN = re.compile(r"(?P<model>[a-z0-9]+)-(?P<mode>fwd|train)-b(?P<batch>[1-9][0-9]*)(?:-s(?P<seq>[1-9][0-9]*))?")


def h200_case(case: str) -> dict:
    """The ``lab.capture_model`` arguments that reproduce a step ``ground_truth/h200/workloads.py`` measures, from
    its case name (``gpt2-fwd-b1-s512``, ``gpt2-train-b1-s512``, ``llama7b-fwd-b1-s512``, ``bert-fwd-b8-s128``,
    ``vit-fwd-b8``, ``resnet50-fwd-b32``: model, forward or training step, batch, tokens): bf16, decoders without a
    KV cache (``use_cache=False``), the H200's library kernels (``lowering=H200_LOWERING``). So a case measured
    later the same way (``CASES=... run.sh``) is predicted with no code added. ValueError naming the case when it
    is not such a name."""
    match = CASE_PATTERN.fullmatch(case) if isinstance(case, str) else None
    model = CASE_MODELS.get(match["model"]) if match else None
    if model is None or model[1] != bool(match["seq"]) or (match["mode"] == "train" and not model[1]):
        raise ValueError(f"case must be a measured step's name as workloads.py takes it, MODEL-fwd-bB-sS or "
                         f"MODEL-train-bB-sS for {', '.join(m for m, v in CASE_MODELS.items() if v[1])}, "
                         f"MODEL-fwd-bB for {', '.join(m for m, v in CASE_MODELS.items() if not v[1])}; got {case!r}")
    name, tokens, decoder = model
    arguments = dict(name=name, batch_size=int(match["batch"]))
    if tokens:
        arguments["seq_length"] = int(match["seq"])
    if match["mode"] == "train":
        arguments["training"] = True
    elif decoder:
        arguments["use_cache"] = False
    arguments["lowering"] = H200_LOWERING
    return arguments


# The shared measurements (ground_truth/h200/README.md), in their order
H200_CASES = {case: h200_case(case) for case in ("gpt2-fwd-b1-s512", "gpt2-fwd-b8-s1024", "llama7b-fwd-b1-s512",
                                                 "resnet50-fwd-b32", "gpt2-train-b1-s512")}
READ_METRIC = "dram__bytes_read.sum"
WRITE_METRIC = "dram__bytes_write.sum"
L2_METRIC = "lts__t_bytes.sum"  # bytes through the L2 (SM traffic and DRAM fills), when the CSV measured it
STEPS_FILE = "steps.jsonl"
# The replacement policy and buffer of the H200 comparison (see lab.sim.hardware.CacheModel).
H200_POLICY = "FIFO"


def read_kernels(path) -> pd.DataFrame:
    """One row per kernel launch of an Nsight Compute CSV: ID, kernel, read_bytes, write_bytes (DRAM, int64),
    and where the CSV has them ``l2_bytes`` (``lts__t_bytes.sum``: bytes through the L2, int64) and ``grid``
    (the launch's grid, e.g. ``"(320, 1, 1)"``)."""
    wanted = {"ID", "Kernel Name", "Grid Size", "Metric Name", "Metric Value"}
    raw = pd.read_csv(path, thousands=",", usecols=lambda c: c in wanted)
    index = ["ID", "Kernel Name"] + (["Grid Size"] if "Grid Size" in raw.columns else [])
    wide = raw.pivot_table(index=index, columns="Metric Name", values="Metric Value",
                           aggfunc="first").reset_index().sort_values("ID")
    table = pd.DataFrame({"ID": wide["ID"].to_numpy(), "kernel": wide["Kernel Name"].to_numpy(),
                          "read_bytes": wide[READ_METRIC].to_numpy(np.int64),
                          "write_bytes": wide[WRITE_METRIC].to_numpy(np.int64)})
    if L2_METRIC in wide.columns:
        table["l2_bytes"] = wide[L2_METRIC].to_numpy(np.int64)
    if "Grid Size" in wide.columns:
        table["grid"] = wide["Grid Size"].to_numpy()
    return table


def measured_steps(directory) -> pd.DataFrame:
    """The measured step of each case (``steps.jsonl`` in ``directory``, one JSON line per case): case,
    step_ms (wall time of one step, ms), peak_allocated_mb (the most memory allocated during it, MiB),
    allocated_before_mb (allocated when it began, MiB), params (parameter count), torch and transformers
    (versions), in ``H200_CASES`` order for the cases it holds, then any other case in file order.
    ValueError naming the file when it is missing or a line is not such a record."""
    path = Path(directory) / STEPS_FILE
    if not path.is_file():
        raise ValueError(f"directory must hold {STEPS_FILE} (one JSON record per measured step); {path} is missing")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records.append({"case": str(record["case"]), "step_ms": float(record["step_ms"]),
                            "peak_allocated_mb": record["peak_allocated_bytes"] / BYTES_PER_MB,
                            "allocated_before_mb": record["allocated_before_step"] / BYTES_PER_MB,
                            "params": int(record["params"]), "torch": record.get("torch"),
                            "transformers": record.get("transformers")})
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} line {number} is not a step record with case, step_ms, "
                             f"peak_allocated_bytes, allocated_before_step and params ({error!r})") from None
    order = {case: k for k, case in enumerate(H200_CASES)}
    table = pd.DataFrame(records, columns=["case", "step_ms", "peak_allocated_mb", "allocated_before_mb", "params",
                                           "torch", "transformers"])
    rank = table["case"].map(order).to_numpy(np.float64, na_value=np.nan)
    rank = np.where(np.isnan(rank), len(order) + np.arange(len(table)), rank)  # unknown cases last, in file order
    return table.iloc[np.argsort(rank, kind="stable")].reset_index(drop=True)


def measured_cases(directory) -> list:
    """The cases measured in ``directory``: its ``CASE.csv`` files whose name is a case (``h200_case``), the
    shared ones (``H200_CASES``) first in their order, then the others by name."""
    found = {path.stem for path in Path(directory).glob("*.csv") if CASE_PATTERN.fullmatch(path.stem)}
    others = []
    for case in sorted(found - set(H200_CASES)):
        try:
            h200_case(case)
            others.append(case)
        except ValueError:  # a file named like a case of a model workloads.py does not run
            pass
    return [case for case in H200_CASES if case in found] + others


def measured_totals(directory) -> pd.DataFrame:
    """The measured totals per case: case, kernels, read_mb, write_mb (MiB), for the cases whose CSV is in
    ``directory`` (``measured_cases``' order)."""
    rows = []
    for case in measured_cases(directory):
        path = Path(directory) / f"{case}.csv"
        kernels = read_kernels(path)
        rows.append({"case": case, "kernels": len(kernels),
                     "read_mb": kernels["read_bytes"].sum() / BYTES_PER_MB,
                     "write_mb": kernels["write_bytes"].sum() / BYTES_PER_MB})
    return pd.DataFrame(rows, columns=["case", "kernels", "read_mb", "write_mb"])


def fidelity_table(directory, cost="H200", buffers=("scratchpad", "cache"), traces=None) -> pd.DataFrame:
    """Measured and predicted DRAM MiB per case and buffer model.

    Captures each case (``traces``: an optional dict case -> trace instead),
    simulates it at the preset's ``buffer_mb`` with LRU for the scratchpad and
    ``H200_POLICY`` for the cache. Returns case, buffer, measured and
    predicted read, write and total MiB, and the ratios predicted / measured;
    and the step: ``measured_step_ms`` (``steps.jsonl``, NaN for a case it
    lacks), ``step_ms`` (``lab.sim.timing``, eager execution as measured),
    ``graph_step_ms`` (without the host) and ``step_ratio`` (eager / measured).
    """
    from lab.sim.cost import resolve_cost
    from lab.sim.simulate import simulate
    from lab.sim.timing import step_time
    from lab.workloads.models import capture_model

    cost = resolve_cost(cost)
    measured = measured_totals(directory)
    steps = measured_steps(directory).set_index("case")["step_ms"] if (Path(directory) / STEPS_FILE).exists() \
        else pd.Series(dtype=float)
    rows = []
    for m in measured.itertuples():
        trace = traces[m.case] if traces is not None else capture_model(**h200_case(m.case))
        measured_ms = float(steps.get(m.case, float("nan")))
        for buffer in buffers:
            policy = H200_POLICY if buffer == "cache" else "LRU"
            result = simulate(trace, policy, cost.buffer_mb, cost=cost, per_access=False, buffer=buffer)
            got = result.metrics
            read, write = got["dram_reads_mb"], got["dram_writes_mb"]
            eager_ms = got.get("step_time_ms", float("nan"))
            graph_ms = step_time(result, trace, execution="graph") if "step_time_ms" in got else float("nan")
            rows.append({"case": m.case, "buffer": buffer, "measured_read_mb": m.read_mb, "read_mb": read,
                         "read_ratio": read / m.read_mb, "measured_write_mb": m.write_mb, "write_mb": write,
                         "write_ratio": write / m.write_mb, "measured_total_mb": m.read_mb + m.write_mb,
                         "total_mb": read + write, "total_ratio": (read + write) / (m.read_mb + m.write_mb),
                         "measured_step_ms": measured_ms, "step_ms": eager_ms, "graph_step_ms": graph_ms,
                         "step_ratio": eager_ms / measured_ms})
    return pd.DataFrame(rows)


# Kernel categories, first match wins: (category, regular expression on an ncu kernel name, on a trace op name).
# The trace's ops are aten operators and the library kernels a lowering records (lab.workloads.lowering).
CATEGORIES = (
    ("transform", r"nchwToNhwc|nhwcToNchw", r"^cudnn\.(?:nchwToNhwc|nhwcToNchw)$"),
    ("norm", r"batch_norm|layer_norm|GammaBetaBackward", r"batch_norm|layer_norm"),
    ("attention", r"flash|fmha|attention", r"attention|flash|efficient"),
    ("conv/gemm", r"gemm|xmma|cutlass|nvjet|cudnn|conv|splitKreduce|cublas",
     r"\.(?:convolution|convolution_backward|mm|addmm|bmm|baddbmm|linear|matmul|_scaled_mm)$"),
    ("pool", r"pool|reduce_kernel", r"pool|\.(?:mean|sum|amax|amin)$"),
    ("elementwise", r"elementwise|multi_tensor_apply|foreach|dropout",
     r"\.(?:relu_?|add_?|sub_?|mul_?|div_?|gelu|silu|tanh|sigmoid|pow|rsqrt|neg|exp|where|clone|copy_|fill_|zero_|"
     r"masked_fill_?|native_dropout|addcmul_?|addcdiv_?|lerp_?|sqrt|_to_copy|cos|sin|arange|ones_like|zeros_like|"
     r"full|tanh_backward|gelu_backward|threshold_backward|sigmoid_backward|silu_backward|native_dropout_backward)$"
     r"|_foreach_"),
)
CATEGORY_NAMES = tuple(name for name, _, _ in CATEGORIES) + ("other",)


def _categorize(names: pd.Series, column: int) -> np.ndarray:
    names = names.astype(str)
    category = np.full(len(names), "other", dtype=object)
    left = np.ones(len(names), dtype=bool)
    for entry in CATEGORIES:
        hit = left & names.str.contains(entry[column], regex=True).to_numpy()
        category[hit] = entry[0]
        left &= ~hit
    return category


def kernel_categories(kernels) -> pd.DataFrame:
    """The kernels of one measured step (an Nsight Compute CSV's path, or ``read_kernels``' table) with a
    ``category`` column: ``transform`` (cuDNN's layout transforms), ``norm`` (batch and layer norm: kernels
    named so; batch norm's copy kernel is an elementwise one), ``attention`` (fused attention), ``conv/gemm`` (cuDNN, cuBLAS, CUTLASS and nvjet kernels), ``pool`` (pooling and reductions: a
    global mean pool is a ``reduce_kernel``), ``elementwise`` (torch's elementwise and multi-tensor kernels) or
    ``other``: ``CATEGORIES``' first matching pattern on the kernel name."""
    table = read_kernels(kernels) if not isinstance(kernels, pd.DataFrame) else kernels.copy()
    if "kernel" not in table.columns:
        raise ValueError("kernels must be an Nsight Compute CSV path or read_kernels' table (a 'kernel' column)")
    table["category"] = _categorize(table["kernel"], 1)
    return table


def op_categories(ops) -> np.ndarray:
    """The category (``kernel_categories``' names) of each op name in ``ops`` (a Series or list of trace ``op``
    values: aten operators, a lowering's library kernels)."""
    return _categorize(pd.Series(list(ops) if not isinstance(ops, pd.Series) else ops), 2)


def category_traffic(kernels, result) -> pd.DataFrame:
    """Measured against predicted DRAM MiB per kernel category (see ``kernel_categories``) of one step.

    ``kernels``: the step's Nsight Compute CSV (or ``read_kernels``' table); ``result``: ``lab.simulate`` of its
    capture (a trace with ``op_index``, any buffer model), whose per-op DRAM bytes charge each writeback to the
    access that evicted it, as ncu charges a kernel the writebacks made while it runs. Returns one row per
    category present on either side (``CATEGORY_NAMES`` order, then ``flush``: the bytes written back after the
    last op): category, kernels (measured launches) and launches (the capture's), measured_read_mb, read_mb,
    measured_write_mb, write_mb and write_ratio (predicted / measured writes; NaN where nothing was measured)."""
    op_bytes = getattr(result, "op_bytes", None)
    if op_bytes is None:
        raise ValueError(f"result must be lab.simulate's result (per-op DRAM bytes), got {type(result).__name__}: "
                         "simulate the step's capture first")
    measured = kernel_categories(kernels)
    ops, read, write, flush = op_bytes
    predicted = pd.DataFrame({"category": op_categories(ops["op"].astype(str)),
                              "launches": ops["launches"].to_numpy(np.int64),
                              "read_mb": np.asarray(read, np.float64) / BYTES_PER_MB,
                              "write_mb": np.asarray(write, np.float64) / BYTES_PER_MB})
    got = measured.groupby("category").agg(kernels=("kernel", "size"), measured_read_mb=("read_bytes", "sum"),
                                          measured_write_mb=("write_bytes", "sum"))
    got[["measured_read_mb", "measured_write_mb"]] /= BYTES_PER_MB
    table = got.join(predicted.groupby("category")[["launches", "read_mb", "write_mb"]].sum(), how="outer")
    table.loc["flush"] = {"kernels": 0, "measured_read_mb": 0.0, "measured_write_mb": 0.0, "launches": 0,
                          "read_mb": 0.0, "write_mb": float(flush) / BYTES_PER_MB}
    order = [c for c in CATEGORY_NAMES + ("flush",) if c in table.index]
    table = table.loc[order].fillna({"kernels": 0, "launches": 0, "measured_read_mb": 0.0,
                                     "measured_write_mb": 0.0, "read_mb": 0.0, "write_mb": 0.0})
    table = table.astype({"kernels": np.int64, "launches": np.int64})
    with np.errstate(divide="ignore", invalid="ignore"):
        table["write_ratio"] = np.where(table["measured_write_mb"] > 0,
                                        table["write_mb"] / table["measured_write_mb"], np.nan)
    columns = ["kernels", "launches", "measured_read_mb", "read_mb", "measured_write_mb", "write_mb", "write_ratio"]
    return table.reset_index(names="category")[["category"] + columns]
