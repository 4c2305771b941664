"""The policy-comparison report: its parameters, and a real papermill run on the smallest parameters."""

import ast
import os
import json
import re
from pathlib import Path

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

import lab
from lab.ui.report import check_params, load_params, notebook_parameters, provenance, read_answer, run_report

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01-policy-comparison.ipynb"
REAL_MODELS = ROOT / "notebooks" / "03-real-models.ipynb"
LEARNED = ROOT / "notebooks" / "07-learned-eviction.ipynb"
STUDY = ROOT / "notebooks" / "08-study.ipynb"
REPORTS = [NOTEBOOK, REAL_MODELS, LEARNED, STUDY]
PARAM_FILES = [(nb, path) for nb in REPORTS for path in sorted((ROOT / "params" / nb.stem).glob("*.yaml"))]
SMALLEST = {"model_type": "MLP", "num_layers": 2, "batch_size": 2, "seq_length": 8, "capacity_mb": 0.5,
            "capacity_points": 3, "top": 5}


def test_the_parameter_sets_exist():
    stems = {(nb.stem, p.stem) for nb, p in PARAM_FILES}
    assert {("01-policy-comparison", s) for s in ("default", "cnn", "mlp", "moe")} <= stems
    assert ("03-real-models", "default") in stems
    assert {("07-learned-eviction", s) for s in ("forward", "training", "moe")} <= stems
    assert ("08-study", "default") in stems


@pytest.mark.parametrize("notebook, path", PARAM_FILES, ids=lambda p: p.name)
def test_every_params_key_is_a_notebook_parameter(notebook, path):
    params = load_params(path)
    assert set(params) <= set(notebook_parameters(notebook)), "papermill would only warn"
    check_params(notebook, params, str(path))


@pytest.mark.parametrize("notebook", REPORTS, ids=lambda p: p.name)
def test_every_parameter_has_a_help_comment(notebook):
    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")]
    names = [node.target.id for node in ast.parse(cell.source).body]  # annotated: name: type = value
    parameters = notebook_parameters(notebook)
    assert len(lines) == len(names) == len(parameters)
    assert all("  # " in line for line in lines)
    # papermill --help-notebook shows each parameter's type
    assert all(info["inferred_type_name"] not in ("None", "", None) for info in parameters.values()), parameters


def test_unknown_parameters_are_an_error():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['layers'\]"):
        check_params(NOTEBOOK, {"layers": 3})


def test_provenance_states_parameters_and_versions():
    table = provenance({"seed": 0})
    assert table.iloc[0].tolist() == ["parameter", "seed", "0"]
    assert {"python", "lab", "numpy", "pandas", "numba", "papermill"} <= set(table["name"])


def _no_error_nor_stderr(nb):
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, stderr  # no warning, no progress bar: a report reads the same whatever ran before it
    return outputs


def _answer_comes_first(nb):
    """The report's first output (after its title and parameters) is its answer table, rounded for reading."""
    first = next(c for c in nb.cells if c.cell_type == "code" and c.outputs and "parameters" not in
                 c.metadata.get("tags", []))
    answer = [o for o in first.outputs if "application/vnd.lab.answer+json" in o.get("data", {})]
    assert answer and first.outputs[0] is answer[0], "the answer table is not the report's first output"
    html = answer[0]["data"]["text/html"]
    assert not re.search(r"\d\.\d{4,}", html), "unrounded numbers in the answer"  # three significant digits
    assert ">True<" not in html and ">False<" not in html


def _figures_are_valid_svg(folder, names):
    import xml.etree.ElementTree as ET

    for name in names:
        svg = folder / "figures" / f"{name}.svg"
        assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg", svg
        assert "(MB)" in svg.read_text() or "(accesses)" in svg.read_text()  # units on the axes


ANSWER_COLUMNS = ["workload", "buffer (MB)", "buffer model", "cost preset", "best online policy",
                  "policy parameters", "DRAM traffic (MB)", "byte hit rate (%)",
                  "above optimum, at least (%)", "above optimum, at most (%)", "capacity for 90 % (MB)",
                  "capacity for 99 % (MB)",
                  "note"]


@pytest.fixture(scope="module")
def smallest(tmp_path_factory):
    """The policy-comparison report run once on the smallest parameters (with its HTML), shared by this module's
    tests (read only)."""
    return run_report(NOTEBOOK, SMALLEST, tmp_path_factory.mktemp("smallest") / "smallest.ipynb")


