"""The catalogue of bad input: each case a call, the exception it must raise and a fragment of its message
(the argument named, what is accepted). Grows with every fix; the cases that are not one call (files, the CLI's
exit codes, pipes) follow the table."""

import json
import os
import re
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
TIMED = pd.DataFrame({"tensor_id": ["a", "b"], "size_mb": [1.0, 1.0], "access": ["read", "write"], "op_index": [0, 0]})

def _empty_notebook():
    import tempfile

    import nbformat
    from nbformat.v4 import new_notebook

    path = Path(tempfile.mkdtemp()) / "empty.ipynb"
    nbformat.write(new_notebook(), path)
    return path


CATALOGUE = [
    # (case, call, exception, message fragment)
    ("a step time under a preset without the numbers", lambda: lab.step_time(lab.simulate(TIMED, "LRU", 4), TIMED),
     ValueError, "cost preset 'seed' has no physical numbers for the step time"),
    ("a step time of a trace that does not record its ops",
     lambda: lab.step_time(lab.simulate(SMALL, "LRU", 4, cost="H200"), SMALL), ValueError, "no 'op_index' column"),
    ("an unknown execution mode", lambda: lab.step_time(lab.simulate(TIMED, "LRU", 4, cost="H200"), TIMED,
                                                        execution="lazy"), ValueError, "execution must be one of"),
    ("a time breakdown by an unknown grouping",
     lambda: lab.time_breakdown(lab.simulate(TIMED, "LRU", 4, cost="H200"), TIMED, by="kind"), ValueError,
     "by must be one of"),
    ("a time breakdown by a column the trace lacks",
     lambda: lab.time_breakdown(lab.simulate(TIMED, "LRU", 4, cost="H200"), TIMED, by="phase"), ValueError,
     "trace has no column 'phase'"),
    ("ops out of trace order", lambda: lab.simulate(TIMED.assign(op_index=[1, 0]), "LRU", 4, cost="H200"),
     ValueError, "'op_index' must number ops in trace order"),
    ("an op index that is not an integer", lambda: lab.simulate(TIMED.assign(op_index=[0.5, 0.5]), "LRU", 4),
     ValueError, "'op_index' must hold integers >= -1"),
    ("an op index of words", lambda: lab.simulate(TIMED.assign(op_index=["x", "y"]), "LRU", 4), ValueError,
     "'op_index' must hold numbers"),
    ("a plan under a preset without the numbers", lambda: lab.plan(TIMED, 4, cost="seed"), ValueError,
     "no plan: cost preset 'seed' has no physical numbers"),
    ("a plan at capacity 0", lambda: lab.plan(TIMED, 0), ValueError, "capacity_mb"),
    ("planner rows under a preset without the numbers", lambda: lab.planner_rows(TIMED, 4, cost="seed"), ValueError,
     "no plan: cost preset 'seed' has no physical numbers"),
    ("planner rows at a negative capacity", lambda: lab.planner_rows(TIMED, -1), ValueError, "capacity_mb"),
    ("planner rows with options of another type", lambda: lab.planner_rows(TIMED, 4, options="eager"), TypeError,
     "options must be a lab.PlannerOptions"),
    ("a time comparison under a preset without the numbers", lambda: lab.compare_time(TIMED, 4, cost="seed"),
     ValueError, "no time comparison: cost preset 'seed' has no physical numbers"),
    ("a time comparison at capacity 0", lambda: lab.compare_time(TIMED, 0), ValueError, "capacity_mb"),
    ("a time comparison of an unknown policy", lambda: lab.compare_time(TIMED, 4, policies=["nope"]), ValueError,
     "unknown policy 'nope'"),
    ("a time comparison of policies given as a number", lambda: lab.compare_time(TIMED, 4, policies=3), TypeError,
     "policies must be a policy name, a list of them"),
    ("a time comparison with options of another type",
     lambda: lab.compare_time(TIMED, 4, options={"execution": "eager"}), TypeError,
     "options must be a lab.PlannerOptions"),
    ("a time comparison with an unknown scorer", lambda: lab.compare_time(TIMED, 4, policies=["ML"], scorer="nope"),
     ValueError, "unknown scorer 'nope'"),
    ("a time comparison of an empty trace", lambda: lab.compare_time(TIMED.iloc[:0], 4), ValueError,
     "non-empty trace DataFrame"),
    ("a time comparison of an encoded workload", lambda: lab.compare_time(lab.encode_trace(TIMED), 4), ValueError,
     "non-empty trace DataFrame"),
    ("a report's time section of traces not in a dict",
     lambda: lab.ui.report.time_comparison([TIMED], 4, "H200"), TypeError, "traces must be a non-empty dict"),
    ("a report's time section under a preset without the numbers",
     lambda: lab.ui.report.time_comparison({"timed": TIMED}, 4, "seed"), ValueError,
     "no time comparison: cost preset 'seed'"),
    ("a plan of an empty trace", lambda: lab.plan(TIMED.iloc[:0], 4), ValueError, "non-empty trace"),
    ("a plan with options of another type", lambda: lab.plan(TIMED, 4, options={"execution": "eager"}), TypeError,
     "options must be a lab.PlannerOptions"),
    ("a plan below an op's working set, streaming off",
     lambda: lab.plan(TIMED, 1, options=lab.PlannerOptions(streaming=False)), ValueError,
     "capacity_mb=1 is below the working set of op 0"),
    ("a copy engine faster than DRAM", lambda: lab.plan(TIMED, 4, options=lab.PlannerOptions(copy_bandwidth_gb_s=1e5)),
     ValueError, "above the DRAM bandwidth of cost preset 'H200'"),
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
    # issue 23: messages that blame the input at fault
    ("predict_compile on an empty trace", lambda: lab.predict_compile(SMALL.iloc[:0], 4), ValueError,
     "trace is empty: predict_compile needs at least one access"),
    ("predict_compile on 2**40 MB tensors",
     lambda: lab.predict_compile(pd.DataFrame({"tensor_id": ["a", "b", "a"], "size_mb": 2.0**40}), 4), ValueError,
     r"trace's working set is 2\.199e\+12 MB, more than the largest buffer lab simulates"),
    ("a learned scorer fitted on one access", lambda: lab.LearnedScorer().fit([SMALL.iloc[:1]], capacity_mb=1.0),
     ValueError, "traces hold 1 access.* LearnedScorer.fit needs at least 2"),
    ("an LLM scorer on a TPU", lambda: lab.LLMScorer(device="tpu"), ValueError, "device must be None .*got 'tpu'"),
    ("the ML policy under the hardware cache", lambda: lab.simulate(lab.score(SMALL), "ML", 4, buffer="cache"),
     ValueError, "not supported with buffer='cache'"),
    ("a study geomspace that rounds to duplicates",
     lambda: lab.load_study_spec({"models": ["synthetic:MLP"], "policies": ["LRU"],
                                  "capacities_mb": {"geomspace": [1, 1.000001, 5]}}), ValueError,
     r"geomspace \[1, 1.000001, 5\] gives capacities that coincide once rounded to 6 significant digits "
     r"\(1 MB 5 times\)"),
    ("a study geomspace of more points than max_cells",
     lambda: lab.load_study_spec({"models": ["synthetic:MLP"], "policies": ["LRU"],
                                  "capacities_mb": {"geomspace": [1, 4096, 1000000000]}}), ValueError,
     "geomspace of 1,000,000,000 points alone is more than max_cells=20,000"),
    ("a cache model aligned to 2**62 bytes", lambda: lab.CacheModel(alignment=2**62), ValueError,
     "CacheModel.alignment must be a power of two from 1 to 1,073,741,824 bytes"),
    ("a cache model of 2**40-byte lines", lambda: lab.CacheModel(line_bytes=2**40), ValueError,
     "CacheModel.line_bytes must be a power of two from 128 to 1,048,576 bytes"),
    ("a cache model flushing 'false'", lambda: lab.CacheModel(flush_at_end="false"), TypeError,
     "CacheModel.flush_at_end must be True or False"),
]


