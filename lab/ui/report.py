"""Parameterized reports: run a notebook with papermill for each YAML parameter file, export HTML.

``python -m lab.ui.report NOTEBOOK PARAMS.yaml [...] --out reports/`` writes
``reports/<notebook>/<params>.ipynb`` (executed) and ``.html`` beside it.
Both files are written atomically; a failed run leaves neither behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

from lab.trace.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

KERNEL = "python3"  # ipykernel's own kernel: the interpreter running the report

# Code cells are hidden in the HTML unless the reader asks (the button; without scripts they stay hidden).
_CODE_TOGGLE = """
<style>
.jp-CodeCell .jp-Cell-inputWrapper { display: none; }
body.lab-show-code .jp-CodeCell .jp-Cell-inputWrapper { display: block; }
#lab-code-toggle { position: fixed; top: 8px; right: 8px; z-index: 100; }
</style>
<script>
document.addEventListener("DOMContentLoaded", function () {
  var button = document.createElement("button");
  button.id = "lab-code-toggle";
  button.textContent = "show code";
  button.onclick = function () {
    var shown = document.body.classList.toggle("lab-show-code");
    button.textContent = shown ? "hide code" : "show code";
  };
  document.body.appendChild(button);
});
</script>
"""


def export_html(notebook_path) -> str:
    """The executed notebook as one HTML page: figures embedded, code cells hidden behind a toggle."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook_path, as_version=4))
    return body.replace("</head>", _CODE_TOGGLE + "</head>", 1)


PACKAGES = ("lab", "numpy", "pandas", "numba", "scipy", "matplotlib", "seaborn", "papermill", "ipywidgets", "torch",
            "transformers")