def test_report_runs_on_the_smallest_parameters(smallest):
    from lab.ui.report import read_answer

    out = smallest
    tmp_path = out.parent
    nb = nbformat.read(out, as_version=4)
    outputs = _no_error_nor_stderr(nb)
    text = json.dumps([o.get("data", {}).get("text/plain", "") for o in outputs])
    for expected in ("hit rate (%)", "reuse_entropy", "gap closed (%)", "'MLP'"):  # tables in words, with units
        assert expected in text
    assert "gap_closed_pct" not in text and "dram_traffic_mb" not in text
    assert "eviction score" in json.dumps([o.get("data", {}).get("text/html", "") for o in outputs])
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # metric bars, occupancy heatmap, capacity curves, reuse histogram
    html = (tmp_path / "smallest.html").read_text()
    assert html.count("data:image/png;base64") >= 4
    assert ".jp-CodeCell .jp-Cell-inputWrapper { display: none; }" in html and "lab-code-toggle" in html
    assert "numpy" in html and "model_type" in html  # the parameters and versions it was made with
    question, answer = read_answer(out)  # the answer table, near the top
    assert question.startswith("Which eviction policy moves the least DRAM traffic through a 0.5 MB buffer")
    assert answer.columns.tolist() == ANSWER_COLUMNS and len(answer) == 1
    row = answer.iloc[0]
    assert row["workload"].startswith("MLP") and row["buffer (MB)"] == 0.5 and row["DRAM traffic (MB)"] > 0
    assert (row["buffer model"], row["cost preset"]) == ("scratchpad", "seed")
    assert 0 <= row["byte hit rate (%)"] <= 100
    assert 0 <= row["above optimum, at least (%)"] <= row["above optimum, at most (%)"]
    assert row["capacity for 90 % (MB)"] <= row["capacity for 99 % (MB)"]
    _answer_comes_first(nb)
    _figures_are_valid_svg(tmp_path, ["metric-bars", "capacity-curves", "occupancy", "reuse-distances"])


def test_a_failed_report_leaves_nothing_behind(tmp_path):
    with pytest.raises(PapermillExecutionError, match="unknown model_type 'RNN'"):
        run_report(NOTEBOOK, {**SMALLEST, "model_type": "RNN"}, tmp_path / "bad.ipynb")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("notebook", REPORTS, ids=lambda p: p.name)
def test_the_parameters_cell_comes_first(notebook):
    nb = nbformat.read(notebook, as_version=4)
    assert nb.cells[0].metadata.get("tags") == ["parameters"]


def test_real_models_report_runs_on_the_smallest_parameters(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "captures"))
    params = {"models": ["gpt2", "mixtral-8x7b"], "num_layers": 1, "seq_length": 16, "capacity_points": 3,
              "capacity_mb": 8.0}
    from lab.ui.report import read_answer

    cold = run_report(REAL_MODELS, params, tmp_path / "cold" / "real.ipynb")  # an empty capture cache
    nb = nbformat.read(cold, as_version=4)
    outputs = _no_error_nor_stderr(nb)
    # the report cached its captures where the API finds them again: the same parameters read them back, capturing
    # nothing (a report run on them gives the same answer: captures read back are equal, tests/test_models.py, and
    # a report's numbers are a function of its parameters, test_same_parameters_same_numbers)
    cached = sorted((tmp_path / "captures").glob("*.parquet"))
    assert len(cached) == len(params["models"])
    from lab.workloads import models as model_presets

    def no_capture(*args, **kwargs):
        raise AssertionError("a capture the report had cached was captured again")

    monkeypatch.setattr(model_presets, "_capture_uncached", no_capture)
    for name in params["models"]:
        again = lab.capture_model(name, 1, params["seq_length"], num_layers=params["num_layers"])
        assert len(again) > 0 and again.attrs["capture"]["name"] == name
    assert sorted((tmp_path / "captures").glob("*.parquet")) == cached
    text = json.dumps([o.get("data", {}).get("text/plain", "") for o in outputs])
    for expected in ("DRAM reads (MB)", "reuse_distance_wasserstein", "mixtral-8x7b", "working set (MB)"):
        assert expected in text
    _answer_comes_first(nb)
    # per model: capacity curves, traffic by kind, by module, layer and phase, reuse histogram
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 2 * 4
    # and the occupancy timeline, interactive: plotly's data for JupyterLab, self-contained HTML for the page
    timelines = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(timelines) == 2 and all("text/html" in o["data"] for o in timelines)
    assert "buffer occupancy" in json.dumps(timelines[0]["data"]["application/vnd.plotly.v1+json"])
    question, answer = read_answer(cold)
    assert "8 MB buffer" in question and answer.columns.tolist() == ANSWER_COLUMNS
    # the H100 preset's costs, in the scratchpad the optimum is set against (the preset's own model is its L2's)
    assert set(answer["buffer model"]) == {"scratchpad"} and set(answer["cost preset"]) == {"H100-SXM5"}
    assert answer["workload"].tolist() == ["gpt2", "mixtral-8x7b"]
    assert (answer["above optimum, at least (%)"] <= answer["above optimum, at most (%)"]).all()
    assert (answer["DRAM traffic (MB)"] > 0).all()
    _figures_are_valid_svg(tmp_path / "cold", [f"{m}-{f}" for m in params["models"] for f in
                                               ("capacity-curves", "traffic-by-kind",
                                                "traffic-by-module-layer-phase", "reuse-distances")])
    _time_section_sets_the_policies_beside_the_planner(nb, params["models"], "cost H100-SXM5; capacity 8 MB")