CAPTURE_CATALOGUE = [
    ("a negative seed", {"seed": -1}, ValueError, "seed must be an integer >= 0"),
    ("a fractional seed", {"seed": 1.5}, ValueError, "seed must be an integer >= 0"),
    ("a routing skew as text", {"routing_skew": "2"}, ValueError, "routing_skew must be a finite number"),
    ("a NaN routing skew", {"routing_skew": float("nan")}, ValueError, "routing_skew must be a finite number"),
    ("no routing", {"routing": None}, TypeError, r"routing must be one of \['uniform', 'zipf'\] or a histogram of "
     r"weights per expert \(a list of numbers\), got None"),
    ("a routing histogram of text", {"routing": ["1", "2"]}, TypeError, "routing must be one of"),
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
    ("an unknown lowering", {"lowering": "cudnn"}, ValueError,
     r"lowering must be None \(pure aten\) or one of \['cuda-sm90'\], got 'cudnn'"),
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
    with pytest.warns(UserWarning, match="cannot be read") as caught:
        again = lab.capture_model("gpt2", num_layers=1, seq_length=16)
    assert len([w for w in caught if "cannot be read" in str(w.message)]) == 1  # said once, not per lookup
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
    from lab.bounds import optimal as optimal_module

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
    command = (f"{sys.executable} -m lab generate --model_type MLP --num_layers 40 --json | head -c 10 > /dev/null; "
               "echo ${PIPESTATUS[0]}")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.stdout.strip() == "0" and "Traceback" not in done.stderr and "Broken pipe" not in done.stderr


@pytest.mark.parametrize("ids", [[b"a", b"b", b"a"], pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-01"])],
                         ids=["bytes", "timestamps"])
def test_the_cli_prints_any_kind_of_id_as_json(ids, tmp_path, capsys):
    import json

    path = tmp_path / "t.parquet"
    pd.DataFrame({"tensor_id": ids, "size_mb": [1.0, 2.0, 1.0]}).to_parquet(path)
    assert main(["schedule", "--trace", str(path), "--json"]) == 0
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


# --- issue 23: option objects check every field ------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
# bad values per kind of field: (value, exception)
NOT_BOOL = [("false", TypeError), (1, TypeError), (None, TypeError), (0.0, TypeError)]
NOT_FRACTION = [(NAN, ValueError), (INF, ValueError), (-0.5, ValueError), (0.0, ValueError), (1.5, ValueError),
                (True, ValueError), ("0.5", ValueError)]
NOT_COST = [(NAN, ValueError), (INF, ValueError), (-1.0, ValueError), (1e308, ValueError), (True, ValueError),
            ("1", ValueError)]
NOT_BUFFER_MB = [(0.0, ValueError), (-1.0, ValueError), (NAN, ValueError), (INF, ValueError), (True, ValueError),
                 ("50", ValueError), (2.0**41, ValueError)]
NOT_NAME = [(3, TypeError), ("", ValueError), (None, TypeError)]
NOT_COUNT = [(0, ValueError), (-1, ValueError), (1.5, ValueError), (True, ValueError), ("4", ValueError),
             (None, ValueError)]


def _preset(**fields):
    from lab.workloads.models import Preset

    return Preset(**{"name": "p", "model_type": "MLP", "build_config": dict, "model_class": "mlp", **fields})


def _few_shot(**fields):
    from lab.learn.llm import FewShotExample

    return FewShotExample(**{"description": "size 1 MB", "digit": 3, **fields})


def _cache_model(**fields):
    from lab.sim.hardware import CacheModel

    return CacheModel(**fields)


def _llm_scorer(**fields):
    from lab.learn.llm import LLMScorer

    return LLMScorer(**fields)


# every option object of lab (a dataclass or class a user constructs to set options), each field: its bad values
OPTION_FIELDS = {
    "CacheModel": (_cache_model, "CacheModel.", {
        "line_bytes": [(2**40, ValueError), (4096 + 1, ValueError), (64, ValueError), (0, ValueError),
                       (-128, ValueError), (True, ValueError), (4096.0, ValueError), ("4096", ValueError)],
        "alignment": [(2**62, ValueError), (3, ValueError), (0, ValueError), (True, ValueError),
                      (512.0, ValueError)],
        "effective_fraction": NOT_FRACTION, "panel_fraction": NOT_FRACTION,
        "tiling": NOT_BOOL, "interleave": NOT_BOOL, "flush_at_end": NOT_BOOL}),
    "CostModel": (lambda **f: lab.CostModel(**f), "CostModel.", {
        "name": NOT_NAME, "hit_latency_ms": NOT_COST, "miss_latency_ms": NOT_COST, "miss_latency_ms_per_mb": NOT_COST,
        "dram_bandwidth_gb_s": NOT_COST + [(1e-300, ValueError)], "buffer_mb": NOT_BUFFER_MB,
        "buffer": [("l2", ValueError), ("Cache", ValueError), (None, TypeError), (1, TypeError)],
        # the step-time numbers (lab.sim.timing): None is the preset without them, so only wrong values here
        "peak_tflops": [({"bfloat16": -1.0}, ValueError), ({"bfloat16": 0.0}, ValueError), ({"": 1.0}, ValueError),
                        ({3: 1.0}, TypeError), ({"bfloat16": NAN}, ValueError), ("fast", ValueError),
                        (989.0, ValueError), ({"bfloat16": "989"}, ValueError)],
        "compute_efficiency": NOT_FRACTION, "misaligned_gemm_efficiency": NOT_FRACTION,
        "dram_efficiency": NOT_FRACTION,
        "onchip_bandwidth_gb_s": NOT_COST + [(0.0, ValueError)], "autograd_factor": NOT_COST + [(0.0, ValueError)],
        "kernel_launch_us": NOT_COST, "launch_latency_us": NOT_COST, "host_dispatch_us": NOT_COST,
        "gemm_tile": [((0, 128), ValueError), ((128,), ValueError), ("128x128", ValueError),
                      ((128.0, 128), ValueError), ((True, 128), ValueError), ([128, 128], ValueError)],
        "memory_combine": [("mean", ValueError), ("Max", ValueError), (None, TypeError), (1, TypeError)]}),
    "PlannerOptions": (lambda **f: lab.PlannerOptions(**f), "PlannerOptions.", {
        "copy_bandwidth_gb_s": NOT_COST + [(0.0, ValueError)], "max_outstanding_prefetches": NOT_COUNT,
        "max_outstanding_evictions": NOT_COUNT, "min_overlap_ratio": NOT_COST,
        "preferred_overlap_ratio": NOT_COST, "max_overlap_ratio": NOT_COST,
        "execution": [("jit", ValueError), (None, TypeError), (1, TypeError)],
        "memory_combine": [("mean", ValueError), ("Max", ValueError), (1, TypeError)], "streaming": NOT_BOOL,
        "seed_policies": [("LRU", TypeError), ((1,), TypeError), (("LRUX",), ValueError)],
        "steps": NOT_COUNT + [(17, ValueError)]}),
    "Preset": (_preset, "Preset.", {
        "name": NOT_NAME, "model_type": [("RNN", ValueError), (3, TypeError)],
        "build_config": [(None, TypeError), ("GPT2Config", TypeError)], "model_class": NOT_NAME,
        "vision": NOT_BOOL}),
    "FewShotExample": (_few_shot, "FewShotExample.", {
        "description": NOT_NAME, "digit": [(10, ValueError), (-1, ValueError), (True, ValueError),
                                           (4.5, ValueError), ("4", ValueError)]}),
    "LearnedScorer": (lambda **f: lab.LearnedScorer(**f), "", {
        "seed": [(-1, ValueError), (1.5, ValueError), (True, ValueError)], "n_estimators": NOT_COUNT,
        "num_leaves": NOT_COUNT + [(1, ValueError)], "learning_rate": NOT_COST[:3] + [(0.0, ValueError)],
        "min_child_samples": NOT_COUNT, "num_threads": NOT_COUNT, "max_depth": NOT_COUNT,
        "label_method": [("exact", ValueError), (None, ValueError)]}),
    "LLMScorer": (_llm_scorer, "", {
        "model": [(3, TypeError), ("", TypeError)], "quantization": [("fp8", ValueError), (4, ValueError)],
        "device": [("tpu", ValueError), (0, ValueError), ("cuda:x", ValueError)], "batch_size": NOT_COUNT,
        "few_shot": [("examples", TypeError), ([("a", 10)], ValueError), ([("", 3)], ValueError)],
        "cache": NOT_BOOL}),
}
OPTION_CASES = [(cls, field, value, error) for cls, (_, _, table) in OPTION_FIELDS.items()
                for field, bad in table.items() for value, error in bad]


@pytest.mark.parametrize("cls, field, value, error", OPTION_CASES,
                         ids=[f"{c}.{f}={v!r}" for c, f, v, _ in OPTION_CASES])
def test_every_field_of_every_option_object_is_checked(cls, field, value, error):
    make, prefix, _ = OPTION_FIELDS[cls]
    with pytest.raises(error, match=re.escape(prefix + field) if field != "few_shot" else "few_shot"):
        make(**{field: value})


def _option_fields(cls_name: str) -> set:
    import dataclasses
    import inspect

    make = {"CacheModel": "lab.sim.hardware", "CostModel": "lab.sim.cost", "Preset": "lab.workloads.models",
            "PlannerOptions": "lab.planning.planner",
            "FewShotExample": "lab.learn.llm", "LearnedScorer": "lab.learn.learned", "LLMScorer": "lab.learn.llm"}
    import importlib

    cls = getattr(importlib.import_module(make[cls_name]), cls_name)
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls) if f.init}
    return set(inspect.signature(cls).parameters)


