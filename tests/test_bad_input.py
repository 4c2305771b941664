"""The catalogue of bad input: each case a call, the exception it must raise and a fragment of its message
(the argument named, what is accepted). Grows with every fix; the cases that are not one call (files, the CLI's
exit codes, pipes) follow the table."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lab
import lab.ui.report
from lab.cli import main
from lab.trace.io import atomic_path, write_table

SMALL = pd.DataFrame({"tensor_id": ["a", "b", "a"], "size_mb": [1.0, 2.0, 1.0]})

def _empty_notebook():
    import tempfile

    import nbformat
    from nbformat.v4 import new_notebook

    path = Path(tempfile.mkdtemp()) / "empty.ipynb"
    nbformat.write(new_notebook(), path)
    return path


CATALOGUE = [
    # (case, call, exception, message fragment)
    ("capacity 0", lambda: lab.simulate(SMALL, "LRU", 0), ValueError, "capacity_mb"),
    ("a local cluster of no worker", lambda: lab.local_cluster(0), ValueError, "workers must be an integer >= 1"),
    ("a local cluster of '2' workers", lambda: lab.local_cluster("2"), ValueError, "workers must be an integer"),
    ("capacity NaN", lambda: lab.simulate(SMALL, "LRU", float("nan")), ValueError, "capacity_mb"),
    ("unknown policy", lambda: lab.simulate(SMALL, "LRUX", 4), (ValueError, TypeError), "LRU"),
    ("unknown buffer model", lambda: lab.simulate(SMALL, "LRU", 4, buffer="l2"), ValueError, "buffer must be one of"),
    ("no policy in a comparison", lambda: lab.compare_policies(SMALL, policies=[]), ValueError, "at least one"),
    ("one capacity where a list is expected", lambda: lab.sweep_capacity(SMALL, ["LRU"], capacities_mb=64),
     TypeError, "capacities_mb must be a list"),
    ("no capacity in a sweep", lambda: lab.sweep_capacity(SMALL, ["LRU"], capacities_mb=[]), ValueError,
     "at least one capacity"),
    ("optimum neither bool nor 'auto'", lambda: lab.sweep_capacity(SMALL, ["LRU"], [4], optimum="yes"), TypeError,
     "optimum must be True, False or 'auto'"),
    ("unknown sweep method", lambda: lab.sweep_capacity(SMALL, ["LRU"], [4], method="fast"), ValueError,
     "method must be one of"),
    ("no one-pass algorithm", lambda: lab.sweep_capacity(SMALL, ["FIFO"], [4], method="one-pass", optimum=False),
     ValueError, "no one-pass algorithm for FIFO"),
    ("sizes whose total overflows int64",
     lambda: lab.encode_trace(pd.DataFrame({"tensor_id": range(8), "size_mb": 2.0**40})), ValueError,
     "more than lab counts exactly"),
    ("a size of 0", lambda: lab.simulate(pd.DataFrame({"tensor_id": ["a"], "size_mb": [0.0]}), "LRU", 1),
     ValueError, "size_mb"),
    ("an empty trace for the optimum", lambda: lab.optimal(SMALL.iloc[:0], 4), ValueError, "empty"),
    ("an empty trace for a curve", lambda: lab.miss_ratio_curve(SMALL.iloc[:0], "LRU", [4]), ValueError, "empty"),
    ("an unknown optimum solver", lambda: lab.optimal(SMALL, 4, solver="cplex"), ValueError, "solver must be"),
    ("a generated trace too large for memory", lambda: lab.generate_trace("Transformer", num_layers=10**9),
     ValueError, r"num_layers=1000000000 would generate about .* GiB"),
    ("a batch whose sizes overflow", lambda: lab.generate_trace("Transformer", batch_size=10**18), ValueError,
     "do not fit 64-bit byte counts"),
    ("a sequence whose sizes overflow", lambda: lab.generate_trace("Transformer", seq_length=10**9), ValueError,
     "do not fit 64-bit byte counts"),
    ("an infinite reuse distance", lambda: lab.score(SMALL.assign(reuse_distance=[np.nan, np.nan, np.inf])),
     ValueError, "reuse_distance' must hold finite"),
    ("a duplicated index", lambda: lab.simulate(SMALL.set_axis([0, 0, 1]), "LRU", 4), ValueError,
     "duplicated index"),
    ("a duplicated column", lambda: lab.simulate(pd.concat([SMALL, SMALL[["size_mb"]]], axis=1), "LRU", 4),
     ValueError, r"duplicated column\(s\) \['size_mb'\]"),
    ("a boolean size", lambda: lab.simulate(pd.DataFrame({"tensor_id": ["a"], "size_mb": [True]}), "LRU", 4),
     ValueError, "'size_mb' must hold real numbers"),
    ("a complex size", lambda: lab.simulate(pd.DataFrame({"tensor_id": ["a"], "size_mb": [1 + 2j]}), "LRU", 4),
     ValueError, "'size_mb' must hold real numbers"),
    ("ids 1, 1.0 and True", lambda: lab.encode_trace(pd.DataFrame({"tensor_id": [1, 1.0, True], "size_mb": 1.0})),
     ValueError, "'tensor_id' must hold strings or integers of one type"),
    ("list-typed ids", lambda: lab.encode_trace(pd.DataFrame({"tensor_id": [[1], [2]], "size_mb": 1.0})),
     ValueError, r"'tensor_id' must hold strings or integers of one type \(got mixed values, among them list \[1\]\)"),
    ("an unknown trace format", lambda: lab.write_trace(SMALL, "t.parquet", format=123), ValueError,
     "unknown trace format 123"),
    ("a latency that would overflow the totals", lambda: lab.CostModel(hit_latency_ms=1e308), ValueError,
     "CostModel.hit_latency_ms"),
    ("a bandwidth of almost nothing", lambda: lab.CostModel(dram_bandwidth_gb_s=1e-300), ValueError,
     "dram_bandwidth_gb_s must be at least"),
    ("no capacity points", lambda: lab.default_capacities_mb(SMALL, 0), ValueError, "points must be an integer >= 1"),
    ("an answer table that is not a table", lambda: lab.ui.report.show_answer([1, 2], "Which?"), TypeError,
     "table must be a pandas DataFrame"),
    ("an answer without its question", lambda: lab.ui.report.show_answer(SMALL, " "), ValueError,
     "question must be a non-empty string"),
    ("a notebook without an answer", lambda: lab.ui.report.read_answer(_empty_notebook()), ValueError,
     "no answer table"),
    ("predict_compile's optimum neither bool nor 'auto'", lambda: lab.predict_compile(SMALL, 4, optimum="yes"),
     TypeError, "optimum must be True, False or 'auto'"),
    ("an infinite stride", lambda: lab.score(SMALL.assign(stride=[1.0, np.inf, 1.0])), ValueError,
     "stride' must hold finite"),
]


CAPTURE_CATALOGUE = [
    ("a negative seed", {"seed": -1}, ValueError, "seed must be an integer >= 0"),
    ("a fractional seed", {"seed": 1.5}, ValueError, "seed must be an integer >= 0"),
    ("a routing skew as text", {"routing_skew": "2"}, ValueError, "routing_skew must be a finite number"),
    ("a NaN routing skew", {"routing_skew": float("nan")}, ValueError, "routing_skew must be a finite number"),
    ("training as text", {"training": "no"}, TypeError, "training must be True or False"),
    ("more tokens than GPT-2 has positions", {"seq_length": 100_000}, ValueError, "longer than gpt2's 1024 positions"),
    ("a negative width", {"hidden_size": -1}, ValueError, "override hidden_size of gpt2 must be an integer >= 1"),
    ("a vocabulary of 0", {"vocab_size": 0}, ValueError, "override vocab_size of gpt2 must be an integer >= 1"),
    ("a width as text", {"n_embd": "768"}, ValueError, "override n_embd of gpt2 must be an integer"),
    ("heads that do not divide the width", {"num_attention_heads": 7}, ValueError,
     "do not make a valid gpt2: .*divisible by num_heads"),
    ("a million layers", {"num_layers": 10**6}, ValueError, "1,000,000 layers would capture at least 10,000,000 "
     "accesses and need at least 30.7 GiB"),
    ("a hundred million layers by the config's alias", {"num_layers": None, "num_hidden_layers": 10**8}, ValueError,
     "100,000,000 layers would capture"),
    ("sizes too large to count", {"batch_size": 10**13, "seq_length": 1024}, ValueError,
     "too large to count"),
]


@pytest.mark.parametrize("case, kwargs, error, fragment", CAPTURE_CATALOGUE, ids=[c[0] for c in CAPTURE_CATALOGUE])
def test_bad_capture_arguments_get_a_clear_error(case, kwargs, error, fragment, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    with pytest.raises(error, match=fragment):
        lab.capture_model("gpt2", **{"num_layers": 1, "seq_length": 16, **kwargs})


def _linear():
    import torch

    return torch.nn.Linear(2, 2)


def _ones(*shape):
    import torch

    return torch.ones(*shape)


CAPTURE_TRACE_CATALOGUE = [
    ("a function for a module", lambda: (lambda x: x, (_ones(2),)), TypeError, "module must be a torch.nn.Module"),
    ("no inputs", lambda: (_linear(), None), TypeError, "example_inputs must be a tensor, a tuple"),
    ("a number for inputs", lambda: (_linear(), 5), TypeError, "example_inputs must be a tensor, a tuple"),
    ("inputs of the wrong shape", lambda: (_linear(), (_ones(3, 3),)), ValueError,
     "the model failed on these example inputs"),
    ("inputs of the wrong type", lambda: (_linear(), (5,)), ValueError, "the model failed on these example inputs"),
]


@pytest.mark.parametrize("case, arguments, error, fragment", CAPTURE_TRACE_CATALOGUE,
                         ids=[c[0] for c in CAPTURE_TRACE_CATALOGUE])
def test_bad_capture_trace_arguments_get_a_clear_error(case, arguments, error, fragment, capfd):
    pytest.importorskip("torch")
    from lab.workloads.capture import capture_trace

    with pytest.raises(error, match=fragment):
        capture_trace(*arguments())
    assert "Traceback" not in capfd.readouterr().err  # torch's fake-tensor logger kept quiet


def test_a_corrupt_cached_capture_is_captured_again(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    first = lab.capture_model("gpt2", num_layers=1, seq_length=16)
    (cached,) = tmp_path.rglob("gpt2-*.parquet")
    cached.write_bytes(b"not a parquet file")
    with pytest.warns(UserWarning, match="cannot be read"):
        again = lab.capture_model("gpt2", num_layers=1, seq_length=16)
    pd.testing.assert_frame_equal(first, again)
    assert len(pd.read_parquet(cached)) == len(first)  # and the cache holds a good copy again


def test_a_policy_name_where_a_list_is_expected_is_that_one_policy_never_its_letters():
    trace = lab.generate_trace("MLP", num_layers=2)
    assert lab.compare_policies(trace, "LRU", optimum=False).index.tolist() == ["LRU"]  # not L, R and U
    assert lab.sweep_capacity(trace, "SIEVE", [1.0], optimum=False)["policy"].unique().tolist() == ["SIEVE"]
    with pytest.raises(ValueError, match="unknown policy 'L'"):
        lab.compare_policies(trace, list("LRU"))  # the letters themselves are unknown policies


def test_an_unusable_cache_directory_costs_the_cache_not_the_capture(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from lab.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LAB_CACHE_DIR", str(blocker / "cache"))  # under a regular file: cannot be created
    with pytest.warns(UserWarning, match="could not be cached"):
        trace = lab.capture_model("gpt2", num_layers=1, seq_length=16)
    assert len(trace) > 0
    out = tmp_path / "gpt2.parquet"
    assert main(["capture", "--model", "gpt2", "--seq-length", "16", "--set", "n_layer=1", "--out", str(out)]) == 0
    assert len(lab.read_trace(out)) == len(trace)
    err = capsys.readouterr().err
    assert err.startswith("python -m lab capture: warning: the capture could not be cached at ")
    assert err.count("\n") == 1  # one line, as the CLI's errors


@pytest.mark.parametrize("case, call, error, fragment", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input_gets_a_clear_error(case, call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


@pytest.mark.parametrize("attrs, fragment", [
    ({"model_type": "Transformer", "num_layers": 10**9, "batch_size": 2, "seq_length": 8, "reuse_probability": 0.3,
      "seed": 0}, "would generate about"),
    ({"model_type": "Transformer", "num_layers": 200, "batch_size": 2, "seq_length": 8, "reuse_probability": 0.3,
      "seed": 0}, "do not describe this trace"),
    ({"model_type": "Transformer"}, "lacks"),
    ("num_layers=3", "must be a mapping"),
])
def test_untrusted_generator_metadata_in_a_file_is_checked(tmp_path, attrs, fragment):
    trace = lab.generate_trace("Transformer", num_layers=2, batch_size=2, seq_length=8)
    path = tmp_path / "t.parquet"
    lab.write_trace(trace, path)
    crafted = pd.read_parquet(path)
    crafted.attrs["generator"] = attrs  # what a crafted file's metadata would carry
    crafted.to_parquet(path)
    with pytest.raises(ValueError, match=fragment):
        lab.validate(lab.read_trace(path))


def test_a_trace_too_large_for_the_optimum_is_refused_before_solving(monkeypatch):
    from lab.analysis import optimal as optimal_module

    monkeypatch.setattr(optimal_module, "MAX_FLOW_ACCESSES", 2)
    with pytest.raises(ValueError, match=r"about .* GiB"):
        lab.optimal(SMALL, 4)


# --- files: nothing lost, ids exact -------------------------------------------------------------------


def test_the_cli_refuses_to_write_its_results_over_its_input(tmp_path, capsys):
    path = tmp_path / "t.parquet"
    lab.write_trace(lab.generate_trace("MLP", num_layers=2), path)
    before = path.read_bytes()
    code = main(["simulate", "--trace", str(path), "--out", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "would overwrite the input" in err and err.count("\n") == 1
    assert path.read_bytes() == before


def test_csv_ids_come_back_exactly_as_written(tmp_path):
    ids = ["1", "01", "1.0", "NA", "null", "", "a b", "1"]
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": 1.0})
    back = lab.read_trace(lab.write_trace(trace, tmp_path / "t.csv"))
    assert back["tensor_id"].tolist() == ids
    numbers = pd.DataFrame({"tensor_id": [3, 12, 3], "size_mb": [1.0, np.nan, 1.0]})
    back = lab.read_trace(write_table(numbers, tmp_path / "n.csv"))
    assert back["tensor_id"].tolist() == [3, 12, 3] and back["size_mb"].isna().tolist() == [False, True, False]


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "t.parquet"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".t.parquet.{int(dead.stdout)}.abcd.tmp"  # a writer killed mid-write left this
    live = tmp_path / f".t.parquet.{os.getpid()}.efgh.tmp"  # a writer still running: left alone
    stale.write_bytes(b"x" * 100)
    live.write_bytes(b"y")
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(b"data")
    assert target.read_bytes() == b"data" and not stale.exists() and live.exists()


# --- no wrong numbers ---------------------------------------------------------------------------------------


def test_compulsory_misses_never_exceed_the_misses():
    trace = lab.generate_trace("Transformer", num_layers=4)
    assert "access" in trace.columns
    for capacity in (0.5, 8, 64, 10_000):
        m = lab.simulate(trace, "LRU", capacity).metrics
        assert m["compulsory_misses"] <= m["dram_accesses"]
        assert 0 <= m["cache_hit_rate"] <= 100 and 0 <= m["byte_hit_rate"] <= 100 and 0 <= m["read_hit_rate"] <= 100


# --- the command line: one line, exit codes -----------------------------------------------------------------


def test_a_closed_pipe_ends_the_cli_quietly():
    command = (f"{sys.executable} -m lab generate --model_type MLP --num_layers 40 | head -c 10 > /dev/null; "
               "echo ${PIPESTATUS[0]}")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.stdout.strip() == "0" and "Traceback" not in done.stderr and "Broken pipe" not in done.stderr


@pytest.mark.parametrize("ids", [[b"a", b"b", b"a"], pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-01"])],
                         ids=["bytes", "timestamps"])
def test_the_cli_prints_any_kind_of_id_as_json(ids, tmp_path, capsys):
    import json

    path = tmp_path / "t.parquet"
    pd.DataFrame({"tensor_id": ids, "size_mb": [1.0, 2.0, 1.0]}).to_parquet(path)
    assert main(["schedule", "--trace", str(path)]) == 0
    ranking = json.loads(capsys.readouterr().out)
    assert [row["tensor_id"] for row in ranking] == (["b", "a"] if isinstance(ids[0], bytes)
                                                       else ["2020-01-02 00:00:00", "2020-01-01 00:00:00"])


@pytest.mark.parametrize("setting, fragment", [
    ("hidden_size=-1", "override hidden_size of gpt2 must be an integer >= 1"),
    ("num_attention_heads=7", "do not make a valid gpt2"),
    ("num_hidden_layers=100000000", "would capture at least"),
])
def test_bad_capture_settings_on_the_cli_are_one_line(setting, fragment, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    code = main(["capture", "--model", "gpt2", "--seq-length", "16", "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1, err


@settings(max_examples=40, deadline=None)
@given(
    ids=st.lists(st.integers(0, 7), min_size=1, max_size=60),
    exponents=st.lists(st.floats(-20, 40), min_size=8, max_size=8),
    capacity_exponent=st.floats(-20, 40),  # lab's largest capacity is 2**40 MB
    writes=st.lists(st.booleans(), min_size=60, max_size=60),
    policy=st.sampled_from(["LRU", "FIFO", "GDSF", "ARC", "Belady", "BeladySize"]),
)
def test_totals_stay_exact_and_rates_in_range_at_any_size(ids, exponents, capacity_exponent, writes, policy):
    """Sizes from a millionth of a MB to lab's largest (2**40 MB): the run's totals either fit (and every
    invariant holds) or the trace is refused with a clear error; never a negative total or a rate over 100 %."""
    trace = pd.DataFrame({"tensor_id": ids, "size_mb": [2.0 ** exponents[i] for i in ids],
                          "access": np.where(writes[: len(ids)], "write", "read")})
    try:
        m = lab.simulate(trace, policy, capacity_mb=2.0 ** capacity_exponent, per_access=False).metrics
    except ValueError as error:
        assert "2**62 bytes" in str(error)
        return
    assert m["cache_hits"] + m["write_allocations"] + m["dram_accesses"] == m["accesses"] == len(ids)
    for rate in ("cache_hit_rate", "byte_hit_rate", "read_hit_rate"):
        assert 0 <= m[rate] <= 100, rate
    assert m["bytes_from_dram"] >= 0 and m["dram_reads_mb"] >= 0 and m["dram_writes_mb"] >= 0
    assert m["dram_traffic_mb"] <= 2.0 * trace["size_mb"].sum() + 1e-9 * m["dram_traffic_mb"]