def _html_table(html: str) -> "list[dict]":
    """The rows of an HTML table (a DataFrame's ``to_html``) as dicts of header -> cell text."""
    rows = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)]
    header = rows[0]
    return [dict(zip(header, (cell.strip() for cell in row))) for row in rows[1:]]


def _time_section_sets_the_policies_beside_the_planner(nb, models, model_words):
    """Report 03's time section: the sentence naming the planner's model, then per model LRU, the best online policy
    and Belady beside PLAN and its lower bound, lower bound <= PLAN <= every demand-fetch policy in graph and eager
    step time (rounded numbers keep their order)."""
    cells = [c for c in nb.cells if c.cell_type == "code" and "time_comparison(" in c.source]
    assert len(cells) == 1
    markdown = [o["data"]["text/markdown"] for o in cells[0].outputs if "text/markdown" in o.get("data", {})]
    assert len(markdown) == 1 and "planner's model (lab.plan)" in markdown[0] and model_words in markdown[0]
    assert "graph execution" in markdown[0] and "eager" in markdown[0] and "scratchpad" in markdown[0]
    html = next(o["data"]["text/html"] for o in cells[0].outputs if "text/html" in o.get("data", {}))
    rows = _html_table(html)
    assert {"workload", "policy", "graph step time (ms)", "eager step time (ms)",
            "DRAM traffic, read + written (MB)"} <= set(rows[0])
    for model in models:
        mine = {r["policy"]: r for r in rows if r["workload"] == model}
        assert list(mine)[0] == "LRU" and list(mine)[-3:] == ["Belady", "PLAN", "PLAN (lower bound)"]
        assert any("best online" in r["role"] for r in mine.values())
        for column in ("graph step time (ms)", "eager step time (ms)"):
            time = {p: float(r[column].replace(",", "")) for p, r in mine.items()}
            demand = [t for p, t in time.items() if not p.startswith("PLAN")]
            assert 0 < time["PLAN (lower bound)"] <= time["PLAN"] <= min(demand)


def test_real_models_training_report_validates_against_a_synthetic_training_step(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    params = {"models": ["gpt2"], "num_layers": 1, "seq_length": 16, "batch_size": 1, "training": True,
              "capacity_points": 3, "capacity_mb": 8.0, "policies": ["LRU", "FIFO"]}
    out = run_report(REAL_MODELS, params, tmp_path / "training.ipynb", html=False)
    outputs = _no_error_nor_stderr(nbformat.read(out, as_version=4))
    text = json.dumps([o.get("data", {}).get("text/plain", "") for o in outputs])
    assert "training step" in text
    svg = (tmp_path / "figures" / "gpt2-reuse-distances.svg").read_text()
    assert "synthetic" in svg and "captured gpt2" in svg
    module_svg = (tmp_path / "figures" / "gpt2-traffic-by-module-layer-phase.svg").read_text()
    assert all(phase in module_svg for phase in ("forward", "backward", "optimizer"))


def test_same_parameters_same_numbers(smallest, tmp_path):
    def numbers(path):
        nb = nbformat.read(path, as_version=4)
        texts = [o.get("data", {}).get("text/plain") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                 if "image/png" not in o.get("data", {}) and o.output_type != "stream"]
        styled = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if "Styler" in o.get("data", {}).get("text/plain", "")]  # the eviction table: its HTML
        assert styled
        return [t for t in texts if "Styler" not in (t or "")] + styled

    first = numbers(smallest)  # the module's run, with its HTML
    second = numbers(run_report(NOTEBOOK, SMALLEST, tmp_path / "b.ipynb", html=False))
    versions = [i for i, text in enumerate(first) if text and "version" in text]
    assert first == second and len(first) > 5 and versions