@pytest.mark.parametrize("cls", list(OPTION_FIELDS))
def test_the_option_table_covers_every_field(cls):
    """A field added to an option object without bad values in OPTION_FIELDS fails here."""
    assert set(OPTION_FIELDS[cls][2]) == _option_fields(cls)


# Dataclasses under lab/ that are not option objects: results a function returns, a trace's encoding, internal
# records, or the study's parts (parse_study checks them; a StudySpec passed as an object is checked again).
NOT_OPTIONS = {"SimulationResult", "Workload", "StudyWorkload", "FlatTrees", "CompleteTrees", "Schedule",
               "CompilePrediction", "OptimalResult", "Intervals", "ValidationReport", "Statistic", "Model", "Task",
               "StudySpec", "StudySummary", "Failed", "_Region", "_Record", "_State", "_OpInfo", "Contenders",
               "SimulationModel",  # a result's record of what produced it, made by lab.simulate
               "StepTime",  # a simulation's step time, made by lab.sim.timing
               "PlanResult",  # a plan, made by lab.plan
               "ExhaustiveResult", "OptimumBound", "PlannerGap",  # lab.planning.exact's answers
               "Lowering", "Step", "Temporary"}  # lab.workloads.lowering's table of library rules (not arguments)


def test_every_dataclass_under_lab_is_an_option_object_or_named_as_not_one():
    import dataclasses
    import importlib
    import inspect
    import pkgutil

    from lab.sim.policy import Policy

    found = {}
    for module in pkgutil.walk_packages(lab.__path__, "lab."):
        if module.name in ("lab.__main__",) or module.name.startswith("lab.ui"):
            continue
        imported = importlib.import_module(module.name)
        for name, value in vars(imported).items():
            if (inspect.isclass(value) and dataclasses.is_dataclass(value) and value.__module__ == module.name
                    and not issubclass(value, Policy)):  # a policy's fields are params, checked by Policy
                found[name] = module.name
    unclassified = sorted(set(found) - set(OPTION_FIELDS) - NOT_OPTIONS)
    assert not unclassified, f"new dataclasses {unclassified}: add their fields to OPTION_FIELDS or NOT_OPTIONS"


def test_a_study_spec_made_by_hand_is_checked_as_a_file_is():
    import dataclasses

    from lab.study.spec import StudyError, load_study_spec

    spec = load_study_spec({"models": ["synthetic:MLP"], "policies": ["LRU"], "capacities_mb": [1, 4]})
    assert load_study_spec(spec) == spec
    for field, value, fragment in [("batch_sizes", ["x"], "batch_sizes"), ("capacities_mb", [0.0], "capacities_mb"),
                                   ("buffers", ["l2"], "buffers"), ("max_cells", 1, "max_cells"),
                                   ("seed", -1, "seed"), ("optimum", "yes", "optimum")]:
        with pytest.raises(StudyError, match=fragment):
            load_study_spec(dataclasses.replace(spec, **{field: value}))


def test_a_cache_model_with_the_scratchpad_is_refused():
    from lab.sim.hardware import CacheModel

    with pytest.raises(ValueError, match="cache_model applies to buffer='cache' only"):
        lab.simulate(SMALL, "LRU", 4, cache_model=CacheModel(line_bytes=128))
    assert lab.simulate(SMALL, "LRU", 4, buffer="cache", cache_model=CacheModel(line_bytes=128)).metrics["accesses"]


# --- issue 23: a registered name is never replaced silently ---------------------------------------------------------


def _registries():
    """Every Registry instance of lab's modules: {module.attribute: registry}."""
    import importlib
    import pkgutil

    from lab.registry import Registry

    found = {}
    for module in pkgutil.walk_packages(lab.__path__, "lab."):
        if module.name == "lab.__main__" or module.name.startswith("lab.ui"):
            continue
        imported = importlib.import_module(module.name)
        for name, value in vars(imported).items():
            if isinstance(value, Registry) and id(value) not in {id(r) for r in found.values()}:
                found[f"{module.name}.{name}"] = value
    return found


REGISTRIES = sorted(_registries())


