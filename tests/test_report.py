"""The policy-comparison report: its parameters, and a real papermill run on the smallest parameters."""

import ast
import json
from pathlib import Path

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from lab.ui.report import check_params, load_params, notebook_parameters, provenance, read_answer, run_report

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01-policy-comparison.ipynb"
REAL_MODELS = ROOT / "notebooks" / "03-real-models.ipynb"
LEARNED = ROOT / "notebooks" / "04-learned-eviction.ipynb"
REPORTS = [NOTEBOOK, REAL_MODELS, LEARNED]
PARAM_FILES = [(nb, path) for nb in REPORTS for path in sorted((ROOT / "params" / nb.stem).glob("*.yaml"))]
SMALLEST = {"model_type": "MLP", "num_layers": 2, "batch_size": 2, "seq_length": 8, "capacity_mb": 0.5,
            "capacity_points": 3, "top": 5}


def test_the_parameter_sets_exist():
    stems = {(nb.stem, p.stem) for nb, p in PARAM_FILES}
    assert {("01-policy-comparison", s) for s in ("default", "cnn", "mlp", "moe")} <= stems
    assert ("03-real-models", "default") in stems
    assert {("04-learned-eviction", s) for s in ("forward", "training", "moe")} <= stems


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
    names = [node.targets[0].id for node in ast.parse(cell.source).body]
    assert len(lines) == len(names) == len(notebook_parameters(notebook))
    assert all("  # " in line for line in lines)


def test_unknown_parameters_are_an_error():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['layers'\]"):
        check_params(NOTEBOOK, {"layers": 3})


def test_provenance_states_parameters_and_versions():
    table = provenance({"seed": 0})
    assert table.iloc[0].tolist() == ["parameter", "seed", "0"]
    assert {"python", "lab", "numpy", "pandas", "numba", "papermill"} <= set(table["name"])


def test_report_runs_on_the_smallest_parameters(tmp_path):
    out = run_report(NOTEBOOK, SMALLEST, tmp_path / "smallest.ipynb")
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps([o.get("data", {}).get("text/plain", "") for o in outputs])
    for expected in ("cache_hit_rate", "eviction_score", "reuse_entropy", "gap_closed_pct", "'MLP'"):
        assert expected in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # metric bars, occupancy heatmap, capacity curves, reuse histogram
    html = (tmp_path / "smallest.html").read_text()
    assert html.count("data:image/png;base64") >= 4
    assert ".jp-CodeCell .jp-Cell-inputWrapper { display: none; }" in html and "lab-code-toggle" in html
    assert "numpy" in html and "model_type" in html  # the parameters and versions it was made with


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
    out = run_report(REAL_MODELS, params, tmp_path / "real.ipynb")
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps([o.get("data", {}).get("text/plain", "") for o in outputs])
    for expected in ("dram_read_mb", "reuse_distance_wasserstein", "mixtral-8x7b", "working_set_mb"):
        assert expected in text
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 2 * 3


def test_same_parameters_same_numbers(tmp_path):
    def numbers(path):
        nb = nbformat.read(path, as_version=4)
        return [o.get("data", {}).get("text/plain") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if "image/png" not in o.get("data", {}) and o.output_type != "stream"]

    params = {**SMALLEST, "model_type": "CNN"}
    first = numbers(run_report(NOTEBOOK, params, tmp_path / "a.ipynb", html=False))
    second = numbers(run_report(NOTEBOOK, params, tmp_path / "b.ipynb", html=False))
    versions = [i for i, text in enumerate(first) if text and "version" in text]
    assert first == second and len(first) > 5 and versions


def _params_file(folder, name, params):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(f"{k}: {v}" for k, v in params.items()))
    return path


def test_reports_are_folders_replaced_whole_and_names_may_not_clash(tmp_path):
    from lab.ui.report import run_reports

    first = _params_file(tmp_path / "a", "small.yaml", SMALLEST)
    out = tmp_path / "reports"
    (notebook,) = run_reports(NOTEBOOK, [first], out)
    folder = out / NOTEBOOK.stem / "small"
    assert notebook == folder / "small.ipynb" and (folder / "small.html").is_file()
    (folder / "stale.txt").write_text("from an older run")
    run_reports(NOTEBOOK, [first], out)  # a rerun replaces the folder as a whole
    assert sorted(p.name for p in folder.iterdir()) == ["small.html", "small.ipynb"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".") and p.name != ".lab-report.lock"]
    twin = _params_file(tmp_path / "b", "small.yaml", SMALLEST)
    with pytest.raises(ValueError, match=r"same name would write the same report: \['small'\]"):
        run_reports(NOTEBOOK, [first, twin], out)


def test_one_report_run_at_a_time_per_folder(tmp_path):
    import fcntl

    from lab.ui.report import run_reports

    out = tmp_path / "reports"
    out.mkdir()
    with open(out / ".lab-report.lock", "w") as held:  # another run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another report run is writing into"):
            run_reports(NOTEBOOK, [_params_file(tmp_path, "small.yaml", SMALLEST)], out)


@pytest.mark.parametrize("text, fragment", [("model_type: [unclosed", "not a valid parameter file"),
                                            ("x: !!python/object/apply:os.system ['true']", "not a valid")])
def test_a_malformed_or_unsafe_params_file_is_one_line(tmp_path, capsys, text, fragment):
    from lab.ui.report import main

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main([str(NOTEBOOK), str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_a_failing_report_names_its_params_file(tmp_path, capsys):
    from lab.ui.report import main

    path = _params_file(tmp_path, "broken.yaml", {**SMALLEST, "num_layers": -3})
    assert main([str(NOTEBOOK), str(path), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"{path}: the notebook failed" in err and "Traceback" not in err
    assert not (tmp_path / "r" / NOTEBOOK.stem / "broken").exists()


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
    for expected in ("learned_gap_closed_pct", "not configured", "LAB_LLM_MODEL", "bert-base"):
        assert expected in text
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == 2  # gap closed, importances
    question, answer = read_answer(out)
    assert "learned scorer" in question and {"learned", "heuristic", "Belady"} <= set(answer["contender"])
