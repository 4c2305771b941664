import numpy as np
import pandas as pd

from lab.trace.kernels import NEVER, next_access_positions
from lab.trace import encode_trace


def test_codes_follow_first_access_order():
    enc = encode_trace(pd.DataFrame({"tensor_id": ["b", "a", "b", "c"], "size_mb": [2.0, 1.0, 2.0, 0.5]}))
    assert enc.codes.tolist() == [0, 1, 0, 2]
    assert enc.tensor_ids.tolist() == ["b", "a", "c"]
    assert enc.tensor_bytes.tolist() == [2 * 2**20, 2**20, 2**19]
    assert enc.access_bytes.tolist() == [2 * 2**20, 2**20, 2 * 2**20, 2**19]


def test_sizes_round_to_whole_bytes_and_at_least_one():
    enc = encode_trace(pd.DataFrame({"tensor_id": ["a", "b"], "size_mb": [1.4 / 2**20, 1e-12]}))
    assert enc.tensor_bytes.tolist() == [1, 1]


def test_next_access_positions():
    codes = np.array([0, 1, 0, 2, 1, 0], dtype=np.int64)
    assert next_access_positions(codes, 3).tolist() == [2, 4, 5, NEVER, NEVER, NEVER]


def test_column_or_reads_an_optional_column_or_its_default():
    from lab.trace.schema import column_or

    plain = pd.DataFrame({"tensor_id": ["a", "b", "a"], "size_mb": [1.0, 2.0, 1.0]})
    flows = plain.assign(access=["read", "write", "persist"])
    assert (column_or(plain, "access", "read", object) == "write").tolist() == [False, False, False]
    assert (column_or(flows, "access", "read", object) == "write").tolist() == [False, True, False]
    assert column_or(plain, "op", "").tolist() == ["", "", ""] and column_or(plain, "op", "").dtype == object
    assert column_or(encode_trace(plain), "is_write", False, np.bool_).tolist() == [False, False, False]
    assert column_or(encode_trace(flows), "is_persist", False, np.bool_).tolist() == [False, False, True]
    assert column_or(encode_trace(plain.iloc[:0]), "is_write", False, np.bool_).shape == (0,)