def _params_file(folder, name, params):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(f"{k}: {v}" for k, v in params.items()))
    return path


def test_reports_are_folders_replaced_whole_and_names_may_not_clash(tmp_path):
    from lab.ui.report import run_reports

    tiny = _tiny_notebook(tmp_path / "notebooks" / "tiny.ipynb")
    first = _params_file(tmp_path / "a", "small.yaml", {"answer": 1})
    out = tmp_path / "reports"
    (notebook,) = run_reports(tiny, [first], out)
    folder = out / tiny.stem / "small"
    assert notebook == folder / "small.ipynb" and (folder / "small.html").is_file()
    (folder / "stale.txt").write_text("from an older run")
    run_reports(tiny, [first], out)  # a rerun replaces the folder as a whole
    assert sorted(p.name for p in folder.iterdir()) == ["figures", "small.html", "small.ipynb"]
    index = (out / "index.html").read_text()
    assert f'href="{tiny.stem}/small/small.html"' in index and "best online policy" in index
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".") and p.name != ".lab-report.lock"]
    twin = _params_file(tmp_path / "b", "small.yaml", {"answer": 1})
    with pytest.raises(ValueError, match=r"same name would write the same report: \['small'\]"):
        run_reports(tiny, [first, twin], out)


def test_one_report_run_at_a_time_per_folder(tmp_path):
    import fcntl

    from lab.ui.report import run_reports

    out = tmp_path / "reports"
    out.mkdir()
    with open(out / ".lab-report.lock", "w") as held:  # another run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another report run is writing into"):
            run_reports(_tiny_notebook(tmp_path / "notebooks" / "tiny.ipynb"),
                        [_params_file(tmp_path, "small.yaml", {"die": 0})], out)


@pytest.mark.parametrize("text, fragment", [("model_type: [unclosed", "not a valid parameter file"),
                                            ("x: !!python/object/apply:os.system ['true']", "not a valid")])
