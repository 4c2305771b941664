import json
import subprocess
import sys

import pandas as pd
import pytest

import lab
from lab.cli import main

SEED_KEYS = ["cache_hits", "dram_accesses", "total_latency", "evictions", "bandwidth_wait_time", "cache_hit_rate"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_prints_the_seeds_metrics(capsys):
    code, out, _ = run(capsys, "simulate", "--model_type", "Transformer", "--num_layers", "12", "--batch_size", "32",
                       "--seq_length", "128", "--reuse_probability", "0.3", "--policy", "LRU", "--json")
    printed = json.loads(out)
    assert code == 0 and list(printed)[:6] == SEED_KEYS
    expected = lab.simulate(lab.generate_trace("Transformer"), "LRU", 64.0)
    assert {k: printed[k] for k in expected.metrics} == pytest.approx(expected.metrics)
    assert list(printed)[len(expected.metrics):] == ["model", "note", "units"]  # the metrics, what produced them
    assert printed["units"]["total_latency"] == printed["units"]["bandwidth_wait_time"] == "ms"
    assert set(printed["units"]) == set(expected.metrics)  # every metric has its unit
    assert printed["model"] == json.loads(json.dumps(expected.model.to_dict())) and printed["note"] == ""


def test_dashed_flags_and_presets(capsys):
    code, out, _ = run(capsys, "simulate", "--model-type", "cnn", "--num-layers", "4", "--policy", "min",
                       "--capacity-mb", "16", "--cost", "A100-SXM4-40GB", "--json")
    trace = lab.generate_trace("CNN", num_layers=4)
    printed = json.loads(out)
    expected = lab.simulate(trace, "Belady", 16, "A100-SXM4-40GB", per_access=False)
    assert code == 0 and {k: printed[k] for k in expected.metrics} == pytest.approx(expected.metrics)
    assert printed["model"]["cost"] == "A100-SXM4-40GB" and printed["model"]["buffer"] == "cache"  # its L2


def test_generate_to_file_then_simulate_ml_from_it(capsys, tmp_path):
    path = tmp_path / "trace.parquet"
    code, out, _ = run(capsys, "generate", "--model_type", "MoE", "--num_layers", "2", "--dim", "top_k=1",
                       "--dim", "expert_skew=0.5", "--out", str(path), "--json")
    assert code == 0 and json.loads(out)["out"] == str(path)
    trace = lab.read_trace(path)
    pd.testing.assert_frame_equal(trace, lab.generate_trace("MoE", num_layers=2, top_k=1, expert_skew=0.5),
                                  check_categorical=False, check_dtype=False)
    code, out, _ = run(capsys, "simulate", "--trace", str(path), "--policy", "ML", "--out", str(tmp_path / "a.csv"),
                       "--json")
    assert code == 0 and json.loads(out)["accesses"] == len(trace)
    assert len(pd.read_csv(tmp_path / "a.csv")) == len(trace)


def test_generate_to_stdout(capsys):
    code, out, _ = run(capsys, "generate", "--model_type", "MLP", "--num_layers", "1", "--json")
    records = json.loads(out)
    assert code == 0 and len(records) == len(lab.generate_trace("MLP", num_layers=1))
    assert records[0]["reuse_distance"] is None  # a first access has none: JSON null, not NaN


def test_schedule_validate_compile(capsys, tmp_path):
    code, out, _ = run(capsys, "schedule", "--num_layers", "2", "--top", "5", "--out", str(tmp_path / "s.csv"), "--json")
    assert code == 0 and [r["rank"] for r in json.loads(out)] == [1, 2, 3, 4, 5]
    assert "eviction_score" in pd.read_csv(tmp_path / "s.csv")
    reference = lab.write_trace(lab.generate_trace("CNN"), tmp_path / "ref.parquet")
    code, out, _ = run(capsys, "validate", "--num_layers", "2", "--reference", str(reference), "--window", "8",
                       "--json")
    report = json.loads(out)
    assert code == 0 and "reuse_distance_wasserstein" in report and report["size_distribution_ks"]["p_value"] < 0.05
    code, out, _ = run(capsys, "compile", "--num_layers", "2", "--capacity_mb", "32", "--out", str(tmp_path / "p.csv"),
                       "--json")
    summary = json.loads(out)
    online = [p for p in lab.policy_names() if not lab.get_policy(p).offline]
    assert code == 0 and [p["policy"] for p in summary["policies"]] == [*online, "Belady", "OPT"]
    assert summary["units"]["total_latency"] == summary["units"]["bandwidth_wait_time"] == "ms"
    assert pd.read_csv(tmp_path / "p.csv")["action"].isin(["hit", "write", "load", "stream"]).all()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "--policy", "NOPE"], "unknown policy 'NOPE'"),
        (["simulate", "--capacity_mb", "-4"], "capacity_mb must be"),
        (["simulate", "--num_layers", "ten"], "argument --num_layers/--num-layers: invalid int value: 'ten'"),
        (["generate", "--model_type", "RNN"], "unknown model_type 'RNN'"),
        (["generate", "--dim", "hidden"], "expected KEY=VALUE"),
        (["generate", "--dim", "channels=4"], "unknown dimension(s) ['channels']"),
        (["simulate", "--trace", "/nonexistent/t.parquet"], "no trace file at '/nonexistent/t.parquet'"),
        (["simulate", "--cost", "TPU"], "hardware preset name"),
        (["validate", "--window", "0"], "window must be an integer >= 1"),
        (["simulate", "--buffer", "l2"], "argument --buffer: buffer must be one of ['scratchpad', 'cache'], got 'l2'"),
        (["compile", "--buffer", "Cache"], "argument --buffer: buffer must be one of ['scratchpad', 'cache']"),
        (["simulate", "--policy", "OPT"], "OPT is the optimum, not a policy that simulates: run `python -m lab optimal`"),
        (["optimal", "--buffer", "cache"], "the optimum is a schedule of the scratchpad"),
        (["optimal", "--time-limit-s", "0"], "argument --time_limit_s/--time-limit-s: time_limit_s must be a number of "
                                             "seconds in (0, 86400], got 0"),
        (["optimal", "--time-limit-s", "soon"], "argument --time_limit_s/--time-limit-s: expected a number, got 'soon'"),
        (["optimal", "--time-limit-s", "nan"], "time_limit_s must be a number in [0, 86400.0], got nan"),
        (["optimal", "--gap-pct", "-1"], "argument --gap_pct/--gap-pct: gap_pct must be a number in [0, 100], got -1.0"),
        (["optimal", "--gap-pct", "101"], "gap_pct must be a number in [0, 100], got 101.0"),
        (["optimal", "--method", "lp"], "argument --method: invalid choice: 'lp' (choose from 'milp', 'flow')"),
        (["optimal", "--solver", "cplex"], "argument --solver: invalid choice: 'cplex'"),
        (["optimal", "--capacity_mb", "0"], "capacity_mb must be"),
        (["simulate", "--json", "yes"], "unrecognized arguments: yes"),
        (["explode"], "invalid choice: 'explode'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors exit from inside parse_args
        code = exit.code
    _, err = capsys.readouterr()
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_python_dash_m_lab_exit_code_and_no_traceback():
    done = subprocess.run([sys.executable, "-m", "lab", "simulate", "--policy", "nope"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("python -m lab simulate: error: unknown policy 'nope'")
    bad_flag = subprocess.run([sys.executable, "-m", "lab", "simulate", "--nope"], capture_output=True, text=True)
    assert bad_flag.returncode == 2 and bad_flag.stderr.count("\n") == 1


def test_capture_writes_the_trace_and_prints_a_summary(capsys, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "gpt2.parquet"
    code, stdout, _ = run(capsys, "capture", "--model", "gpt2", "--batch-size", "1", "--seq-length", "32",
                          "--set", "n_layer=2", "--out", str(out), "--json")
    summary = json.loads(stdout)
    trace = lab.read_trace(out)
    assert code == 0 and summary["rows"] == len(trace) and summary["tensors"] == trace["tensor_id"].nunique()
    assert {"weight", "activation", "input"} <= set(summary["unique_mb_by_kind"])
    with pytest.raises(SystemExit) as exit:
        main(["capture", "--model", "gpt2", "--routing", "skewed"])
    assert exit.value.code == 2 and "expected uniform, zipf or comma-separated weights" in capsys.readouterr().err
    code, _, err = run(capsys, "capture", "--model", "gpt-9")
    assert code == 2 and "unknown model preset 'gpt-9'" in err


def test_help_says_what_each_command_does_in_whole_sentences(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    description = out.split("\n\n")[1].replace("\n", " ")
    assert description.startswith("Generate or capture") and description.endswith("exit code 2.")
    for command in ("generate", "simulate", "optimal", "schedule", "validate", "compile", "capture", "study"):
        assert f"    {command}  " in out
    assert "/" not in out.split("positional arguments:")[1]  # no web endpoints (/simulate ...) a newcomer never saw


@pytest.mark.parametrize("buffer", ["scratchpad", "cache"])
def test_simulate_json_names_the_buffer_model(capsys, buffer):
    code, out, _ = run(capsys, "simulate", "--num_layers", "2", "--policy", "FIFO", "--capacity_mb", "24",
                       "--cost", "H200", "--buffer", buffer, "--json")
    printed = json.loads(out)
    expected = lab.simulate(lab.generate_trace("Transformer", num_layers=2), "FIFO", 24.0, "H200", buffer=buffer,
                            per_access=False)
    model = printed["model"]
    assert code == 0 and model["buffer"] == buffer and model["description"] == expected.model.describe()
    assert (model["cost"], model["capacity_mb"], model["policy"], model["params"]) == ("H200", 24.0, "FIFO", {})
    assert model["buffer_description"] == lab.sim.model.BUFFERS[buffer]
    assert (model["cache_model"] is None) == (buffer == "scratchpad")
    assert printed["dram_traffic_mb"] == pytest.approx(expected.metrics["dram_traffic_mb"])


def test_the_preset_chooses_the_buffer_model_where_none_is_given(capsys):
    runs = {}
    for cost in ("seed", "H100-SXM5"):
        code, out, _ = run(capsys, "simulate", "--num_layers", "2", "--cost", cost, "--capacity_mb", "16", "--json")
        runs[cost] = json.loads(out)["model"]
        assert code == 0
    assert runs["seed"]["buffer"] == "scratchpad" and runs["H100-SXM5"]["buffer"] == "cache"
    help_text = lab.cli.build_parser()._subparsers._group_actions[0].choices["compile"].format_help()
    assert "--buffer {scratchpad,cache}" in help_text and "cache for H100-SXM5" in " ".join(help_text.split())


def test_a_degenerate_result_says_why_in_the_json(capsys):
    code, out, _ = run(capsys, "simulate", "--num_layers", "2", "--capacity_mb", "0.5", "--json")
    note = json.loads(out)["note"]
    assert code == 0 and note.startswith("Every tensor is larger than the buffer (0.5 MB")
    code, out, _ = run(capsys, "simulate", "--num_layers", "2", "--capacity_mb", "0.5")  # the summary says it too
    assert code == 0 and f"note: {note}" in out.splitlines()


def test_compile_takes_the_buffer_model(capsys):
    summaries = {}
    for buffer in ("scratchpad", "cache"):
        code, out, _ = run(capsys, "compile", "--num_layers", "2", "--capacity_mb", "24", "--buffer", buffer, "--json")
        summaries[buffer] = json.loads(out)
        assert code == 0
        model = summaries[buffer]["model"]
        assert (model["buffer"], model["cost"], model["capacity_mb"], model["plan_buffer"]) == (
            buffer, "seed", 24.0, "scratchpad")
    pad, cache = ({p["policy"]: p for p in summaries[b]["policies"]} for b in ("scratchpad", "cache"))
    trace = lab.generate_trace("Transformer", num_layers=2)
    for policy in ("LRU", "S3-FIFO"):
        for buffer, rows in (("scratchpad", pad), ("cache", cache)):
            expected = lab.simulate(trace, policy, 24.0, buffer=buffer, per_access=False).metrics["dram_traffic_mb"]
            assert rows[policy]["dram_traffic_mb"] == pytest.approx(expected)
    assert cache["S3-FIFO"]["params"] == lab.get_policy("S3-FIFO").get_params() and cache["S3-FIFO"]["note"] == ""
    # the plan and the optimum are the software-managed buffer's under either model; ML reads per-tensor scores
    assert summaries["cache"]["optimum_mb"] == summaries["scratchpad"]["optimum_mb"]
    assert "ML" in pad and "ML" not in cache and "cannot run in the hardware cache" in summaries["cache"]["skipped"]["ML"]
    assert summaries["scratchpad"]["skipped"] == {}


def test_simulate_prints_a_short_summary_with_units_by_default(capsys):
    code, out, _ = run(capsys, "simulate", "--num_layers", "2", "--policy", "FIFO", "--capacity_mb", "24")
    m = lab.simulate(lab.generate_trace("Transformer", num_layers=2), "FIFO", 24.0, per_access=False)
    lines = out.splitlines()
    assert code == 0 and 3 <= len(lines) <= 6 and not out.lstrip().startswith("{")
    assert lines[0] == (f"FIFO at 24 MB: DRAM traffic {m.metrics['dram_traffic_mb']:,.1f} MB (read "
                        f"{m.metrics['dram_reads_mb']:,.1f} MB + written {m.metrics['dram_writes_mb']:,.1f} MB), byte hit "
                        f"rate {m.metrics['byte_hit_rate']:.1f} %")
    assert f"latency {m.metrics['total_latency']:,.2f} ms, of which {m.metrics['bandwidth_wait_time']:,.2f} ms" in lines[1]
    assert lines[2] == f"model: {m.model.describe()}"


def test_the_optimal_command_prints_what_lab_optimal_returns(capsys, tmp_path):
    trace = lab.generate_trace("Transformer", num_layers=2)
    code, out, _ = run(capsys, "optimal", "--num-layers", "2", "--capacity-mb", "24", "--json")
    printed = json.loads(out)
    expected = lab.optimal(trace, 24.0)
    assert code == 0 and printed["exact"] is True and expected.exact
    for key in ("exact_mb", "lower_mb", "upper_mb", "byte_granular_mb", "upper_read_mb", "upper_write_mb"):
        assert printed[key] == pytest.approx(getattr(expected, key)), key
    assert printed["status"] == expected.status and printed["model"]["buffer"] == "scratchpad"
    assert printed["metrics"]["dram_traffic_mb"] == pytest.approx(expected.upper_mb)
    assert printed["units"]["exact_mb"] == "MB" and printed["units"]["metrics"]["total_latency"] == "ms"
    code, out, _ = run(capsys, "optimal", "--num-layers", "2", "--capacity-mb", "24", "--out", str(tmp_path / "p.csv"))
    lines = out.splitlines()
    assert code == 0 and len(lines) <= 6
    assert lines[0].startswith(f"optimum at 24 MB: {expected.exact_mb:,.1f} MB of DRAM traffic, exact (read ")
    assert lines[1].startswith(f"byte-granular bound {expected.byte_granular_mb:,.1f} MB")
    assert lines[2].startswith(f"status: {expected.status}; ")
    assert lines[3].startswith("model: scratchpad, whole tensors, bypass allowed; 24 MB, seed cost model")
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(expected.plan)


def test_the_optimal_command_says_when_it_is_a_bracket(capsys):
    trace = lab.generate_trace("Transformer", num_layers=2)
    expected = lab.optimal(trace, 24.0, method="flow", cost="H200")
    code, out, _ = run(capsys, "optimal", "--num-layers", "2", "--capacity-mb", "24", "--method", "flow", "--cost",
                       "H200", "--gap-pct", "5", "--time-limit-s", "2.5", "--json")
    printed = json.loads(out)
    assert code == 0 and printed["method"] == "flow" and printed["model"]["cost"] == "H200"
    assert (printed["lower_mb"], printed["upper_mb"]) == pytest.approx((expected.lower_mb, expected.upper_mb))
    code, out, _ = run(capsys, "optimal", "--num-layers", "2", "--capacity-mb", "24", "--method", "flow", "--cost",
                       "H200")
    first = out.splitlines()[0]
    if expected.exact:  # the flow rounded can meet its bound: then it says exact
        assert "exact" in first
    else:
        assert first.startswith(f"optimum at 24 MB: between {expected.lower_mb:,.1f} MB and {expected.upper_mb:,.1f} MB")
        assert f"a bracket {expected.gap_pct:.2f} % wide" in first
    assert "H200's own buffer is a hardware cache" in out  # the optimum is the scratchpad's


def test_every_option_has_help_and_shows_its_default(capsys):
    parser = lab.cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert "optimal" in commands
    for name, command in commands.items():
        help_text = " ".join(command.format_help().split())
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            if action.default not in (None, False, []):
                assert (f"(default: {action.default})" in help_text or "default" in action.help), \
                    f"{name} {action.option_strings[0]} does not show its default"
    simulate = " ".join(commands["simulate"].format_help().split())
    assert "on-chip buffer size in MB (MiB) (default: 64.0)" in simulate
    optimal = " ".join(commands["optimal"].format_help().split())
    assert "seconds after which the integer program stops with its bracket (default: 30.0)" in optimal
    assert "--gap_pct PCT, --gap-pct PCT" in optimal and "(default: milp)" in optimal


def test_summaries_by_default_json_with_a_flag(capsys, tmp_path):
    for argv in (["generate", "--num_layers", "2"], ["schedule", "--num_layers", "2", "--top", "3"],
                 ["validate", "--num_layers", "2"], ["compile", "--num_layers", "2", "--capacity_mb", "24"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and not out.lstrip().startswith(("{", "[")) and len(out.splitlines()) <= 12, argv
        code, out, _ = run(capsys, *argv, "--json")
        assert code == 0 and json.loads(out) is not None, argv
    code, out, _ = run(capsys, "compile", "--num_layers", "2", "--capacity_mb", "24")
    prediction = lab.predict_compile(lab.generate_trace("Transformer", num_layers=2), 24.0)
    assert out.startswith(f"plan at 24 MB: the optimum moves {prediction.optimum.upper_mb:,.1f} MB of DRAM traffic")
    assert f"no buffer: {prediction.traffic_mb['no_buffer']:,.1f} MB of DRAM traffic" in out


def test_schedule_explains_its_ties(capsys):
    code, out, _ = run(capsys, "schedule", "--top", "5")
    groups = lab.predict_schedule(lab.generate_trace("Transformer")).groups
    top = groups.iloc[0]
    assert code == 0 and top["tensors"] > 5  # the seed's top scores tie
    assert (f"ranks 1-{top['last_rank']}: {top['tensors']} tensors tie at score {top['eviction_score']:.3f}"
            in out)


def test_a_captures_counts_reconcile_with_simulate_and_compile(capsys, tmp_path, monkeypatch):
    """The capture's rows are accesses and persist marks; its bytes accessed less the writes never used again are
    the DRAM traffic with no buffer that compile reports."""
    pytest.importorskip("torch")
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "gpt2.parquet"
    code, out, _ = run(capsys, "capture", "--model", "gpt2", "--seq-length", "32", "--set", "n_layer=2", "--out",
                       str(path), "--json")
    record = json.loads(out)
    trace = lab.read_trace(path)
    marks = int((trace["access"] == "persist").sum())
    assert code == 0 and marks > 0 and record["persist_marks"] == marks
    assert record["rows"] == len(trace) == record["accesses"] + marks
    assert record["accesses"] == lab.simulate(trace, "LRU", 4.0, per_access=False).metrics["accesses"]
    assert record["accessed_mb"] == pytest.approx(record["read_mb"] + record["written_mb"])
    assert record["accessed_mb"] + record["persist_mb"] == pytest.approx(trace["size_mb"].sum())
    no_buffer = lab.predict_compile(trace, 4.0, policies=["LRU"], optimum=False).traffic_mb["no_buffer"]
    assert record["no_buffer_traffic_mb"] == pytest.approx(no_buffer)
    assert record["no_buffer_traffic_mb"] <= record["accessed_mb"]
    code, out, _ = run(capsys, "capture", "--model", "gpt2", "--seq-length", "32", "--set", "n_layer=2")
    assert code == 0 and f"{record['accesses']:,} accesses of {record['tensors']:,} tensors, and {marks:,} persist " \
                         f"marks ({len(trace):,} rows)" in out
    assert f"DRAM traffic with no buffer: {no_buffer:,.1f} MB (what simulate and compile count)" in out
    assert "move no data themselves" in out
    code, out, _ = run(capsys, "simulate", "--trace", str(path), "--capacity_mb", "4")
    assert code == 0 and f"persist marks: {marks:,} of the trace's {len(trace):,} rows" in out
    assert f"({record['accesses']:,} accesses)" in out