@pytest.mark.parametrize("where", REGISTRIES)
def test_no_registry_replaces_a_name_silently(where):
    registry = _registries()[where]
    name = registry.names()[0]
    entry, aliases = registry.get(name), registry.aliases(name)
    other = object()
    try:
        for label in (name, name.lower(), name.upper()):
            with pytest.raises(ValueError, match=f"{registry.kind} name .* is already taken by {re.escape(repr(name))}"):
                registry.add(label, other)
            assert registry.get(name) is entry
        registry.add(name, entry, aliases)  # the same entry again: nothing changes meaning
        registry.add(name, other, replace=True)  # asked for: replaced
        assert registry.get(name) is other
    finally:
        registry.add(name, entry, aliases, replace=True)
    assert registry.get(name) is entry and registry.aliases(name) == aliases


def test_registering_a_policy_or_scorer_under_a_taken_name_is_refused():
    from lab.sim.policies.basic import FIFO

    with pytest.raises(ValueError, match="policy name 'LRU' is already taken by 'LRU'"):
        @lab.register
        class LRU(FIFO):  # noqa: F811 - the attack: a FIFO that calls itself LRU
            name = "LRU"
    assert lab.get_policy("LRU").__class__.__module__ == "lab.sim.policies.basic"
    with pytest.raises(ValueError, match="scorer name 'heuristic' is already taken"):
        lab.register_scorer("heuristic")(lambda trace, encoded: np.zeros(len(trace)))
    assert lab.score(SMALL)["eviction_score"].tolist() == lab.learn.scoring.heuristic_scores(
        SMALL, lab.encode_trace(SMALL)).tolist()

    def again():  # a notebook cell run twice defines the same scorer twice: allowed
        @lab.register_scorer("test-rerun")
        def rerun(trace, encoded):
            return np.zeros(len(trace))

    try:
        again()
        again()
    finally:
        lab.learn.scoring.SCORERS.remove("test-rerun")


# --- issue 23: a scorer's output is checked where it is used -------------------------------------------------------

BAD_SCORES = [("NaN", lambda n: np.full(n, np.nan), "finite scores in \\[0, 1\\]"),
              ("inf", lambda n: np.full(n, np.inf), "finite scores"),
              ("above 1", lambda n: np.full(n, 1.5), "finite scores in \\[0, 1\\]"),
              ("negative", lambda n: np.full(n, -0.2), "finite scores in \\[0, 1\\]"),
              ("too few", lambda n: np.zeros(2), "returned 2 scores for a trace of 3 accesses"),
              ("too many", lambda n: np.zeros(n + 1), "returned 4 scores"),
              ("2-D", lambda n: np.zeros((n, 1)), "one score per access"),
              ("text", lambda n: ["a"] * n, "must return real numbers"),
              ("None", lambda n: None, "one score per access"),
              ("a number", lambda n: 0.5, "one score per access")]


@pytest.mark.parametrize("case, make, fragment", BAD_SCORES, ids=[c[0] for c in BAD_SCORES])
def test_a_scorers_bad_output_is_refused_naming_it(case, make, fragment):
    from lab.analysis.scorer_evaluation import score_traffic

    lab.register_scorer("test-bad")(lambda trace, encoded: make(len(trace)))
    try:
        with pytest.raises(ValueError, match=f"scorer 'test-bad' .*{fragment}|scorer 'test-bad' {fragment}"):
            lab.score(SMALL, "test-bad")
    finally:
        lab.learn.scoring.SCORERS.remove("test-bad")
    with pytest.raises(ValueError, match=f"scorer 'mine' .*{fragment}|scorer 'mine' {fragment}"):
        score_traffic(SMALL, 2.0, {"mine": make(len(SMALL))}, policies=["LRU"])


# --- issue 23: readers refuse duplicated column names ---------------------------------------------------------------


def _duplicate_csv(path):
    path.write_text("tensor_id,size_mb,size_mb\na,1.0,500.0\nb,2.0,500.0\na,1.0,500.0\n")
    return path


def _duplicate_parquet(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table([pa.array(["a", "b", "a"]), pa.array([1.0, 2.0, 1.0]), pa.array([500.0] * 3)],
                            names=["tensor_id", "size_mb", "size_mb"]), path)
    return path


@pytest.mark.parametrize("make, name", [(_duplicate_csv, "dup.csv"), (_duplicate_parquet, "dup.parquet")])
def test_every_reader_refuses_duplicated_column_names(make, name, tmp_path, capsys):
    path = make(tmp_path / name)
    with pytest.raises(ValueError, match=r"duplicated column\(s\) \['size_mb'\]"):
        lab.read_trace(path)
    assert main(["simulate", "--trace", str(path)]) == 2
    err = capsys.readouterr().err
    assert "duplicated column(s) ['size_mb']" in err and err.count("\n") == 1


# --- issue 23: ports and the app's settings --------------------------------------------------------------------


@pytest.mark.parametrize("port", [99999, 0, -1, 65536, True, 8866.0, "8866"])
def test_a_port_outside_1_to_65535_is_refused(port):
    from lab.ui.app import voila_command

    with pytest.raises(ValueError, match="port must be a TCP port, an integer from 1 to 65535"):
        voila_command(port)


@pytest.mark.parametrize("argv, fragment", [(["--port", "99999"], "port must be a TCP port"),
                                            (["--port", "0"], "port must be a TCP port"),
                                            (["--cull-idle-timeout", "0"], "cull_idle_timeout_s must be an integer "
                                                                           ">= 1 seconds"),
                                            (["--cull-idle-timeout", "-5"], "cull_idle_timeout_s")])
def test_the_apps_bad_settings_are_one_line(argv, fragment, capsys):
    from lab.cli import main

    assert main(["app", *argv]) == 2
    err = capsys.readouterr()
    assert fragment in err.err and err.err.count("\n") == 1 and "serving" not in err.out
    assert err.err.startswith("python -m lab app: error: ")


# --- issue 23: memory refusals come up front with their estimate, also under a memory limit ---------------------------

_WARM_CACHE = ("import lab, pandas as pd\nfrom lab.sim.hardware import CacheModel\n"
               "lab.simulate(pd.DataFrame({'tensor_id': ['a', 'b', 'a'], 'size_mb': 1.0}), 'FIFO', 1.0, "
               "buffer='cache')\n")