def test_a_malformed_or_unsafe_params_file_is_one_line(tmp_path, capsys, text, fragment):
    from lab.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["report", str(NOTEBOOK), str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_a_failing_report_names_its_params_file(tmp_path, capsys):
    from lab.cli import main

    path = _params_file(tmp_path, "broken.yaml", {**SMALLEST, "num_layers": -3})
    assert main(["report", str(NOTEBOOK), str(path), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"{path}: the notebook failed" in err and "Traceback" not in err
    assert not (tmp_path / "r" / NOTEBOOK.stem / "broken").exists()


def _report_notebook(path, question=None, table=None):
    """An executed report as run_reports leaves it: the notebook (with an answer output) and its HTML."""
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from lab.ui.report import ANSWER_MIMETYPE

    cell = new_code_cell("show_answer(...)")
    if question is not None:
        payload = {"question": question, "columns": list(table), "rows": [list(r) for r in zip(*table.values())]}
        cell.outputs = [new_output("display_data", data={ANSWER_MIMETYPE: payload, "text/plain": question})]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[cell]), path)
    path.with_suffix(".html").write_text("<html></html>")


def test_the_index_lists_every_report_side_by_side_with_links(tmp_path):
    import html.parser

    from lab.ui.report import write_index

    out = tmp_path / "reports"
    question = "Which policy?"
    _report_notebook(out / "01-policy-comparison" / "cnn" / "cnn.ipynb", question,
                     {"workload": ["CNN"], "DRAM traffic (MB)": [180.2871], "best online policy": ["LRU"]})
    _report_notebook(out / "01-policy-comparison" / "mlp" / "mlp.ipynb", question,
                     {"workload": ["MLP"], "DRAM traffic (MB)": [12345.678], "best online policy": ["SIEVE"]})
    _report_notebook(out / "03-real-models" / "default" / "default.ipynb", "Per model?",
                     {"workload": ["gpt2", "llama-2-7b"], "DRAM traffic (MB)": [0.01234, 9.58e1]})
    _report_notebook(out / "04-other" / "default" / "default.ipynb")  # another notebook's report, no answer
    _report_notebook(out / "05-raw" / "default" / "default.ipynb", "Which scorer?",  # an answer in snake_case
                     {"contender": ["learned"], "online": [True], "mean_gap_closed_pct": [51.63], "lru_mb": [3.0]})
    _report_notebook(out / "01-policy-comparison" / ".cnn.123.staging" / "cnn.ipynb", question,
                     {"workload": ["half-written"]})  # a run in progress: not listed
    page = write_index(out).read_text()

    class Links(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.hrefs = []

        def handle_starttag(self, tag, attrs):
            self.hrefs += [value for name, value in attrs if tag == "a" and name == "href"]

    parser = Links()
    parser.feed(page)
    assert sorted(set(parser.hrefs)) == ["01-policy-comparison/cnn/cnn.html", "01-policy-comparison/mlp/mlp.html",
                                    "03-real-models/default/default.html", "04-other/default/default.html",
                                    "05-raw/default/default.html"]
    assert all((out / href).is_file() for href in parser.hrefs)  # every link resolves
    for shown in ("180", "12,346", "0.0123", "95.8", "SIEVE", "llama-2-7b", "Which policy?", "Per model?",
                  "no answer table"):
        assert shown in page
    assert "half-written" not in page and "e+01" not in page
    # in words: column names spelled with their units, yes and no for True and False
    assert "mean gap closed (%)" in page and "LRU (MB)" in page and "<td>yes</td>" in page and "51.6" in page
    assert "mean_gap_closed_pct" not in page and "True" not in page and "lru_mb" not in page
    assert not [p for p in out.iterdir() if p.name.startswith(".index")]  # written atomically


def test_answer_numbers_are_rounded_for_reading():
    import pandas as pd

    from lab.ui.report import format_numbers, round_number

    assert [round_number(v) for v in (95.8123, 1234.5, 0.012345, 0.0, 7, float("nan"), None, "LRU", True, False)] == \
        ["95.8", "1,234", "0.0123", "0", "7", "", "", "LRU", "yes", "no"]
    assert format_numbers(pd.DataFrame({"a": [1.23456e5]}))["a"].tolist() == ["123,456"]


def test_policy_answer_names_the_best_online_policy_and_says_why_when_all_tie():
    from lab.ui.report import policy_answer

    trace = lab.generate_trace("CNN", num_layers=16, batch_size=32, reuse_probability=0.3, seed=0, channels=64,
                               image_size=56)

    def answer(policies, capacity_mb):
        results = lab.run_policies(trace, policies, capacity_mb, per_access=False)
        comparison = lab.metrics_table(results, lab.optimum_rows(trace, capacity_mb))
        return policy_answer(comparison, "CNN", capacity_mb, results=results), comparison

    differ, comparison = answer(["LRU", "S3-FIFO", "Belady"], 16.0)
    assert differ.loc[0, "best online policy"] == "LRU" and differ.loc[0, "note"] == ""
    lru, lower, upper = comparison.loc["LRU", "dram_traffic_mb"], *comparison.loc["OPT", ["opt_lower_mb", "opt_upper_mb"]]
    assert differ.loc[0, "above optimum, at most (%)"] == pytest.approx(100 * (lru - lower) / lower)
    assert differ.loc[0, "above optimum, at least (%)"] == pytest.approx(max(0, 100 * (lru - upper) / upper))
    same, _ = answer(["LRU", "FIFO"], 64.0)
    assert same.loc[0, "best online policy"] == "all tie" and "No policy evicts" in same.loc[0, "note"]


def test_the_answer_row_names_the_buffer_model_cost_preset_and_policy_parameters():
    from lab.ui.report import policy_answer

    trace = lab.generate_trace("MLP", num_layers=2, batch_size=4, seq_length=16, seed=1)
    s3 = lab.get_policy("S3-FIFO", small_ratio=0.3)
    for buffer in ("scratchpad", "cache"):
        cost = "H100-SXM5" if buffer == "cache" else None  # the H100's L2 runs the hardware-cache model
        results = {"S3-FIFO": lab.simulate(trace, s3, 1.0, cost, per_access=False)}
        row = policy_answer(lab.metrics_table(results), "MLP", 1.0, results=results).loc[0]
        assert row["buffer model"] == buffer and row["best online policy"] == "S3-FIFO"
        assert row["cost preset"] == ("H100-SXM5" if buffer == "cache" else "seed")
        assert row["policy parameters"] == "small_ratio=0.3, ghost_ratio=0.9, move_to_main_threshold=2"
    columns = list(policy_answer(lab.metrics_table(results), "MLP", 1.0, results=results).columns)
    assert columns[:5] == ["workload", "buffer (MB)", "buffer model", "cost preset", "best online policy"]
    with pytest.raises(ValueError, match="results must be the comparison's runs"):
        policy_answer(lab.metrics_table(results), "MLP", 1.0, results={})


def test_a_degenerate_best_result_says_why_in_the_answer():
    import pandas as pd

    from lab.ui.report import policy_answer

    trace = pd.DataFrame({"tensor_id": ["big", "huge", "big"], "size_mb": [8.0, 9.0, 8.0]})
    results = lab.run_policies(trace, ["LRU", "FIFO"], 4.0, per_access=False)
    row = policy_answer(lab.metrics_table(results), "two big tensors", 4.0, results=results).loc[0]
    assert row["note"] == results["LRU"].note and row["note"].startswith("Every tensor is larger than the buffer")


def test_an_answer_table_names_its_model_or_is_refused(tmp_path):
    import pandas as pd

    from lab.sim.model import SimulationModel
    from lab.ui.report import show_answer, with_model_columns

    table = pd.DataFrame({"policy": ["LRU"], "median_gap_pct": [12.5]})
    with pytest.raises(ValueError, match=r"must name the model behind its numbers: it lacks \['buffer model', "
                                         r"'cost preset'\]"):
        show_answer(table, "Which policy?")
    with pytest.raises(TypeError, match="model must be a lab.sim.model.SimulationModel"):
        show_answer(table, "Which policy?", model="scratchpad")
    named = with_model_columns(table, SimulationModel(buffer="cache", cost="H200", capacity_mb=60.0))
    assert named.columns.tolist() == ["policy", "median_gap_pct", "buffer model", "cost preset", "buffer (MB)"]
    assert named.loc[0, ["buffer model", "cost preset", "buffer (MB)"]].tolist() == ["cache", "H200", 60.0]
    assert with_model_columns(named) is named  # a table naming its model itself
    # stored with the answer: the index and read_answer see the model
    from nbformat.v4 import new_code_cell, new_notebook
    from nbclient import NotebookClient

    nb = new_notebook(cells=[new_code_cell(
        "import pandas as pd\nfrom lab.sim.model import SimulationModel\nfrom lab.ui.report import show_answer\n"
        "show_answer(pd.DataFrame({'policy': ['LRU'], 'gap (%)': [1.5]}), 'Which?', "
        "model=SimulationModel(buffer='scratchpad', cost='seed'))")])
    NotebookClient(nb, kernel_name="python3").execute()
    path = tmp_path / "answer.ipynb"
    nbformat.write(nb, path)
    question, stored = read_answer(path)
    assert question == "Which?" and stored.loc[0, "buffer model"] == "scratchpad" and stored.loc[0, "cost preset"] == "seed"


def test_capacity_for_benefit_interpolates_what_predict_compile_finds():
    from lab.ui.report import capacity_for_benefit_mb

    trace = lab.generate_trace("MLP", num_layers=3, batch_size=4, seq_length=16, seed=1)
    exact = lab.predict_compile(trace, 1.0, policies=["LRU"]).recommended_capacity_mb
    capacities = lab.default_capacities_mb(trace, 24)
    sweep = lab.sweep_capacity(trace, ["LRU"], capacities, optimum=True)
    found = capacity_for_benefit_mb(sweep, trace)
    step = capacities[1] / capacities[0]  # one step of the log-spaced grid
    for q in (0.9, 0.99):
        assert exact[q] / step <= found[q] <= exact[q] * step
    assert capacity_for_benefit_mb(sweep[sweep["policy"] != "OPT"], trace) == {}


@pytest.mark.slow
def test_learned_eviction_report_runs_on_the_smallest_parameters(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("lightgbm")
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "captures"))
    monkeypatch.setenv("LAB_LLM_MODEL", str(tmp_path / "no-llm-here"))
    params = {"models": ["mlp", "bert-base"], "num_layers": 1, "seq_length": 16, "capacity_fraction": [0.05],
              "n_estimators": 5}
    out = run_report(LEARNED, params, tmp_path / "learned.ipynb")
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    text = json.dumps([o.get("data", {}).get("text/plain", "") + o.get("data", {}).get("text/markdown", "")
                       for o in outputs])
    for expected in ("learned gap closed (%)", "not configured", "LAB_LLM_MODEL", "bert-base"):
        assert expected in text
    _answer_comes_first(nb)
    assert "learned_gap_closed_pct" not in text  # every table in words, rounded
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 2  # gap closed, importances
    question, answer = read_answer(out)
    assert "learned scorer" in question and {"learned", "heuristic", "Belady"} <= set(answer["contender"])
    assert set(answer["knows"]) == {"the past only", "the future"}
    assert set(answer["buffer model"]) == {"scratchpad"} and set(answer["cost preset"]) == {"seed"}


def _tiny_notebook(path):
    """A report notebook of a few lines (a kernel start, no simulation) for the runner's folder, lock and dead-kernel
    behaviour: ``die: 1`` kills its own kernel (as the out-of-memory killer would), ``answer: 1`` shows an answer
    table; either way it prints and saves an empty figure."""
    from nbformat.v4 import new_code_cell, new_notebook

    parameters = new_code_cell("die: int = 0  # 1 kills the kernel\nanswer: int = 0  # 1 shows an answer table")
    parameters.metadata["tags"] = ["parameters"]
    body = new_code_cell("import os, signal\nif die:\n    os.kill(os.getpid(), signal.SIGKILL)\nprint('alive')\n"
                         "if answer:\n    import pandas as pd\n    from lab.ui.report import show_answer\n"
                         "    show_answer(pd.DataFrame({'workload': ['tiny'], 'best online policy': ['LRU'],\n"
                         "                              'buffer model': ['scratchpad'], 'cost preset': ['seed']}),\n"
                         "                'Which policy?')\n"
                         "from matplotlib.figure import Figure\nfrom lab import plots\n"
                         "plots.save_figure(Figure(), 'empty')")
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=[parameters, body], metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), path)
    return path


