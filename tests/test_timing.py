"""Step time (issue 26, slice 2): the per-op roofline, the host-issue queue, per-op DRAM bytes under both buffer
models, the breakdowns, and the presets without the numbers. Traces are small and made here, with the per-op
columns a capture records (op_index, flops, launches, host_calls, grad_mode)."""

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import lab
from lab.sim import timing
from lab.sim.cost import CostModel
from lab.trace.ops import heuristic_op_index, op_index_of, op_table
from lab.units import BYTES_PER_MB

# Round numbers, so that each expected time is arithmetic on the page.
UNIT = CostModel(name="unit", peak_tflops={"bfloat16": 100.0, "float32": 10.0}, compute_efficiency=0.5,
                 misaligned_gemm_efficiency=0.25, dram_efficiency=0.5, dram_bandwidth_gb_s=1000.0,
                 onchip_bandwidth_gb_s=2000.0, kernel_launch_us=5.0, launch_latency_us=4.0, host_dispatch_us=10.0,
                 autograd_factor=2.0, gemm_tile=(128, 128))


def _trace(ops, persist=()):
    """A trace of ``ops``: each a dict with name, reads and writes [(tensor, MB, shape)], and optional flops,
    launches, grad_mode, dtype, phase, layer, module; ``persist``: tensors marked persistent at the end."""
    rows = []
    for index, op in enumerate(ops):
        for access in ("read", "write"):
            for tensor, mb, shape in op.get(access + "s", ()):
                rows.append({"tensor_id": tensor, "size_mb": float(mb), "access": access, "op": op["name"],
                             "shape": str(shape), "dtype": op.get("dtype", "bfloat16"), "op_index": index,
                             "flops": float(op.get("flops", 0.0)), "launches": op.get("launches", 1),
                             "host_calls": op.get("host_calls", 1), "grad_mode": op.get("grad_mode", False),
                             "phase": op.get("phase", "forward"), "layer": op.get("layer", 0),
                             "module": op.get("module", f"model.layers.{op.get('layer', 0)}.mlp")})
    for tensor in persist:
        rows.append({**rows[-1], "tensor_id": tensor, "access": "persist", "op": "", "op_index": -1})
    trace = pd.DataFrame(rows)
    return trace.astype({"op_index": np.int64, "launches": np.int16, "host_calls": np.int32, "grad_mode": bool})


def _one_op(op, dram_bytes=0, cost=UNIT, **kwargs):
    """The StepTime of a trace of the one op ``op`` that moved ``dram_bytes`` from DRAM."""
    ops = op_table(_trace([op]))
    return timing.step_times(ops, [dram_bytes], [0], 0, cost, **kwargs).ops.iloc[0]


def test_a_compute_bound_op_takes_its_flops_at_the_efficient_peak():
    mm = {"name": "aten.mm", "flops": 1e11, "reads": [("a", 1, (512, 512)), ("b", 1, (512, 512))],
          "writes": [("c", 1, (512, 512))]}
    row = _one_op(mm)
    assert row["compute_ms"] == pytest.approx(2.0)  # 1e11 / (100e12 * 0.5) s
    assert row["gpu_ms"] == pytest.approx(2.0) and row["bound"] == "compute"
    # an operand whose innermost dimension is not a multiple of 8: cuBLAS's fallback, at 0.25 of the peak
    vocabulary = {**mm, "writes": [("c", 1, (512, 50257))]}
    assert _one_op(vocabulary)["gpu_ms"] == pytest.approx(4.0)
    assert _one_op({**mm, "dtype": "float32"})["gpu_ms"] == pytest.approx(20.0)  # fp32 at 10 TFLOP/s


def test_a_dram_bound_op_takes_its_bytes_at_the_efficient_bandwidth():
    relu = {"name": "aten.relu", "reads": [("x", 1, (1024,))], "writes": [("y", 1, (1024,))]}
    row = _one_op(relu, dram_bytes=10**9)
    assert row["dram_ms"] == pytest.approx(2.0)  # 1e9 B / (1000 GB/s * 0.5)
    assert row["gpu_ms"] == pytest.approx(2.0) and row["bound"] == "dram"


