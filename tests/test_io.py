import os

import numpy as np
import pandas as pd
import pytest

import lab
from lab.trace.io import ORACLE_GENERAL_DTYPE
from lab.units import BYTES_PER_MB


@pytest.fixture
def trace():
    return pd.DataFrame(
        {
            "tensor_id": ["Q_0", "K_0", "Q_0", "V_0"],
            "size_mb": [16.0, 8.0, 16.0, 0.5],
            "reuse_distance": [np.nan, np.nan, 2.0, np.nan],
            "stride": [1, 1, 1, 2],
            "op": ["attention"] * 4,
            "model_type": ["Transformer"] * 4,
        }
    )


@pytest.mark.parametrize("name", ["t.parquet", "t.pq", "t.csv", "T.CSV"])
def test_parquet_and_csv_round_trip_every_column(trace, tmp_path, name):
    path = lab.write_trace(trace, tmp_path / name)
    pd.testing.assert_frame_equal(lab.read_trace(path), trace, check_dtype=False)


def test_oracle_general_records(trace, tmp_path):
    path = lab.write_trace(trace, tmp_path / "t.oracleGeneral.bin")
    assert path.stat().st_size == 4 * 24
    records = np.fromfile(path, dtype=ORACLE_GENERAL_DTYPE)
    assert records["time"].tolist() == [0, 1, 2, 3]
    assert records["obj_id"].tolist() == [0, 1, 0, 2]
    assert records["obj_size"].tolist() == [16 * BYTES_PER_MB, 8 * BYTES_PER_MB, 16 * BYTES_PER_MB, BYTES_PER_MB // 2]
    assert records["next_access_vtime"].tolist() == [2, -1, -1, -1]
    back = lab.read_trace(path)
    assert back["size_mb"].tolist() == trace["size_mb"].tolist()
    assert back["next_access"].tolist() == [2, -1, -1, -1]
    # the same trace gives the same simulation after the round trip
    for policy in ("LRU", "FIFO", "Belady"):
        a = lab.simulate(trace, policy, capacity_mb=20).hit
        b = lab.simulate(back, policy, capacity_mb=20).hit
        np.testing.assert_array_equal(a, b)


def test_oracle_general_keeps_non_negative_integer_ids(tmp_path):
    trace = pd.DataFrame({"tensor_id": [70, 5, 70], "size_mb": [1.0, 2.0, 1.0]})
    back = lab.read_trace(lab.write_trace(trace, tmp_path / "t.oracleGeneral"))
    assert back["tensor_id"].tolist() == [70, 5, 70]


def test_failed_write_leaves_nothing_behind(tmp_path):
    too_big = pd.DataFrame({"tensor_id": ["a"], "size_mb": [5000.0]})
    with pytest.raises(ValueError, match="uint32"):
        lab.write_trace(too_big, tmp_path / "t.oracleGeneral.bin")
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(trace, tmp_path):
    path = lab.write_trace(trace, tmp_path / "t.oracleGeneral.bin")
    before = path.read_bytes()
    with pytest.raises(ValueError):
        lab.write_trace(pd.DataFrame({"tensor_id": ["a"], "size_mb": [5000.0]}), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["t.oracleGeneral.bin"]


def test_invalid_traces_are_not_written(tmp_path):
    with pytest.raises(ValueError, match="size_mb"):
        lab.write_trace(pd.DataFrame({"tensor_id": ["a"], "size_mb": [-1.0]}), tmp_path / "t.csv")
    assert os.listdir(tmp_path) == []


def test_unknown_format(trace, tmp_path):
    with pytest.raises(ValueError, match=r"cannot tell the trace format.*\.csv"):
        lab.write_trace(trace, tmp_path / "t.txt")
    with pytest.raises(ValueError, match=r"unknown trace format 'json'; known: \['parquet', 'csv', 'oracleGeneral'\]"):
        lab.read_trace(tmp_path / "t.txt", format="json")
    assert lab.read_trace(lab.write_trace(trace, tmp_path / "t.txt", format="CSV"), format="csv").shape == trace.shape


def test_truncated_oracle_general_file(tmp_path):
    path = tmp_path / "t.oracleGeneral"
    path.write_bytes(b"\0" * 25)
    with pytest.raises(ValueError, match="not a multiple of the 24-byte record"):
        lab.read_trace(path)