def test_a_dead_kernel_is_one_line_naming_the_params_file_and_stale_scratch_is_removed(tmp_path, capsys,
                                                                                         monkeypatch):
    import subprocess

    from lab.cli import main

    (tmp_path / "notebooks").mkdir()
    notebook = _tiny_notebook(tmp_path / "notebooks" / "tiny.ipynb")
    monkeypatch.chdir(tmp_path)
    out = Path("r")  # relative, as make report's: the kernel runs elsewhere (the notebook's folder)
    dies = _params_file(tmp_path, "dies.yaml", {"die": 1})
    assert main(["report", str(notebook), str(dies), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"python -m lab report: {dies}: the notebook's kernel died (out of memory?)\n"
    assert not (out / "tiny" / "dies").exists()

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has any more: a killed run's
    folder = out / "tiny"
    stale = [folder / f".runs.{dead.pid}.staging", folder / f".figures.{dead.pid}.tmp",
             folder / f".runs.{dead.pid}.old"]
    live = folder / f".runs.{os.getppid()}.staging"  # a run still going (this test's parent process)
    for path in [*stale, live]:
        (path / "half").mkdir(parents=True)
    runs = _params_file(tmp_path, "runs.yaml", {"die": 0})
    assert main(["report", str(notebook), str(runs), "--out", str(out)]) == 0
    assert (folder / "runs" / "runs.ipynb").is_file() and "alive" in (folder / "runs" / "runs.html").read_text()
    assert not any(path.exists() for path in stale) and live.is_dir()
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["figures", "runs.html", "runs.ipynb"]
    assert sorted(p.name for p in (folder / "runs" / "figures").iterdir()) == ["empty.png", "empty.svg"]


def test_ctrl_c_during_a_report_run_is_one_line_and_exit_code_130(tmp_path, capsys, monkeypatch):
    import lab.ui.report as report
    from lab.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "run_reports", interrupted)
    assert main(["report", str(NOTEBOOK), str(_params_file(tmp_path, "small.yaml", SMALLEST))]) == 130
    assert capsys.readouterr().err == "python -m lab report: interrupted\n"