def test_an_onchip_bound_op_takes_every_byte_it_accesses_at_the_l2_bandwidth():
    mb = 2000.0
    copy = {"name": "aten.copy_", "reads": [("x", mb, (1024,))], "writes": [("y", mb, (1024,))]}
    row = _one_op(copy, dram_bytes=0)
    assert row["onchip_ms"] == pytest.approx(2 * mb * BYTES_PER_MB / 2000e9 * 1e3)
    assert row["gpu_ms"] == row["onchip_ms"] and row["bound"] == "on-chip"


def test_a_launch_bound_op_takes_its_kernels_launch_floor():
    row = _one_op({"name": "aten.native_batch_norm", "launches": 400, "reads": [("x", 0.001, (8,))],
                   "writes": [("y", 0.001, (8,))]})
    assert row["launch_ms"] == pytest.approx(2.0) and row["bound"] == "launch"  # 400 kernels * 5 us


def test_memory_combine_takes_the_larger_memory_time_or_their_sum():
    mb = 2e9 / BYTES_PER_MB  # 2e9 bytes on chip: 1 ms at 2,000 GB/s
    op = {"name": "aten.sum", "reads": [("x", mb, (1024,))]}
    assert _one_op(op, dram_bytes=5 * 10**8)["gpu_ms"] == pytest.approx(1.0)  # DRAM 1 ms, on-chip 1 ms: max
    summed = _one_op(op, dram_bytes=5 * 10**8, cost=replace(UNIT, memory_combine="sum"))
    assert summed["gpu_ms"] == pytest.approx(2.0) and summed["bound"] == "dram"  # XLA's rule: they add


def test_a_tiled_matrix_product_rereads_its_operands_once_per_tile_row_and_column():
    # A 256 x 128 by B 128 x 256 in bf16, 128 x 128 tiles: A read twice (two tile columns), B twice, C once
    mm = {"name": "aten.mm", "reads": [("a", 256 * 128 * 2 / BYTES_PER_MB, (256, 128)),
                                       ("b", 128 * 256 * 2 / BYTES_PER_MB, (128, 256))],
          "writes": [("c", 256 * 256 * 2 / BYTES_PER_MB, (256, 256))]}
    ops = op_table(_trace([mm]))
    assert timing.onchip_bytes(ops, (128, 128)).tolist() == [2 * 65536 + 2 * 65536 + 131072]
    assert timing.onchip_bytes(ops, (256, 256)).tolist() == [65536 + 65536 + 131072]  # one tile: each read once


def test_the_queue_when_the_host_is_slower_than_the_gpu():
    start, end = timing.issue_queue(np.full(5, 1.0), np.full(5, 0.1), 0.004)
    assert end[-1] == pytest.approx(5 * 1.0 + 0.004 + 0.1)  # every host cost, the latency, the last op
    assert start.tolist() == pytest.approx([1.004, 2.004, 3.004, 4.004, 5.004])


def test_the_queue_when_the_gpu_is_slower_than_the_host():
    start, end = timing.issue_queue(np.full(5, 0.01), np.full(5, 1.0), 0.004)
    assert end[-1] == pytest.approx(0.01 + 0.004 + 5 * 1.0)  # the first issue, then the GPU back to back
    assert np.diff(start) == pytest.approx(np.ones(4))


def test_the_issue_queue_compiles_once_per_argument_type():
    for n in (1, 3, 100):
        timing.issue_queue(np.zeros(n), np.ones(n), 0.5)
    timing.issue_queue(np.zeros(2), np.ones(2), np.float64(0.5))
    trace = _trace(_small_ops())
    timing.step_times(op_table(trace), np.zeros(6), np.zeros(6), 0, UNIT)  # pandas hands over read-only arrays
    assert len(timing.issue_queue.signatures) == 1


