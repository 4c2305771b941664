import pandas as pd
import pytest

import lab
from lab.analysis.attribution import dram_traffic_by


def test_traffic_adds_up_and_goes_to_the_right_group():
    trace = pd.DataFrame({
        "tensor_id": ["w", "x", "y", "x", "w", "y"],
        "size_mb": [4.0, 2.0, 2.0, 2.0, 4.0, 2.0],
        "access": ["read", "write", "write", "read", "read", "read"],
        "kind": ["weight", "activation", "activation", "activation", "weight", "activation"],
    })
    result = lab.simulate(trace, "FIFO", capacity_mb=6)
    table = dram_traffic_by(result, trace)
    m = result.metrics
    assert table["dram_read_mb"].sum() == pytest.approx(m["dram_reads_mb"])
    assert table["dram_write_mb"].sum() == pytest.approx(m["dram_writes_mb"])
    assert table["share_pct"].sum() == pytest.approx(100)
    # y's write evicts w (clean: no writeback); x is dropped after its last read, so w's second read
    # fits again: the weight's two reads are all the traffic
    assert table.loc["weight", "dram_read_mb"] == 8.0 and table["dram_write_mb"].sum() == 0


def test_writebacks_count_for_the_evicted_tensors_group():
    trace = pd.DataFrame({
        "tensor_id": ["a", "b", "a"], "size_mb": [1.0, 1.0, 1.0],
        "access": ["write", "read", "read"], "kind": ["activation", "weight", "activation"],
    })
    table = dram_traffic_by(lab.simulate(trace, "LRU", capacity_mb=1), trace)
    assert table.loc["activation", "dram_write_mb"] == 1.0  # a, dirty and read again, written back
    assert table.loc["weight", "dram_read_mb"] == 1.0


def test_bad_group_column():
    trace = pd.DataFrame({"tensor_id": ["a"], "size_mb": [1.0]})
    with pytest.raises(ValueError, match="no column 'phase'"):
        dram_traffic_by(lab.simulate(trace), trace, by="phase")