def provenance(parameters: dict) -> "pd.DataFrame":
    """What a report was produced with: each parameter, then Python's and each package's version."""
    import platform
    from importlib import metadata

    import pandas as pd

    rows = [("parameter", name, repr(value)) for name, value in parameters.items()]
    rows.append(("version", "python", platform.python_version()))
    for package in PACKAGES:
        try:
            rows.append(("version", package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            rows.append(("version", package, "not installed"))
    return pd.DataFrame(rows, columns=["what", "name", "value"])


ANSWER_MIMETYPE = "application/vnd.lab.answer+json"


def show_answer(table: "pd.DataFrame", question: str) -> None:
    """Display a report's answer table: the question it answers, and its headline numbers (units in the
    column names). Shown as a table, and stored in the notebook with a machine-readable copy that
    :func:`read_answer` and the reports' index read back. One per report."""
    import pandas as pd
    from IPython.display import display

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string: the question the table answers")
    records = table.reset_index(drop=True).astype(object).where(table.notna(), None)
    payload = {"question": question, "columns": [str(c) for c in table.columns],
               "rows": [[_json_value(v) for v in row] for row in records.itertuples(index=False)]}
    html = f"<p><b>{_escape(question)}</b></p>" + table.to_html(index=False, float_format=lambda v: f"{v:,.1f}")
    display({ANSWER_MIMETYPE: payload, "text/html": html, "text/plain": f"{question}\n{table.to_string(index=False)}"},
            raw=True)


def read_answer(notebook_path) -> tuple[str, "pd.DataFrame"]:
    """The answer table stored by :func:`show_answer` in an executed notebook: ``(question, table)``.
    ValueError when the notebook has none."""
    import nbformat
    import pandas as pd

    nb = nbformat.read(str(notebook_path), as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(ANSWER_MIMETYPE)
            if payload is not None:
                return payload["question"], pd.DataFrame(payload["rows"], columns=payload["columns"])
    raise ValueError(f"{notebook_path}: no answer table (a report shows one with lab.ui.report.show_answer)")


def _json_value(value):
    import numpy as np

    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def load_params(path) -> dict:
    """Parameters from a YAML file (a mapping of notebook parameter names to values)."""
    import yaml

    try:
        params = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as error:  # malformed, or a tag safe_load refuses (!!python/...)
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{path}: not a valid parameter file: {first}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path}: a parameter file must hold a mapping of parameter names to values")
    return params


def notebook_parameters(notebook) -> dict:
    """The notebook's parameters (papermill's reading of the cell tagged ``parameters``): name -> info."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def check_params(notebook, params: dict, source: str = "parameters") -> None:
    """ValueError naming the keys of ``params`` that are not parameters of ``notebook`` (papermill only warns)."""
    known = notebook_parameters(notebook)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown parameter(s) {unknown} for {Path(notebook).name}; known: {sorted(known)}")


def run_report(notebook, params: dict, out_ipynb, html: bool = True, cwd: Optional[str] = None) -> Path:
    """Execute ``notebook`` with ``params`` into ``out_ipynb`` (and the HTML beside it); returns the notebook path."""
    import papermill

    check_params(notebook, params)
    out_ipynb = Path(out_ipynb)
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / out_ipynb.name
        papermill.execute_notebook(str(notebook), str(executed), parameters=params, kernel_name=KERNEL,
                                   cwd=cwd or str(Path(notebook).parent), progress_bar=False)
        if html:
            with atomic_path(out_ipynb.with_suffix(".html")) as tmp_html:
                tmp_html.write_text(export_html(executed), encoding="utf-8")
        with atomic_path(out_ipynb) as tmp_nb:
            tmp_nb.write_bytes(executed.read_bytes())
    return out_ipynb


def run_reports(notebook, param_files: Iterable, out_dir) -> list[Path]:
    """Run ``notebook`` once per YAML file into ``out_dir/<notebook stem>/<params stem>/`` (the executed
    ``.ipynb`` and its ``.html``); returns the notebooks' paths.

    Each report's folder is written beside its place and renamed into it, so a
    killed run leaves the previous report or the new one, never a mix. Two
    parameter files with the same name would write the same report: refused.
    One run at a time per ``out_dir`` (a lock file); a second gets a
    ValueError. A failing notebook or a dead kernel raises ReportError naming
    the parameter file.
    """
    notebook = Path(notebook)
    param_files = [Path(p) for p in param_files]
    stems = [p.stem for p in param_files]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ValueError(f"parameter files with the same name would write the same report: {clashes}; rename one")
    batches = [(path, load_params(path)) for path in param_files]
    for path, params in batches:
        check_params(notebook, params, str(path))
    base = Path(out_dir) / notebook.stem
    outputs = []
    with _exclusive(Path(out_dir)):
        for path, params in batches:
            final = base / path.stem
            print(f"{notebook.name} + {path} -> {final}/ (.ipynb, .html)", flush=True)
            staging = base / f".{path.stem}.{os.getpid()}.staging"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                run_report(notebook, params, staging / f"{path.stem}.ipynb")
            except KeyboardInterrupt:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            except (ValueError, OSError):
                shutil.rmtree(staging, ignore_errors=True)
                raise
            except Exception as error:  # noqa: BLE001 (papermill, nbclient: a cell failed or the kernel died)
                shutil.rmtree(staging, ignore_errors=True)
                raise ReportError(path, error) from error
            _replace_folder(staging, final)
            outputs.append(final / f"{path.stem}.ipynb")
    return outputs


class ReportError(RuntimeError):
    """A report's notebook failed (a cell raised, or its kernel died): names the parameter file."""

    def __init__(self, params_file, error: BaseException):
        name = type(error).__name__
        if name == "DeadKernelError":
            what = "the notebook's kernel died (out of memory?)"
        else:
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            what = f"the notebook failed: {lines[-1] if lines else name}"
        super().__init__(f"{params_file}: {what}")


@contextlib.contextmanager
def _exclusive(out_dir: Path):
    """Hold ``out_dir``'s report lock (one report run at a time per folder); ValueError when another holds it."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lab-report.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another report run is writing into {out_dir}: wait for it, or use --out") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _replace_folder(staging: Path, final: Path) -> None:
    """Put the folder ``staging`` in place of ``final`` (two renames: ``final`` is briefly absent, never mixed)."""
    old = final.parent / f".{final.name}.{os.getpid()}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.ui.report", description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("params", nargs="+", help="YAML parameter files, one report each")
    parser.add_argument("--out", default="reports", help="output folder (default: reports)")
    args = parser.parse_args(argv)
    from papermill.exceptions import PapermillException

    try:
        run_reports(args.notebook, args.params, args.out)
    except (ValueError, OSError) as error:
        print(f"python -m lab.ui.report: error: {error}", file=sys.stderr)
        return 2
    except (ReportError, PapermillException) as error:
        print(f"python -m lab.ui.report: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("python -m lab.ui.report: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