def _small_ops(n=6, grad_mode=False):
    return [{"name": "aten.relu", "reads": [(f"t{i}", 1, (1024,))], "writes": [(f"t{i + 1}", 1, (1024,))],
             "grad_mode": grad_mode, "layer": i % 2} for i in range(n)]


def test_eager_execution_pays_the_host_and_graph_execution_does_not():
    ops = op_table(_trace(_small_ops()))
    zeros = np.zeros(len(ops), np.int64)
    eager = timing.step_times(ops, zeros, zeros, 0, UNIT)
    # host-bound: 6 ops at 10 us of host each, 4 us of latency, the last op's 5 us launch floor
    assert eager.step_time_ms == pytest.approx((6 * 10 + 4 + 5) / 1000)
    assert eager.host_time_ms == pytest.approx(0.06) and eager.gpu_time_ms == pytest.approx(0.03)
    graph = timing.step_times(ops, zeros, zeros, 0, UNIT, execution="graph")
    assert graph.step_time_ms == pytest.approx((4 + 6 * 5) / 1000) and graph.host_time_ms == 0
    recorded = op_table(_trace(_small_ops(grad_mode=True)))
    assert timing.step_times(recorded, zeros, zeros, 0, UNIT).host_time_ms == pytest.approx(0.12)  # autograd 2x
    with pytest.raises(ValueError, match="execution must be one of"):
        timing.step_times(ops, zeros, zeros, 0, UNIT, execution="lazy")
    # ops a library launches inside another op's call (lowering's layout transforms: host_calls 0) cost no host
    # time: 2 dispatched ops at 10 us each
    lowered = op_table(_trace([{**op, "host_calls": 1 if i in (0, 3) else 0} for i, op in enumerate(_small_ops())]))
    assert timing.step_times(lowered, zeros, zeros, 0, UNIT).host_time_ms == pytest.approx(0.02)


def _workload_with_writebacks():
    """Twelve ops over 2 MB tensors, each output read by the next op and again four ops later, so a small
    buffer evicts dirty tensors and writes them back; the last outputs persist."""
    ops = [{"name": "aten.add", "reads": [(f"t{i - 3 if i >= 3 else i}", 2, (512, 1024)), (f"t{i + 1}", 2, (512, 1024))],
            "writes": [(f"t{i + 2}", 2, (512, 1024))], "layer": i // 4, "phase": "forward" if i < 8 else "backward",
            "module": f"model.layers.{i // 4}.mlp.fc{i % 2}", "flops": 1e6} for i in range(12)]
    return _trace(ops, persist=("t13", "t12"))


@pytest.mark.parametrize("buffer", ["scratchpad", "cache"])
@pytest.mark.parametrize("per_access", [True, False])
def test_per_op_dram_bytes_add_up_to_the_dram_traffic(buffer, per_access):
    trace = _workload_with_writebacks()
    result = lab.simulate(trace, "LRU", 5.0, cost="H200", buffer=buffer, per_access=per_access)
    ops, read, write, outside = result.op_bytes
    assert len(ops) == 12 and read.shape == write.shape == (12,)
    total = int(read.sum() + write.sum() + outside)
    assert total == round(result.metrics["dram_traffic_mb"] * BYTES_PER_MB)
    assert int(read.sum()) == result.metrics["bytes_from_dram"]
    assert outside > 0  # the persist writebacks (scratchpad) or the final flush (cache): the flush pseudo-op
    assert write.sum() > 0  # writebacks charged to the op whose access evicted them
    times = timing.step_time_of(result, trace)
    assert times.ops["op"].iloc[-1] == timing.FLUSH and times.ops["dram_write_bytes"].iloc[-1] == outside
    assert result.metrics["step_time_ms"] == pytest.approx(lab.step_time(result, trace))
    assert result.per_access == per_access and result.note == ""