MEMORY_CASES = [
    ("a hardware cache of 128-byte lines over three 20 GB tensors", _WARM_CACHE,
     "lab.simulate(pd.DataFrame({'tensor_id': ['a', 'b', 'c'], 'size_mb': 20 * 1024.0}), 'FIFO', 64.0, "
     "buffer='cache', cache_model=CacheModel(line_bytes=128))",
     r"a line trace of 503,316,480 line accesses .* would need about 75\.0 GiB of memory \(this machine allows "),
    ("an allocator alignment of 1 GiB over 5,000 tensors", _WARM_CACHE,
     "lab.simulate(pd.DataFrame({'tensor_id': [f't{i}' for i in range(5000)], 'size_mb': 1.0}), 'FIFO', 64.0, "
     "buffer='cache', cache_model=CacheModel(alignment=2**30))",
     r"over 1,310,458,113 lines would need about 78\.2 GiB of memory"),
    ("the CLI's hardware cache on 1 TB tensors",
     _WARM_CACHE + "import sys, tempfile\nfrom lab.cli import main\npath = tempfile.mkdtemp() + '/tb.csv'\n"
                   "pd.DataFrame({'tensor_id': ['a', 'b', 'a'], 'size_mb': 2.0**20}).to_csv(path, index=False)\n",
     "code = main(['simulate', '--trace', path, '--buffer', 'cache'])\nassert code == 2, code\n"
     "raise ValueError('exit code 2')",
     r"exit code 2"),
    ("a study geomspace of a billion points, forced", "from lab.study.spec import parse_study\n",
     "parse_study({'models': ['synthetic:MLP'], 'policies': ['LRU'], "
     "'capacities_mb': {'geomspace': [1, 4096, 1000000000]}}, force=True)",
     r"geomspace of 1,000,000,000 points would need about 186\.3 GiB of memory"),
    ("a capture of llama-2-70b at 100,000 layers",
     "import os, tempfile\nos.environ['LAB_CACHE_DIR'] = tempfile.mkdtemp()\nimport lab\nfrom lab.cli import main\n"
     "lab.capture_model('gpt2', num_layers=1, seq_length=16)\nlab.capture_model('llama-2-70b', num_layers=1, "
     "seq_length=16)\n",
     "code = main(['capture', '--model', 'llama-2-70b', '--set', 'num_hidden_layers=100000'])\n"
     "assert code == 2, code\nraise ValueError('exit code 2')",
     r"exit code 2"),
]


@pytest.mark.parametrize("case, warmup, call, expected", MEMORY_CASES, ids=[c[0] for c in MEMORY_CASES])
def test_memory_refusals_come_first_with_their_estimate_under_a_memory_limit(case, warmup, call, expected):
    """Each runs in a process limited (RLIMIT_AS) to what it uses after its warm-up (imports, compiled kernels)
    plus 1 GiB: the refusal must come before any large allocation, as a ValueError giving the estimate, never a
    MemoryError, a crash or a kill."""
    if "capture" in case:
        pytest.importorskip("torch")
    script = (f"{warmup}\nimport resource, sys\n"
              "vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
              "resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, vm + 2**30))\n"
              "try:\n" + "".join(f"    {line}\n" for line in call.splitlines()) +
              "    print('RESULT no error')\n"
              "except MemoryError:\n    print('RESULT MemoryError')\n"
              "except ValueError as error:\n    print('RESULT ValueError', error)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900,
                          cwd=Path(__file__).parents[1])
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and result, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert result[0].startswith("RESULT ValueError") and re.search(expected, result[0]), result[0]
    if "exit code 2" in expected:  # the CLI: one line on stderr, with the estimate
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and re.search(r"need (about|at least) [\d,.]+ GiB of memory \(this machine allows",
                                             lines[0]), done.stderr


def test_the_ml_policy_under_the_hardware_cache_is_one_line_on_the_cli(tmp_path, capsys):
    path = tmp_path / "scored.parquet"
    lab.write_trace(lab.score(lab.generate_trace("MLP", num_layers=2)), path)
    assert main(["simulate", "--trace", str(path), "--policy", "ML", "--buffer", "cache"]) == 2
    err = capsys.readouterr().err
    assert "the ML policy's eviction_score) is not supported with buffer='cache'" in err and err.count("\n") == 1


def test_the_llm_scorer_the_readme_names_is_at_the_top_level_and_loads_no_torch():
    from lab.learn.llm import LLMScorer

    assert lab.LLMScorer is LLMScorer and "lab.LLMScorer" in (Path(__file__).parents[1] / "README.md").read_text()
    code = "import sys, lab; lab.LLMScorer; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parents[1])
    assert done.stdout.strip() == "False"


# --- issue 23: a study's result file with damaged pages but a readable footer is set aside ------------------------

STUDY_GRID = {"name": "damaged", "models": [{"synthetic": "MLP", "num_layers": 2}], "policies": ["LRU", "FIFO"],
              "capacities_mb": [0.5, 4], "optimum": False}


def _damage(path, where: str) -> None:
    """Overwrite bytes of ``path``'s first column chunk: its page header ("header") or the last byte of its
    page data ("data"); the footer stays readable."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    column = next(meta.row_group(0).column(i) for i in range(meta.num_columns)
                  if meta.row_group(0).column(i).path_in_schema == "dram_traffic_mb")
    blob = bytearray(Path(path).read_bytes())
    if where == "header":
        start = column.dictionary_page_offset or column.data_page_offset
        blob[start:start + 12] = b"\xff" * 12
    else:
        end = (column.dictionary_page_offset or column.data_page_offset) + column.total_compressed_size
        blob[end - 1] ^= 0x5A
    Path(path).write_bytes(bytes(blob))
    assert pq.read_schema(path).names  # the footer still reads


@pytest.mark.parametrize("where", ["header", "data"])
def test_a_study_file_with_damaged_pages_is_set_aside_and_its_cells_run_again(where, tmp_path):
    pytest.importorskip("distributed")
    from lab.study import dataset

    out = tmp_path / "study"
    lab.run_study(STUDY_GRID, out, serial=True, progress=False, verbose=False)
    whole = lab.load_study(out)
    damaged = dataset.cell_files(out)[0]
    _damage(damaged, where)
    with pytest.warns(UserWarning, match=f"study result file {re.escape(str(damaged))} is unusable"):
        partial = lab.load_study(out)  # the reader names the file and sets it aside; never a thrift error
    assert len(partial) < len(whole) and damaged.with_name(damaged.name + ".corrupt").exists()
    summary = lab.run_study(STUDY_GRID, out, serial=True, progress=False, verbose=False)  # the resume reruns them
    assert summary.done == len(whole) - len(partial)
    pd.testing.assert_frame_equal(lab.load_study(out), whole)


@pytest.mark.parametrize("where", ["header", "data"])
def test_a_resume_reads_every_page_of_the_results_it_keeps(where, tmp_path):
    pytest.importorskip("distributed")
    from lab.study import dataset

    out = tmp_path / "study"
    lab.run_study(STUDY_GRID, out, serial=True, progress=False, verbose=False)
    whole = lab.load_study(out)
    _damage(dataset.cell_files(out)[0], where)
    with pytest.warns(UserWarning, match="is unusable"):
        summary = lab.run_study(STUDY_GRID, out, serial=True, progress=False, verbose=False)
    assert summary.done > 0
    pd.testing.assert_frame_equal(lab.load_study(out), whole)


# --- issue 23: report parameters are checked against their declared types before the notebook runs --------------

REPORT_NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("0[1345]-*.ipynb"))
# a value of the wrong type for each type the reports declare (``name: type = value  # help``)
WRONG_TYPE = {"int": "x", "float": "x", "str": 5, "bool": "yes", "dict": [1, 2], "list": "gpt2",
              "list[str]": "gpt2", "list[float]": [0.1, "a"], "Optional[list]": "LRU", "Optional[int]": "x",
              "Optional[str]": 5, "Union[str, list]": 7}


def _declared_parameters():
    from lab.ui.report import notebook_parameters

    return [(nb, name, info["inferred_type_name"]) for nb in REPORT_NOTEBOOKS
            for name, info in notebook_parameters(nb).items()]


DECLARED = _declared_parameters()


@pytest.mark.parametrize("notebook, name, declared", DECLARED, ids=[f"{n.stem}.{p}" for n, p, _ in DECLARED])
def test_every_report_parameter_of_the_wrong_type_is_refused_naming_it(notebook, name, declared):
    from lab.ui.report import check_params

    assert declared in WRONG_TYPE, f"a new parameter type {declared!r}: add a wrong value for it to WRONG_TYPE"
    with pytest.raises(TypeError, match=f"parameter '{name}' must be .* \\(declared {re.escape(declared)} in "):
        check_params(notebook, {name: WRONG_TYPE[declared]}, "p.yaml")


@pytest.mark.parametrize("notebook, text, fragment", [
    ("01-policy-comparison", "dims: [1, 2]", "parameter 'dims' must be a mapping"),
    ("01-policy-comparison", "top: x", "parameter 'top' must be an integer"),
    ("08-study", "study_dir: 5", "parameter 'study_dir' must be a string"),
    ("03-real-models", "routing: 7", "parameter 'routing' must be a string or a list"),
    ("03-real-models", "models: gpt2", "parameter 'models' must be a list .*got str 'gpt2'"),
])
def test_a_report_parameter_of_the_wrong_type_is_one_line_before_anything_runs(notebook, text, fragment, tmp_path,
                                                                                capsys):
    from lab.cli import main

    params = tmp_path / "p.yaml"
    params.write_text(text + "\n")
    out = tmp_path / "reports"
    assert main(["report", str(Path(__file__).parents[1] / "notebooks" / f"{notebook}.ipynb"), str(params), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(fragment, err) and err.count("\n") == 1, err
    assert not (out / notebook / "p").exists()


def test_valid_parameters_of_every_report_pass_the_type_check():
    from lab.ui.report import check_params, load_params

    for notebook in REPORT_NOTEBOOKS:
        for path in sorted((Path(__file__).parents[1] / "params" / notebook.stem).glob("*.yaml")):
            check_params(notebook, load_params(path), str(path))
    check_params(REPORT_NOTEBOOKS[0], {"capacity_mb": 64, "policies": None, "dims": {"hidden_size": 8}})


# --- issue 23: a report is kept whole, even by a run killed between its files -----------------------------------


def _tag_notebook(path):
    from nbformat.v4 import new_code_cell, new_notebook

    import nbformat

    parameters = new_code_cell('tag: str = "none"  # printed by the report')
    parameters.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[parameters, new_code_cell("print(f'TAG={tag}=')")], metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), path)
    return path


def _tags(folder):
    """The tag the report's notebook printed, and the tag in its HTML."""
    notebook = (folder / "r.ipynb").read_text()
    html = (folder / "r.html").read_text()
    return (re.search(r"TAG=(\w+)=", notebook).group(1), re.search(r"TAG=(\w+)=", html).group(1))


