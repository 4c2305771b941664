"""Parameterized reports: run a notebook with papermill for each YAML parameter file, export HTML.

``python -m lab.ui.report NOTEBOOK PARAMS.yaml [...] --out reports/`` writes
``reports/<notebook>/<params>.ipynb`` (executed) and ``.html`` beside it.
Both files are written atomically; a failed run leaves neither behind.
"""

from __future__ import annotations

import argparse
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


def load_params(path) -> dict:
    """Parameters from a YAML file (a mapping of notebook parameter names to values)."""
    import yaml

    params = yaml.safe_load(Path(path).read_text()) or {}
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
    """Run ``notebook`` once per YAML file into ``out_dir/<notebook stem>/<params stem>.ipynb``."""
    notebook = Path(notebook)
    outputs = []
    for path in param_files:
        params = load_params(path)
        check_params(notebook, params, str(path))
        out = Path(out_dir) / notebook.stem / f"{Path(path).stem}.ipynb"
        print(f"{notebook.name} + {path} -> {out} (.html)", flush=True)
        outputs.append(run_report(notebook, params, out))
    return outputs


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
    except PapermillException as error:  # a cell failed: its traceback is the message
        print(f"python -m lab.ui.report: the notebook failed:\n{error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