def test_per_access_or_not_the_step_time_is_the_same():
    trace = _workload_with_writebacks()
    full = lab.simulate(trace, "FIFO", 5.0, cost="H100-SXM5", buffer="scratchpad")
    lean = lab.simulate(trace, "FIFO", 5.0, cost="H100-SXM5", buffer="scratchpad", per_access=False)
    assert full.metrics == lean.metrics and lean.outcome.size == 0
    assert 0 < full.metrics["gpu_time_ms"] < full.metrics["step_time_ms"]


@pytest.mark.parametrize("execution", ["eager", "graph"])
def test_the_metrics_kept_beside_the_table_are_the_tables(execution):
    """step_times keeps the metrics' totals and builds its table only when ``ops`` is read: the totals equal what
    the table gives, to the last bit, and the table is built once."""
    trace = _workload_with_writebacks()
    result = lab.simulate(trace, "FIFO", 5.0, cost="H100-SXM5", buffer="scratchpad")
    times = timing.step_time_of(result, trace, execution, cost=UNIT)  # slow DRAM: some ops memory-bound
    kept = times.metrics()
    table = times.ops
    assert times.ops is table and len(table) == 13 and table["op"].iloc[-1] == timing.FLUSH
    from_table = timing.StepTime(table, execution).metrics()  # no totals: each read from the table
    assert kept == from_table and kept["memory_bound_ops"] > 0
    assert kept["step_time_ms"] == float(table["end_ms"].iloc[-1]) > 0
    assert timing.UNTIMED.ops is None and all(math.isnan(v) for v in timing.UNTIMED.metrics().values())


@pytest.mark.parametrize("by", ["phase", "layer", "module"])
def test_the_exposed_times_sum_to_the_step_time(by):
    trace = _workload_with_writebacks()
    result = lab.simulate(trace, "LRU", 5.0, cost="H200")
    table = lab.time_breakdown(result, trace, by=by)
    assert table["exposed_ms"].sum() == pytest.approx(result.metrics["step_time_ms"], rel=1e-12)
    assert table["ops"].sum() == 12 and "(flush)" in table.index
    assert (table["exposed_ms"] >= table["gpu_ms"] - 1e-15).all()
    if by == "module":
        assert "model.layers.*.mlp.fc0" in table.index  # grouped across layers
    if by == "layer":
        assert table.index[:3].tolist() == [0, 1, 2]


def test_a_trace_is_host_bound_in_eager_mode_and_gpu_bound_in_graph_mode():
    trace = _workload_with_writebacks()
    result = lab.simulate(trace, "LRU", 5.0, cost="H200")
    eager = timing.step_time_of(result, trace)
    graph = timing.step_time_of(result, trace, execution="graph")
    assert eager.step_time_ms >= eager.host_time_ms > 0 and graph.host_time_ms == 0
    assert graph.step_time_ms == pytest.approx(4e-3 + graph.gpu_time_ms)  # launch latency, then the GPU
    ops = lab.time_breakdown(result, trace, by="op")
    assert ops["exposed_ms"].sum() == pytest.approx(eager.step_time_ms)
    assert result.metrics["memory_bound_ops"] == int(ops["bound"].iloc[:-1].isin(["dram", "on-chip"]).sum())


def test_the_seed_preset_gives_nan_and_a_note_in_simulate_and_a_one_line_error_in_step_time():
    trace = _workload_with_writebacks()
    result = lab.simulate(trace, "LRU", 5.0)
    assert all(math.isnan(result.metrics[k]) for k in timing.TIME_METRICS)
    assert result.note.startswith("No step time: cost preset 'seed' has no physical numbers")
    assert result.metrics["dram_traffic_mb"] == lab.simulate(trace.drop(columns="op_index"), "LRU", 5.0
                                                             ).metrics["dram_traffic_mb"]
    with pytest.raises(ValueError, match="cost preset 'seed' has no physical numbers") as error:
        lab.step_time(result, trace)
    assert "\n" not in str(error.value)
    assert lab.step_time(result, trace, cost="H200") > 0  # the bytes are there: another preset prices them


