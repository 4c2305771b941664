"""The hardware-cache buffer model (``lab.simulate(..., buffer="cache")``) on tiny hand-made traces."""

import time

import numpy as np
import pandas as pd
import pytest

import lab
from lab.sim.hardware import CacheModel, assign_addresses, gemm_rereads
from lab.units import BYTES_PER_MB

LINE = 4096
# one line per 4 KiB, the whole capacity usable, no GEMM model, operands in trace order
PLAIN = CacheModel(line_bytes=LINE, effective_fraction=1.0, tiling=False, interleave=False)


def trace_of(rows):
    """A trace from (tensor_id, bytes, access[, op[, shape]]) rows."""
    rows = [r + ("aten.add", "(1,)")[len(r) - 3:] for r in rows]
    return pd.DataFrame({"tensor_id": [r[0] for r in rows], "size_mb": [r[1] / BYTES_PER_MB for r in rows],
                         "access": [r[2] for r in rows], "op": [r[3] for r in rows], "shape": [r[4] for r in rows]})


def cache(trace, capacity_bytes=64 * LINE, model=PLAIN, policy="LRU"):
    return lab.simulate(trace, policy, capacity_bytes / BYTES_PER_MB, buffer="cache", cache_model=model)


def test_reads_move_whole_lines():
    result = cache(trace_of([("W", 10_000, "read")]))
    assert result.metrics["bytes_from_dram"] == 3 * LINE  # 10,000 bytes span three 4 KiB lines
    assert result.metrics["dram_writes_mb"] == 0


def test_dirty_lines_are_written_back_at_the_end_even_if_dead():
    trace = trace_of([("X", 2 * LINE, "write")])
    result = cache(trace)
    assert result.metrics["dram_writes_mb"] * BYTES_PER_MB == 2 * LINE
    assert result.metrics["final_writeback_mb"] * BYTES_PER_MB == 2 * LINE
    no_flush = cache(trace, model=CacheModel(line_bytes=LINE, effective_fraction=1.0, tiling=False,
                                             flush_at_end=False))
    assert no_flush.metrics["dram_writes_mb"] == 0
    # the scratchpad knows X is dead after its write and drops it: nothing reaches DRAM
    assert lab.simulate(trace, "LRU", 1.0).metrics["dram_writes_mb"] == 0


def test_dirty_lines_evicted_are_written_back_without_liveness():
    # X is written and never used again; reading W (two lines) evicts it from a two-line cache
    trace = trace_of([("X", 2 * LINE, "write"), ("W", 2 * LINE, "read")])
    result = cache(trace, capacity_bytes=2 * LINE)
    assert result.metrics["writebacks"] == 2
    assert result.metrics["final_writeback_mb"] == 0
    assert result.metrics["dram_writes_mb"] * BYTES_PER_MB == 2 * LINE
    assert result.metrics["dead_drops"] == 0
    scratch = lab.simulate(trace, "LRU", 2 * LINE / BYTES_PER_MB)
    assert scratch.metrics["dram_writes_mb"] == 0 and scratch.metrics["dead_drops"] == 2


def test_a_write_allocates_without_a_read_and_a_reread_hits():
    result = cache(trace_of([("X", LINE, "write"), ("X", LINE, "read"), ("X", LINE, "read")]))
    assert result.metrics["bytes_from_dram"] == 0
    assert result.metrics["cache_hits"] == 2 and result.metrics["write_allocations"] == 1


def test_freed_memory_is_reused_and_its_dirty_lines_coalesce():
    # A dies after op 1; B (same size) is allocated at op 2 at A's address: its write hits A's dirty line
    trace = trace_of([("A", LINE, "write"), ("A", LINE, "read"), ("C", LINE, "write"), ("C", LINE, "read"),
                      ("B", LINE, "write")])
    lo, _ = assign_addresses(trace)
    assert lo[4] == lo[0] and lo[2] != lo[0]
    result = cache(trace)
    assert result.metrics["dram_writes_mb"] * BYTES_PER_MB == 2 * LINE  # A/B's line and C's, not three