@pytest.mark.parametrize("kill_before", ["r.ipynb", "r.html"])
def test_run_report_killed_between_its_files_leaves_one_run_whole(kill_before, tmp_path):
    from lab.ui.report import remove_stale_work, run_report

    notebook = _tag_notebook(tmp_path / "tag.ipynb")
    folder = tmp_path / "out"
    run_report(notebook, {"tag": "old"}, folder / "r.ipynb")
    assert _tags(folder) == ("old", "old")
    script = ("import os, sys\nimport lab.ui.report as report\nreal = os.replace\n"
              "def replace(src, dst, *args, **kwargs):\n"
              f"    if os.path.basename(str(dst)) == {kill_before!r}:\n"
              "        os._exit(9)  # killed here, as by SIGKILL: no cleanup\n"
              "    return real(src, dst, *args, **kwargs)\n"
              "os.replace = replace\n"
              f"report.run_report({str(notebook)!r}, {{'tag': 'new'}}, {str(folder / 'r.ipynb')!r})\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parents[1])
    assert killed.returncode == 9, killed.stderr
    remove_stale_work(folder)  # what the next report run in the folder does first
    assert _tags(folder) == ("new", "new")  # the killed run had finished its report: it is moved in whole
    assert sorted(p.name for p in folder.iterdir()) == ["r.html", "r.ipynb"]


def test_ctrl_c_to_a_report_runs_process_group_is_one_line(tmp_path):
    """Ctrl-C in a terminal signals the whole process group: the report's process says one line and exits 130,
    with no traceback from its kernel (a ZMQError) or its libraries."""
    import signal
    import time

    from nbformat.v4 import new_code_cell, new_notebook

    import nbformat

    started = tmp_path / "started"
    parameters = new_code_cell("wait: int = 120  # seconds")
    parameters.metadata["tags"] = ["parameters"]
    body = new_code_cell(f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(wait)")
    notebook = tmp_path / "slow.ipynb"
    nbformat.write(new_notebook(cells=[parameters, body], metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), notebook)
    params = tmp_path / "slow.yaml"
    params.write_text("wait: 120\n")
    run = subprocess.Popen([sys.executable, "-m", "lab", "report", str(notebook), str(params), "--out",
                            str(tmp_path / "r")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
        assert started.exists(), run.communicate(timeout=10)
        time.sleep(0.5)
        os.killpg(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130 and err == "python -m lab report: interrupted\n", err
    assert not (tmp_path / "r" / "slow" / "slow").exists()


def test_ctrl_c_ends_a_command_whose_clean_up_swallows_the_interrupt(tmp_path):
    """A library that catches KeyboardInterrupt (or a clean-up that waits on a kernel that never answers) cannot
    keep a command alive: the watchdog says the one line and exits 130 after its grace time."""
    import signal
    import time

    started = tmp_path / "started"
    code = ("import pathlib, time\nfrom lab.cli import _InterruptWatchdog\n"
            "with _InterruptWatchdog('report', grace_s=1.0):\n"
            f"    pathlib.Path({str(started)!r}).touch()\n"
            "    while True:\n        try:\n            time.sleep(100)\n"
            "        except KeyboardInterrupt:\n            pass\n")
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
        assert started.exists(), run.communicate(timeout=10)
        run.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, err = run.communicate(timeout=60)
        waited = time.monotonic() - interrupted
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130 and err == "python -m lab report: interrupted\n", err
    assert 0.9 <= waited < 30


def test_the_interrupt_watchdog_restores_what_it_changed():
    """In process (as the tests and notebooks call ``lab.cli.main``): SIGINT's handler and the wake-up file are
    put back, and its thread and pipe are gone."""
    import signal
    import threading
    import time

    from lab.cli import _InterruptWatchdog

    def wakeup_fd():
        fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(fd)
        return fd

    handler, wakeup, fds = signal.getsignal(signal.SIGINT), wakeup_fd(), len(os.listdir("/proc/self/fd"))
    with _InterruptWatchdog("simulate"):
        assert signal.getsignal(signal.SIGINT) is not handler
    assert signal.getsignal(signal.SIGINT) is handler
    assert wakeup_fd() == wakeup
    deadline = time.monotonic() + 10
    while any(t.name == "lab-interrupt-watchdog" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "lab-interrupt-watchdog" for t in threading.enumerate())
    assert len(os.listdir("/proc/self/fd")) == fds


def test_a_command_called_from_python_keeps_its_callers_interrupt_handling(monkeypatch):
    """``lab.cli.main([...])`` from a notebook or a test installs no watchdog: a Ctrl-C there must never end the
    caller's process (a Jupyter kernel); ``python -m lab`` (``main()``) does."""
    import signal

    from lab import cli

    seen = []
    monkeypatch.setattr(cli, "_run", lambda args: seen.append(signal.getsignal(signal.SIGINT)) or 0)
    handler = signal.getsignal(signal.SIGINT)
    assert cli.main(["validate"]) == 0 and seen == [handler]
    monkeypatch.setattr(sys, "argv", ["lab", "validate"])
    assert cli.main() == 0 and seen[-1] is not handler  # the program: the watchdog's handler
    assert signal.getsignal(signal.SIGINT) is handler


# --- issue 23: model files are untrusted input ---------------------------------------------------------------------

def _model_traces():
    return [lab.generate_trace(m, num_layers=3, batch_size=2, seq_length=16, reuse_probability=0.5, seed=1)
            for m in ("Transformer", "CNN", "MoE", "MLP")]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A LearnedScorer model with numerical and categorical splits, saved; and the trace it scores."""
    pytest.importorskip("lightgbm")
    folder = tmp_path_factory.mktemp("model")
    scorer = lab.LearnedScorer(n_estimators=10, num_leaves=7, min_child_samples=3).fit(_model_traces(),
                                                                                       capacity_fraction=[0.02, 0.1])
    assert "num_cat=1" in scorer.to_dict()["model"] and "num_cat=0" in scorer.to_dict()["model"]
    path = scorer.save(folder / "model.json")
    trace = pd.concat([t.assign(tensor_id=f"{k}:" + t["tensor_id"].astype(str)) for k, t in enumerate(_model_traces())],
                      ignore_index=True)
    trace.to_parquet(folder / "trace.parquet")
    return path, folder / "trace.parquet", scorer.predict(trace)


def _resealed(blob: dict) -> str:
    """A model file's JSON with its checksum made to match its content: what a user who edits a model by hand
    (or crafts one) hands over."""
    from lab.learn.learned import _digest

    content = {k: v for k, v in blob.items() if k != "sha256"}
    return json.dumps({**content, "sha256": _digest(content)})


def _tree_edits(text: str, rng) -> list:
    """Edits of LightGBM's text model inside a model file: fields of a tree set out of range, child pointers
    turned into loops, lines deleted, trees duplicated or reordered, the text cut, numbers replaced."""
    lines = text.split("\n")
    tree0 = lines.index("Tree=0")
    tree1 = lines.index("Tree=1")
    cat = next(i for i, line in enumerate(lines) if line == "num_cat=1")
    start = max(i for i in range(cat) if lines[i].startswith("Tree="))

    def field(at, key, value):
        out = list(lines)
        k = next(i for i in range(at, len(out)) if out[i].startswith(key + "="))
        out[k] = f"{key}={value}"
        return "\n".join(out)

    def first_values(at, key):
        return next(line for line in lines[at:] if line.startswith(key + "=")).split("=", 1)[1].split()

    n_split = len(first_values(tree0, "split_feature"))
    edits = {}
    for value in ("999999", "15", "-1", "x", "1e3"):
        edits[f"split_feature {value}"] = field(tree0, "split_feature", " ".join([value] * n_split))
    left, right = first_values(tree0, "left_child"), first_values(tree0, "right_child")
    edits["a child pointing back at the root"] = field(tree0, "left_child", " ".join(["0"] + left[1:]))
    edits["a split its own child"] = field(tree0, "right_child", " ".join(right[:1] + ["1"] + right[2:]))
    edits["a leaf beyond the tree"] = field(tree0, "left_child", " ".join(["-99"] + left[1:]))
    edits["a leaf twice"] = field(tree0, "right_child", " ".join(left[:1] + right[1:]))
    edits["a NaN threshold"] = field(tree0, "threshold", " ".join(["nan"] * n_split))
    edits["a decision type of 255"] = field(tree0, "decision_type", " ".join(["255"] * n_split))
    edits["one leaf more"] = field(tree0, "num_leaves", str(n_split + 2))
    edits["one leaf less"] = field(tree0, "num_leaves", str(n_split))
    edits["an infinite leaf"] = field(tree0, "leaf_value", " ".join(["inf"] * (n_split + 1)))
    edits["a categorical set beyond the bounds"] = field(start, "cat_boundaries", "0 99")
    edits["a categorical set index beyond num_cat"] = field(start, "threshold", " ".join(
        ["5"] * len(first_values(start, "threshold"))))
    edits["a huge categorical bitset"] = field(start, "cat_threshold", " ".join(["4294967295"] * 100000))
    edits["a linear tree"] = field(tree0, "is_linear", "1")
    edits["another objective"] = field(0, "objective", "regression")
    edits["more features than declared"] = field(0, "max_feature_idx", "99")
    edits["two classes"] = field(0, "num_class", "2")
    for k in range(tree0, tree1):  # every line of the first tree deleted in turn
        edits[f"line {k} deleted"] = "\n".join(lines[:k] + lines[k + 1:])
    edits["no end of trees"] = "\n".join(line for line in lines if line != "end of trees")
    edits["a tree twice"] = "\n".join(lines[:tree1] + lines[tree0:tree1] + lines[tree1:])
    edits["trees out of order"] = text.replace("Tree=0", "Tree=X").replace("Tree=1", "Tree=0").replace("Tree=X",
                                                                                                       "Tree=1")
    edits["no header line"] = "\n".join(lines[1:])
    for cut in rng.integers(0, len(text), 12):
        edits[f"cut at {cut}"] = text[:cut]
    numbers = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?(e[-+]?\d+)?", text)]
    for k in rng.integers(0, len(numbers), 40):
        a, b = numbers[k]
        edits[f"number at {a} replaced"] = text[:a] + str(rng.choice(["-1", "0", "1", "999999", "1e308", "nan",
                                                                       "-99", "x", ""])) + text[b:]
    return list(edits.items())


def _blob_edits(blob: dict) -> list:
    """One-field edits of a model file's JSON (each sealed with a matching checksum)."""
    edits = {"no params": {k: v for k, v in blob.items() if k != "params"},
             "an unknown parameter": {**blob, "params": {**blob["params"], "bogus": 1}},
             "a parameter of the wrong type": {**blob, "params": {**blob["params"], "n_estimators": "x"}},
             "columns null": {**blob, "columns": None}, "columns unknown": {**blob, "columns": ["nope"]},
             "features as text": {**blob, "features": "abc"},
             "features reordered": {**blob, "features": blob["features"][::-1]},
             "categories a list": {**blob, "categories": []},
             "categories of numbers": {**blob, "categories": {"op": [1, 2]}},
             "the model a number": {**blob, "model": 5}, "the model empty": {**blob, "model": ""},
             "an extra key": {**blob, "extra": 1}, "format version 1": {**blob, "format_version": 1}}
    return [(name, _resealed(edit)) for name, edit in edits.items()]


_FUZZ_RUNNER = """
import json, sys
import numpy as np, pandas as pd
from lab.learn.learned import LearnedScorer
trace = pd.read_parquet(sys.argv[2])
for line in open(sys.argv[1]):
    case = json.loads(line)
    print("CASE", case["name"], flush=True)
    try:
        scorer = LearnedScorer.load(case["path"])
    except ValueError as error:
        print("RESULT", json.dumps({"name": case["name"], "outcome": "ValueError", "message": str(error)}), flush=True)
        continue
    scores = scorer.predict(trace)
    again = scorer.predict(trace)
    print("RESULT", json.dumps({"name": case["name"], "outcome": "loaded", "scores": scores.tolist(),
                               "deterministic": bool(np.array_equal(scores, again, equal_nan=True))}), flush=True)
"""


def test_learned_scorer_load_fuzz_only_value_errors_naming_the_path(model_file, tmp_path):
    """Byte flips, field edits and structural edits of a valid model file: loading each (in a subprocess, so a
    crash fails the test) raises a ValueError naming the path, or loads a model whose scores are those of the
    file it came from (flips: the checksum keeps every one that changes the content out) or, for edits sealed
    with a matching checksum (a crafted file), finite scores in [0, 1], the same on every call."""
    import json as json_module

    path, trace_path, original = model_file
    raw = path.read_bytes()
    blob = json_module.loads(raw)
    rng = np.random.default_rng(23)
    cases = []
    for k in range(300):  # random byte flips, one to five per file, without a matching checksum
        data = bytearray(raw)
        for position in rng.integers(0, len(data), 1 + k % 5):
            data[position] = int(rng.integers(0, 256))
        cases.append((f"flip {k}", bytes(data), False))
    for name, text in _tree_edits(blob["model"], rng):
        cases.append((f"tree: {name}", _resealed({**blob, "model": text}).encode(), True))
        cases.append((f"tree unsealed: {name}", json_module.dumps({**blob, "model": text}).encode(), False))
    for name, text in _blob_edits(blob):
        cases.append((f"file: {name}", text.encode(), True))
    listing = tmp_path / "cases.jsonl"
    with open(listing, "w") as out:
        for k, (name, data, _) in enumerate(cases):
            case_path = tmp_path / f"case-{k}.json"
            case_path.write_bytes(data)
            out.write(json_module.dumps({"name": name, "path": str(case_path)}) + "\n")
    done = subprocess.run([sys.executable, "-c", _FUZZ_RUNNER, str(listing), str(trace_path)], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).parents[1])
    started = [line[5:] for line in done.stdout.splitlines() if line.startswith("CASE ")]
    assert done.returncode == 0, f"crashed ({done.returncode}) on {started[-1:]}: {done.stderr[-3000:]}"
    results = {r["name"]: r for r in (json_module.loads(line[7:]) for line in done.stdout.splitlines()
                                      if line.startswith("RESULT "))}
    assert len(results) == len(cases)
    crafted = {name for name, _, sealed in cases if sealed}
    for k, (name, _, sealed) in enumerate(cases):
        result = results[name]
        if result["outcome"] == "ValueError":
            assert f"path {str(tmp_path / f'case-{k}.json')!r}" in result["message"], (name, result["message"])
            continue
        scores = np.asarray(result["scores"], dtype=np.float64)
        assert result["deterministic"] and len(scores) == len(original), name
        if name in crafted:
            assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all(), name
        else:
            np.testing.assert_array_equal(scores, original, err_msg=name)
    refused = [name for name in crafted if results[name]["outcome"] == "ValueError"]
    for must in ("tree: split_feature 999999", "tree: split_feature 15", "tree: a child pointing back at the root",
                 "tree: a split its own child", "tree: no end of trees", "tree: a leaf twice",
                 "tree: a NaN threshold", "tree: a decision type of 255", "tree: one leaf more", "tree: one leaf less",
                 "tree: an infinite leaf", "tree: a categorical set beyond the bounds", "tree: a linear tree",
                 "tree: a categorical set index beyond num_cat", "tree: another objective",
                 "file: no params", "file: columns null", "file: categories a list", "file: the model a number",
                 "file: an unknown parameter", "file: features as text"):
        assert must in refused, must
    assert sum(results[f"flip {k}"]["outcome"] == "ValueError" for k in range(300)) > 250  # nearly every flip
    loaded = sorted(name for name in crafted if results[name]["outcome"] == "loaded")
    print("crafted files that load (valid models, other numbers):", loaded)


def test_a_damaged_or_crafted_default_model_is_trained_again_never_trusted(model_file, tmp_path, monkeypatch):
    """The default model that ``lab.score(trace, "learned")`` loads from the cache directory is a file too."""
    import json as json_module

    from lab.learn import learned as learned_module

    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    small = {"presets": [], "capture": {}, "training": [], "capacity_fraction": [0.02, 0.1],
             "params": {"n_estimators": 10, "num_leaves": 7, "min_child_samples": 3}}
    monkeypatch.setattr(learned_module, "DEFAULT_TRAINING", small)
    monkeypatch.setattr(learned_module, "default_training_traces", lambda config=None: _model_traces())
    monkeypatch.setattr(learned_module, "_DEFAULT", {})
    trace = _model_traces()[0]
    first = lab.score(trace, "learned")["eviction_score"].to_numpy()
    cached = learned_module.default_model_path()
    blob = json_module.loads(cached.read_text())
    lines = blob["model"].split("\n")
    k = next(i for i, line in enumerate(lines) if line.startswith("split_feature="))
    lines[k] = "split_feature=" + " ".join(["999999"] * len(lines[k].split("=")[1].split()))
    for damaged in (_resealed({**blob, "model": "\n".join(lines)}),  # crafted: a split reading far outside the row
                    cached.read_text().replace("leaf_value=", "leaf_value=9", 1)):  # damaged: its checksum fails
        cached.write_text(damaged)
        monkeypatch.setattr(learned_module, "_DEFAULT", {})
        with pytest.warns(UserWarning, match="the cached default model cannot be used .*training it again"):
            again = lab.score(trace, "learned")["eviction_score"].to_numpy()
        np.testing.assert_array_equal(again, first)
        assert lab.LearnedScorer.load(cached)  # and the cache holds a good model again


def test_a_commit_this_process_left_unfinished_is_finished_by_its_next_report(tmp_path):
    """A KeyboardInterrupt in a notebook session can stop run_report while it moves a report in: the session's
    next report run in that folder finishes the move (its process is still alive, the commit is its own)."""
    from lab.ui.report import MANIFEST, remove_stale_work

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "r.ipynb").write_text("old notebook")
    (folder / "r.html").write_text("new html")  # moved in before the interrupt
    commit = folder / f".r.{os.getpid()}.commit"
    commit.mkdir()
    (commit / "r.ipynb").write_text("new notebook")
    (commit / MANIFEST).write_text(json.dumps({"install": ["r.html", "r.ipynb"], "remove": []}))
    running = folder / f".r.{os.getpid()}.run"  # this process's own scratch of a run: left alone
    running.mkdir()
    remove_stale_work(folder)
    assert (folder / "r.ipynb").read_text() == "new notebook" and (folder / "r.html").read_text() == "new html"
    assert not commit.exists() and running.exists()


def test_best_online_policy_names_a_missing_metric_and_a_wrong_table():
    table = pd.DataFrame({"dram_traffic_mb": [3.0, 2.0]}, index=["LRU", "FIFO"])
    assert lab.best_online_policy(table) == ["FIFO"]
    with pytest.raises(ValueError, match=r"metric must be a column of the table \(dram_traffic_mb\), got 'dram_mb'"):
        lab.best_online_policy(table, metric="dram_mb")
    with pytest.raises(TypeError, match="table must be a DataFrame indexed by policy or a Series, got list"):
        lab.best_online_policy([3.0, 2.0])
    with pytest.raises(ValueError, match="tolerance_pct"):
        lab.best_online_policy(table, tolerance_pct=-1)