def test_a_trace_without_op_index_has_no_time_metrics_and_step_time_says_why():
    trace = _workload_with_writebacks().drop(columns="op_index")
    result = lab.simulate(trace, "LRU", 5.0, cost="H200")
    assert "step_time_ms" not in result.metrics and result.note == "" and result.op_bytes is None
    with pytest.raises(ValueError, match="no 'op_index' column") as error:
        lab.step_time(result, trace)
    assert "\n" not in str(error.value)


def test_a_dtype_missing_from_peak_tflops_is_named():
    trace = _workload_with_writebacks()
    fp32_only = replace(lab.HARDWARE_PRESETS["H200"], name="fp32-only", peak_tflops={"float32": 60.0})
    result = lab.simulate(trace, "LRU", 5.0, cost=fp32_only)
    assert math.isnan(result.metrics["step_time_ms"]) and "'bfloat16'" in result.note
    with pytest.raises(ValueError, match="no entry for dtype 'bfloat16'"):
        lab.step_time(result, trace)
    no_flops = trace.assign(flops=0.0)  # ops that compute nothing need no peak
    assert lab.step_time(lab.simulate(no_flops, "LRU", 5.0, cost=fp32_only), no_flops) > 0


@pytest.mark.parametrize("fields, fragment", [
    ({"onchip_bandwidth_gb_s": -1.0}, "CostModel.onchip_bandwidth_gb_s"),
    ({"onchip_bandwidth_gb_s": 0.0}, "CostModel.onchip_bandwidth_gb_s must be a number > 0"),
    ({"dram_efficiency": 0.0}, r"CostModel.dram_efficiency must be a number in \(0, 1\]"),
    ({"compute_efficiency": 1.5}, "CostModel.compute_efficiency"),
    ({"host_dispatch_us": -2.0}, "CostModel.host_dispatch_us"),
    ({"peak_tflops": {"bfloat16": -989.0}}, r"CostModel.peak_tflops\['bfloat16'\]"),
    ({"memory_combine": "mean"}, "CostModel.memory_combine must be one of"),
    ({"gemm_tile": (128,)}, "CostModel.gemm_tile must be a pair"),
])
def test_bad_physical_numbers_are_refused_naming_the_field(fields, fragment):
    with pytest.raises(ValueError, match=fragment):
        replace(lab.HARDWARE_PRESETS["H200"], **fields)


def test_the_gpu_presets_have_the_numbers_and_the_seed_has_none():
    for name in ("H200", "H100-SXM5", "A100-SXM4-40GB"):
        preset = lab.HARDWARE_PRESETS[name]
        assert preset.missing_time_fields == [] and hash(preset)
    assert lab.HARDWARE_PRESETS["H200"].peak_tflops_for("torch.bfloat16") == 989.4  # dense: half the sheet's 1,979
    assert set(lab.HARDWARE_PRESETS["seed"].missing_time_fields) >= {"peak_tflops", "host_dispatch_us"}
    assert CostModel(peak_tflops={"float16": 1.0, "bfloat16": 2.0}).peak_tflops == (("bfloat16", 2.0),
                                                                                  ("float16", 1.0))


def test_op_table_has_one_row_per_op_with_its_first_values_and_its_bytes():
    trace = _workload_with_writebacks()
    table = op_table(trace)
    assert table.index.tolist() == list(range(12)) and (table["rows"] == 3).all()
    assert table["read_bytes"].sum() == 12 * 2 * 2 * 2**20 and table["write_bytes"].sum() == 12 * 2 * 2**20
    assert table["flops"].tolist() == [1e6] * 12 and table["dtype"].unique().tolist() == ["bfloat16"]
    assert table["phase"].tolist() == ["forward"] * 8 + ["backward"] * 4
    generated = trace.drop(columns=["op_index", "flops", "launches", "host_calls", "grad_mode"])
    defaults = op_table(generated[generated["access"] != "persist"])
    assert len(defaults) == 12 and (defaults["launches"] == 1).all() and (defaults["flops"] == 0).all()