def test_a_view_addresses_the_storage_it_aliases():
    trace = trace_of([("A", 2 * LINE, "write"), (f"A[bytes {LINE}:{2 * LINE}]", LINE, "read")])
    lo, hi = assign_addresses(trace)
    assert lo[1] == lo[0] + LINE and hi[1] == lo[0] + 2 * LINE
    assert cache(trace).metrics["bytes_from_dram"] == 0  # produced on chip, read through the view: a hit


def test_gemm_rereads_the_small_operand_once_per_panel_of_the_large_one():
    capacity = 64 * LINE
    big = 5 * capacity // 2  # 2.5 caches: five panels of half the cache
    trace = trace_of([("A", 8 * LINE, "read", "aten.mm", "(64, 64)"), ("B", big, "read", "aten.mm", "(64, 99)"),
                      ("C", 8 * LINE, "write", "aten.mm", "(64, 99)")])
    extra = gemm_rereads(trace, capacity, CacheModel())
    assert extra.tolist() == [4, 0, 0]
    assert gemm_rereads(trace, capacity, CacheModel(tiling=False)).tolist() == [0, 0, 0]
    # operands that fit: no re-reads
    assert gemm_rereads(trace, 100 * capacity, CacheModel()).tolist() == [0, 0, 0]


def test_scratchpad_is_the_default_and_unchanged(small_trace):
    a = lab.simulate(small_trace, "LRU", 20)
    b = lab.simulate(small_trace, "LRU", 20, buffer="scratchpad")
    assert a.metrics == b.metrics


@pytest.mark.parametrize("buffer, error", [("x", ValueError), ("Cache", ValueError), (1, TypeError)])
def test_bad_buffer_names_the_argument_and_the_choices(buffer, error, small_trace):
    with pytest.raises(error, match=r"buffer must be one of \['scratchpad', 'cache'\]"):
        lab.simulate(small_trace, "LRU", 20, buffer=buffer)


def test_bad_cache_model_is_a_type_error(small_trace):
    with pytest.raises(TypeError, match="cache_model"):
        lab.simulate(small_trace, "LRU", 20, buffer="cache", cache_model="big")


@pytest.mark.parametrize("field,value", [("line_bytes", 100), ("line_bytes", 3000), ("effective_fraction", 0.0),
                                         ("effective_fraction", 1.5), ("panel_fraction", -1.0)])
def test_bad_cache_model_fields_are_named(field, value):
    with pytest.raises(ValueError, match=f"CacheModel.{field}"):
        CacheModel(**{field: value})


def test_cache_mode_without_access_column_reads_only(small_trace):
    result = lab.simulate(small_trace, "LRU", 20, buffer="cache")
    assert result.metrics["dram_writes_mb"] == 0
    assert result.metrics["dram_reads_mb"] > 0


def test_h200_preset():
    h200 = lab.HARDWARE_PRESETS["h200"]
    assert h200.buffer_mb == 60.0 and h200.dram_bandwidth_gb_s == 4800.0
    assert np.isclose(h200.transfer_ms(4.8e9), 1.0)  # 4.8 GB in 1 ms