def test_op_index_of_reads_the_column_or_the_data_flow():
    is_write = np.array([False, False, True, False, True, True, False, True])
    assert heuristic_op_index(is_write).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    trace = _workload_with_writebacks()
    assert op_index_of(trace).tolist()[-2:] == [-1, -1]
    assert op_index_of(trace, fill=True).tolist()[-2:] == [11, 11]
    without = trace.drop(columns="op_index")
    assert op_index_of(without[without["access"] != "persist"]).tolist() == list(np.repeat(np.arange(12), 3))
    with pytest.raises(ValueError, match="op_index' must number ops in trace order"):
        op_index_of(trace.assign(op_index=trace["op_index"][::-1].to_numpy()))
    with pytest.raises(ValueError, match="op_index' must hold integers >= -1"):
        op_index_of(trace.assign(op_index=0.5))


def test_the_cache_model_is_unchanged_when_op_index_equals_the_data_flow_ops():
    trace = _workload_with_writebacks()
    trace = trace[trace["access"] != "persist"]
    timed = lab.simulate(trace, "FIFO", 5.0, cost="H200")
    plain = lab.simulate(trace.drop(columns="op_index"), "FIFO", 5.0, cost="H200")
    assert {k: v for k, v in timed.metrics.items() if k not in timing.TIME_METRICS} == plain.metrics


def test_the_optimums_per_op_bytes_add_up_to_its_traffic_and_give_its_step_time():
    trace = _workload_with_writebacks()
    best = lab.optimal(trace, 5.0, cost="H200")
    ops, read, write, outside = best.op_bytes
    assert int(read.sum() + write.sum() + outside) == round(best.metrics["dram_traffic_mb"] * BYTES_PER_MB)
    assert best.metrics["dram_traffic_mb"] == pytest.approx(best.upper_mb)
    assert outside > 0  # the persisted tensors' writebacks, at their marks
    assert best.metrics["step_time_ms"] == pytest.approx(lab.step_time(best, trace)) and best.note == ""
    lru = lab.simulate(trace, "LRU", 5.0, cost="H200", buffer="scratchpad")
    assert best.metrics["dram_traffic_mb"] <= lru.metrics["dram_traffic_mb"]
    seed = lab.optimal(trace, 5.0)
    assert math.isnan(seed.metrics["step_time_ms"]) and seed.note.startswith("No step time")


def test_gpt2s_lm_head_at_batch_8_moves_the_l2_bytes_nsight_measured():
    """GPT-2's LM head at batch 8 x 1,024 tokens (8,192 x 768 by 768 x 50,257 in bf16, 128 x 128 tiles): the tile
    re-reads give 10.7 GB through the L2, as ncu's lts__t_bytes measured on the H200 (10.7 GiB, issue 26's plan),
    and the vocabulary, not a multiple of 8, selects the misaligned fallback's efficiency."""
    m, n, k = 8192, 50257, 768
    head = {"name": "aten.mm", "flops": 2.0 * m * n * k,
            "reads": [("hidden", m * k * 2 / BYTES_PER_MB, (m, k)), ("wte", k * n * 2 / BYTES_PER_MB, (k, n))],
            "writes": [("logits", m * n * 2 / BYTES_PER_MB, (m, n))]}
    ops = op_table(_trace([head]))
    assert timing.onchip_bytes(ops, (128, 128)).tolist() == [2 * (m * k * 393 + k * n * 64 + m * n)]  # 10.71e9
    assert bool(ops["misaligned"].iloc[0])
    h200 = lab.HARDWARE_PRESETS["H200"]
    row = timing.step_times(ops, [0], [0], 0, h200).ops.iloc[0]
    assert row["compute_ms"] == pytest.approx(2.0 * m * n * k / (989.4e12 * h200.misaligned_gemm_efficiency) * 1e3)