def test_cli_simulate_takes_the_buffer(capsys, tmp_path):
    from lab.cli import main

    path = tmp_path / "t.csv"
    trace_of([("X", 2 * LINE, "write"), ("W", 2 * LINE, "read")]).to_csv(path, index=False)
    assert main(["simulate", "--trace", str(path), "--capacity_mb", str(2 * LINE / BYTES_PER_MB), "--buffer",
                 "cache", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"writebacks": 2' in out
    with pytest.raises(SystemExit) as exit:  # refused while reading the flags, before any work
        main(["simulate", "--trace", str(path), "--buffer", "x"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "buffer must be one of" in err and err.count("\n") == 1


def test_an_op_sweeps_its_input_and_output_together():
    # a two-line cache; op 1 reads X (two lines, resident and dirty) and writes Y (two lines)
    trace = trace_of([("X", 2 * LINE, "write"), ("X", 2 * LINE, "read"), ("Y", 2 * LINE, "write")])
    one_by_one = cache(trace, capacity_bytes=2 * LINE)
    assert one_by_one.metrics["bytes_from_dram"] == 0  # X read whole, then Y evicts it
    swept = cache(trace, capacity_bytes=2 * LINE, model=CacheModel(line_bytes=LINE, effective_fraction=1.0,
                                                                   tiling=False))
    # X0, Y0 (evicts X1), X1 (a miss), Y1: Y's writes compete with X's reads
    assert swept.metrics["bytes_from_dram"] == LINE


def test_cache_mode_takes_a_workload_and_reports_per_line_access():
    trace = trace_of([("W", 3 * LINE, "read"), ("X", LINE, "write"), ("W", 3 * LINE, "read")])
    from_frame = cache(trace)
    from_workload = cache(lab.encode_trace(trace))
    assert from_frame.metrics == from_workload.metrics
    frame = from_frame.to_frame()
    assert len(frame) == 7 and frame["hit"].tolist() == [False] * 4 + [True] * 3  # line accesses
    assert frame["write_allocated"].tolist() == [False] * 3 + [True] + [False] * 3
    assert from_frame.metrics["accesses"] == 7


def test_cache_mode_of_a_workload_without_its_trace_is_refused(small_trace):
    workload = lab.encode_trace(small_trace)
    bare = lab.Workload(codes=workload.codes, tensor_bytes=workload.tensor_bytes, access_bytes=workload.access_bytes,
                        is_write=workload.is_write, id_values=workload.id_values)
    with pytest.raises(ValueError, match="needs the trace's columns"):
        lab.simulate(bare, "LRU", 20, buffer="cache")


def test_the_line_trace_is_shared_by_content_and_rebuilt_when_the_trace_changes(monkeypatch):
    from lab.sim import hardware

    monkeypatch.setattr(hardware, "_line_cache", type(hardware._line_cache)())
    built = []
    line_trace = hardware.line_trace
    monkeypatch.setattr(hardware, "line_trace", lambda *a: built.append(1) or line_trace(*a))
    trace = trace_of([("W", 10 * LINE, "read"), ("X", 4 * LINE, "write"), ("W", 10 * LINE, "read")])
    first = {p: cache(trace, 8 * LINE, policy=p).metrics for p in ("LRU", "FIFO")}
    again = cache(trace.copy(), 8 * LINE, policy="LRU").metrics  # an equal trace: the same line trace
    assert len(built) == 1 and again == first["LRU"]
    trace.loc[1, "size_mb"] = 8 * LINE / BYTES_PER_MB  # changed in place: a new line trace, new numbers
    changed = cache(trace, 8 * LINE, policy="LRU").metrics
    assert len(built) == 2 and changed["dram_writes_mb"] == 2 * first["LRU"]["dram_writes_mb"]
    monkeypatch.setattr(hardware, "LINE_CACHE_BYTES", 0)  # nothing kept: built every time, same numbers
    hardware.clear_line_cache()
    assert cache(trace, 8 * LINE, policy="LRU").metrics == changed and len(built) == 3
    assert cache(trace, 8 * LINE, policy="LRU").metrics == changed and len(built) == 4


def test_threads_asking_for_one_line_trace_build_it_once(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from lab.sim import hardware

    monkeypatch.setattr(hardware, "_line_cache", type(hardware._line_cache)())
    built = []
    line_trace = hardware.line_trace
    monkeypatch.setattr(hardware, "line_trace", lambda *a: built.append(1) or time.sleep(0.2) or line_trace(*a))
    trace = trace_of([("W", 10 * LINE, "read"), ("X", 4 * LINE, "write"), ("W", 10 * LINE, "read")])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: cache(trace, 8 * LINE, policy=p).metrics, ["LRU", "FIFO", "LRU", "ARC"]))
    assert len(built) == 1 and results[0] == results[2]
