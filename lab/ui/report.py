"""Parameterized reports: run a notebook with papermill for each YAML parameter file, export HTML.

``python -m lab report NOTEBOOK PARAMS.yaml [...] --out reports/`` writes
``reports/<notebook>/<params>/<params>.ipynb`` (executed), its ``.html`` and
``figures/`` (each figure the notebook saves with ``lab.plots.save_figure``, as
SVG and PNG), then ``reports/index.html``: every report's answer table side by
side, with a link to it. Each report's folder is written whole or not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from lab.compiled import QUIET_ENV
from lab.files import file_lock
from lab.trace.io import atomic_path, process_running

if TYPE_CHECKING:
    import pandas as pd

KERNEL = "python3"  # ipykernel's own kernel: the interpreter running the report
# The kernel's own log, on this process's stderr, at critical only: its startup warning about unencrypted TCP on
# 127.0.0.1 would print once per report, and a Ctrl-C (to the whole process group) a 20-line traceback of the
# reply it could no longer send (ZMQError) before our one line. The notebook's own errors and stderr still reach
# the report (and fail it).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]

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


MODEL_COLUMNS = ("buffer model", "cost preset")  # what every answer table names (SimulationModel.answer_columns)


def with_model_columns(table: "pd.DataFrame", model=None) -> "pd.DataFrame":
    """``table`` with the model that produced its numbers as columns (``SimulationModel.answer_columns``: buffer
    model, cost preset, and the buffer's size and policy when ``model`` has them), those the table lacks added
    after its columns. ``model``: a ``lab.sim.model.SimulationModel``, or None when the table has its own
    ``MODEL_COLUMNS`` (``policy_answer`` rows do); ValueError when neither names the model."""
    from lab.sim.model import SimulationModel

    if model is None:
        missing = [c for c in MODEL_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"an answer table must name the model behind its numbers: it lacks {missing}; pass "
                             "model=lab.sim.model.SimulationModel(buffer=..., cost=...)")
        return table
    if not isinstance(model, SimulationModel):
        raise TypeError(f"model must be a lab.sim.model.SimulationModel or None, got {type(model).__name__}")
    added = {k: v for k, v in model.answer_columns().items() if k not in table.columns}
    return table.assign(**added) if added else table


def show_answer(table: "pd.DataFrame", question: str, model=None) -> None:
    """Display a report's answer table: the question it answers, and its headline numbers (units in the
    column names) with the model that produced them (buffer model, cost preset; see ``with_model_columns``:
    ``model`` is a ``SimulationModel``, or None when the table names them itself). Shown as a table, and stored
    in the notebook with a machine-readable copy that :func:`read_answer` and the reports' index read back.
    One per report."""
    import pandas as pd
    from IPython.display import display

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string: the question the table answers")
    table = with_model_columns(table, model)
    records = table.reset_index(drop=True).astype(object).where(table.notna(), None)
    payload = {"question": question, "columns": [str(c) for c in table.columns],
               "rows": [[_json_value(v) for v in row] for row in records.itertuples(index=False)]}
    shown = format_numbers(table)
    if len(shown.columns) > 4 and len(shown) <= 6:  # transposed: one column per answer row fits the page
        header = (shown.iloc[:, 0].tolist() if len(shown) > 1 else ["answer"])
        body = shown.iloc[:, 1:] if len(shown) > 1 else shown
        shown = body.T.reset_index().set_axis([str(table.columns[0]) if len(shown) > 1 else "", *header], axis=1)
    html = f"<p><b>{_escape(question)}</b></p>" + shown.to_html(index=False, na_rep="", escape=True)
    display({ANSWER_MIMETYPE: payload, "text/html": html, "text/plain": f"{question}\n{shown.to_string(index=False)}"},
            raw=True)


def round_number(value) -> str:
    """A number as a reader wants it in a table: three significant digits, thousands separated, no exponent
    (``95.8``, ``1,234``, ``0.0123``); integers as they are; NaN and None empty; True and False as yes and no."""
    import math

    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return ""
    if value == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def format_numbers(table: "pd.DataFrame") -> "pd.DataFrame":
    """``table`` with every number rounded for reading (``round_number``; True/False as yes/no), as strings."""
    import numpy as np

    return table.apply(lambda column: column.map(lambda v: round_number(v.item() if isinstance(v, np.generic) else v)))


# how a table's column names read in words: whole names first, then words inside snake_case names
COLUMN_WORDS = {"dram_traffic_mb": "DRAM traffic, read + written (MB)", "dram_reads_mb": "DRAM reads (MB)",
                "dram_writes_mb": "DRAM writes (MB)", "byte_hit_rate": "byte hit rate (%)",
                "cache_hit_rate": "hit rate (%)", "total_latency": "total latency (ms)",
                "bandwidth_wait_time": "bandwidth wait (ms)", "opt_lower_mb": "optimum, lower bound (MB)",
                "opt_upper_mb": "optimum, achievable (MB)", "capacity_fraction": "buffer (share of working set)",
                "capacity_mb": "buffer (MB)", "fit_s": "training time (s)", "predict_s": "scoring time (s)",
                "size_mb": "size (MB)", "p_value": "p-value", "dram_mb": "DRAM traffic, read + written (MB)",
                "dram_read_mb": "DRAM reads (MB)", "dram_write_mb": "DRAM writes (MB)"}
WORDS = {"lru": "LRU", "opt": "optimum", "belady": "Belady", "llm": "LLM", "dram": "DRAM", "ml": "ML", "gpu": "GPU",
         "mb": "MB", "p90": "90th percentile", "pct": "%", "vs": "against"}
UNITS = {"mb": "MB", "pct": "%", "s": "s", "ms": "ms"}


def readable_column(name) -> str:
    """A column name as a reader reads it: ``COLUMN_WORDS``' wording, else the snake_case words spaced (known
    abbreviations spelled: ``lru`` -> LRU) with the unit suffix in brackets (``_mb`` -> (MB), ``_pct`` -> (%),
    ``_s`` -> (s)): ``mean_gap_closed_pct`` -> ``mean gap closed (%)``. Names with a space are kept."""
    name = str(name)
    if name in COLUMN_WORDS:
        return COLUMN_WORDS[name]
    if " " in name or "_" not in name:
        return name
    words = name.split("_")
    unit = UNITS.get(words[-1]) if len(words) > 1 else None
    if unit:
        words = words[:-1]
    text = " ".join(WORDS.get(w, w) for w in words)
    return f"{text} ({unit})" if unit else text


def readable_table(table) -> "pd.DataFrame":
    """``table`` (a DataFrame, or a Series such as ``lab.summarize``'s: one column ``value``) as a report shows
    it: column names (a Series' index) in words with units (``readable_column``), numbers rounded
    (``round_number``), True/False as yes/no; as strings."""
    import pandas as pd

    if isinstance(table, pd.Series):
        table = table.rename(index=readable_column).to_frame("value")
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame or Series, got {type(table).__name__}")
    return format_numbers(table).rename(columns=readable_column)


def time_comparison(traces: dict, capacity_mb: float, cost, policies=None, scorer: str = "heuristic"):
    """A report's time section: ``lab.compare_time`` of each trace of ``traces`` ({workload name: trace that records
    its ops, a capture}) at ``capacity_mb`` MB under ``cost`` (a preset with the physical numbers), the best online
    policy chosen among ``policies`` (None: every registered policy). One DataFrame: ``workload`` and ``policy``,
    then ``compare_time``'s columns (traffic in MB, times in ms); ``attrs["model"]``: the sentence naming the model
    behind every number (the planner's: a scratchpad, the preset, each execution mode). TypeError when ``traces``
    is not a dict of them."""
    import pandas as pd

    from lab.analysis.sweep import compare_time

    if not isinstance(traces, dict) or not traces:
        raise TypeError(f"traces must be a non-empty dict of {{workload name: trace}}, got {type(traces).__name__}")
    tables = {name: compare_time(trace, capacity_mb, cost, "all" if policies is None else policies, scorer=scorer)
              for name, trace in traces.items()}
    table = pd.concat(tables, names=["workload", "policy"]).reset_index()
    table.attrs["model"] = " ".join(dict.fromkeys(t.attrs["model"] for t in tables.values()))
    return table


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


def policy_answer(comparison: "pd.DataFrame", workload: str, capacity_mb: float,
                  recommended_capacity_mb: Optional[dict] = None, *, results: dict) -> "pd.DataFrame":
    """The headline row of a policy comparison, for :func:`show_answer` and the reports' index.

    ``comparison``: ``lab.metrics_table`` with the optimum's row ``OPT`` (or ``predict_compile(...).comparison``);
    ``recommended_capacity_mb``: ``predict_compile(...).recommended_capacity_mb`` ({0.9: MB, 0.99: MB});
    ``results``: the comparison's runs, {policy: SimulationResult} (``lab.run_policies``, or
    ``predict_compile(...).results``), whose ``model`` the row names. One row:
    the workload, the buffer (MB), the best online policy (least DRAM traffic, read + written; ties named
    together), its DRAM traffic (MB) and byte hit rate (%), how far its traffic is above the optimum (%): at
    least its excess over the optimum's achievable schedule (``opt_upper_mb``; 0 when it does as well), at most
    its excess over the optimum's lower bound (``opt_lower_mb``), the optimum lying in between (the optimum is a
    whole-tensor schedule of a software-managed buffer, whatever the buffer model of the policies); the
    capacities at which the optimum saves 90 % and 99 % of what a buffer can save (MB); the model: buffer model
    (scratchpad or cache), cost preset and the best policy's parameters (``SimulationResult.model``); and a note
    when the result is degenerate or the policies cannot differ (why, in one sentence).
    """
    import numpy as np
    import pandas as pd

    from lab.analysis.contenders import above_optimum_pct, best_online_policy, online_policies
    from lab.analysis.sweep import optimum_bracket
    from lab.sim.model import params_text

    online = online_policies(comparison)
    if online.empty:
        raise ValueError("comparison holds no online policy")
    tied = best_online_policy(online, tolerance_pct=1e-7)  # equal traffic (within 1e-9, float rounding): a tie
    best = tied[0]
    least = online.loc[best, "dram_traffic_mb"]
    lower, upper = optimum_bracket(comparison) or (np.nan, np.nan)

    def above(mb, optimum):
        return max(0.0, above_optimum_pct(mb, optimum)) if optimum > 0 else np.nan

    if not isinstance(results, dict) or best not in results:
        raise ValueError(f"results must be the comparison's runs, {{policy: SimulationResult}} (lab.run_policies "
                         f"or predict_compile(...).results), with {best!r}")
    model = results[best].model
    recommended = recommended_capacity_mb or {}
    row = {
        "workload": workload,
        "buffer (MB)": float(capacity_mb),
        "buffer model": model.buffer,
        "cost preset": model.cost,
        "best online policy": (best if len(tied) == 1 else "all tie" if len(tied) == len(online) else
                               ", ".join(tied[:3]) + (f" and {len(tied) - 3} more" if len(tied) > 3 else "")
                               + " (tied)"),
        "policy parameters": params_text(model.params),
        "DRAM traffic (MB)": float(least),
        "byte hit rate (%)": float(online.loc[best, "byte_hit_rate"]),
        "above optimum, at least (%)": above(float(least), upper),
        "above optimum, at most (%)": above(float(least), lower),
        "capacity for 90 % (MB)": recommended.get(0.9, np.nan),
        "capacity for 99 % (MB)": recommended.get(0.99, np.nan),
    }
    note = results[best].note  # a degenerate result says why first
    if not note and len(tied) == len(online) and "evictions" in online and (online["evictions"] == 0).all():
        note = (f"No policy evicts at {capacity_mb:g} MB: every tensor that is reused stays on chip, so all "
                f"policies move the same traffic.")
    elif not note and len(tied) == len(online):
        note = f"Every online policy moves the same traffic at {capacity_mb:g} MB."
    row["note"] = note
    return pd.DataFrame([row]).astype({k: float for k in ("capacity for 90 % (MB)", "capacity for 99 % (MB)")})


def capacity_for_benefit_mb(sweep: "pd.DataFrame", trace, targets=(0.9, 0.99)) -> dict:
    """From a capacity sweep with the optimum's rows (``lab.sweep_capacity``, policy ``OPT``): {q: MB}, the
    capacity at which the optimum's lower bound saves the share ``q`` of the DRAM traffic that a buffer holding
    the whole working set saves against no buffer, interpolated (log capacity) between the swept capacities; the
    smallest swept capacity when it already saves that much. What ``lab.predict_compile`` searches exactly, at
    the cost of a flow per step; {} when the sweep has no optimum, None per target when no buffer saves
    anything."""
    import numpy as np

    from lab.analysis.sweep import is_optimum
    from lab.bounds.optimal import intervals_of, lower_bound_mb, schedule_traffic
    from lab.trace.workload import encode_trace
    from lab.units import bytes_to_mb

    opt = sweep[sweep["policy"].map(is_optimum)].drop_duplicates("capacity_mb").sort_values("capacity_mb")
    if opt.empty:
        return {}
    workload = encode_trace(trace)
    intervals = intervals_of(workload)
    none = float(bytes_to_mb(sum(schedule_traffic(workload, intervals, np.zeros(len(intervals.start), bool))[:2])))
    whole_mb = float(bytes_to_mb(workload.tensor_bytes.sum()))
    capacities, lower = opt["capacity_mb"].to_numpy(float), opt["opt_lower_mb"].to_numpy(float)
    best = lower[-1] if capacities[-1] >= whole_mb * (1 - 1e-9) else lower_bound_mb(workload, whole_mb)
    saved = none - best
    out = {}
    for q in targets:
        if saved <= 0:
            out[q] = None
            continue
        target = none - q * saved
        reached = np.flatnonzero(lower <= target + 1e-9)
        i = int(reached[0]) if reached.size else len(lower) - 1
        if i == 0 or not reached.size:
            out[q] = float(capacities[i])
            continue
        (c0, c1), (y0, y1) = capacities[i - 1:i + 1], lower[i - 1:i + 1]
        share = (y0 - target) / (y0 - y1) if y0 > y1 else 1.0
        out[q] = float(np.exp(np.log(c0) + share * (np.log(c1) - np.log(c0))))
    return out


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
    """ValueError naming the keys of ``params`` that are not parameters of ``notebook`` (papermill only warns),
    and TypeError naming the parameter whose value is not of the type the notebook declares (its first cell:
    ``name: type = value  # help``; ``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``, ``list[T]``,
    ``dict[K, V]``, ``Optional[T]``, ``Union[A, B]``), before the notebook runs."""
    known = notebook_parameters(notebook)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown parameter(s) {unknown} for {Path(notebook).name}; known: {sorted(known)}")
    for name, value in params.items():
        declared = str(known[name].get("inferred_type_name") or "").strip().strip("\"'")
        kind = _parse_type(declared)
        if kind is not None and not _matches(value, kind):
            raise TypeError(f"{source}: parameter {name!r} must be {_describe(kind)} (declared {declared} in "
                            f"{Path(notebook).name}), got {type(value).__name__} {value!r}")


_TYPE_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.]*|\[|\]|,)")


def _parse_type(text: str):
    """A declared parameter type as a tree (name, [arguments]); None when it is empty or unknown (not checked)."""
    tokens, at = [], 0
    while at < len(text):
        match = _TYPE_TOKEN.match(text, at)
        if match is None:
            return None
        tokens.append(match.group(1))
        at = match.end()
        if not text[at:].strip():
            break

    def parse(i):
        name = tokens[i].split(".")[-1]
        if name not in _TYPES:
            raise KeyError(name)
        args = []
        i += 1
        if i < len(tokens) and tokens[i] == "[":
            i += 1
            while True:
                arg, i = parse(i)
                args.append(arg)
                if tokens[i] == "]":
                    return (name, args), i + 1
                if tokens[i] != ",":
                    raise KeyError(tokens[i])
                i += 1
        return (name, args), i

    try:
        tree, end = parse(0) if tokens else (None, 0)
    except (KeyError, IndexError):
        return None
    return tree if end == len(tokens) else None


_TYPES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false", "list": "a list",
          "List": "a list", "dict": "a mapping", "Dict": "a mapping", "None": "null", "NoneType": "null",
          "Optional": None, "Union": None}


def _matches(value, kind) -> bool:
    name, args = kind
    if name in ("Optional", "Union"):
        return (name == "Optional" and value is None) or any(_matches(value, a) for a in args)
    if name in ("None", "NoneType"):
        return value is None
    if name == "bool":
        return isinstance(value, bool)
    if name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "str":
        return isinstance(value, str)
    if name in ("list", "List"):
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if name in ("dict", "Dict"):
        return isinstance(value, dict) and (len(args) != 2 or all(_matches(k, args[0]) and _matches(v, args[1])
                                                                   for k, v in value.items()))
    return True


def _describe(kind) -> str:
    name, args = kind
    if name in ("Optional", "Union"):
        parts = [_describe(a) for a in args] + (["null"] if name == "Optional" else [])
        return " or ".join(parts)
    if name in ("list", "List") and args:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return _TYPES[name]


FIGURES_ENV = "LAB_REPORT_FIGURES"  # where lab.plots.save_figure writes, set for a report's kernel


@contextlib.contextmanager
def _environment(name: str, value: str):
    """``os.environ[name] = value`` while the block runs (a kernel started inside inherits it)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _kernel_pythonpath() -> str:
    """PYTHONPATH for a report's kernel: the folder holding the ``lab`` this process runs first, so that the
    kernel imports the same ``lab`` (a worktree's, not another checkout's editable install)."""
    import lab

    here = str(Path(lab.__file__).resolve().parents[1])
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    return os.pathsep.join([here, *rest])


def run_report(notebook, params: dict, out_ipynb, html: bool = True, cwd: Optional[str] = None) -> Path:
    """Execute ``notebook`` with ``params`` into ``out_ipynb`` (and the HTML beside it); returns the notebook path.

    The figures the notebook saves (``lab.plots.save_figure``) land in ``figures/`` beside ``out_ipynb``,
    replacing any there; a failed run writes nothing. The report is kept whole: its files are made in a
    scratch folder beside ``out_ipynb``, which is then renamed to mark them complete (``.NAME.PID.commit``)
    and moved into place; a run killed while they move leaves that folder, and the next report run in the
    folder (``remove_stale_work``) finishes the move, so the notebook, its HTML and its figures are always of
    one run (without ``html``, an HTML of an earlier run is removed)."""
    import papermill

    check_params(notebook, params)
    out_ipynb = Path(out_ipynb).absolute()  # the kernel runs in the notebook's folder: relative paths would move
    out_ipynb.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work(out_ipynb.parent)
    stem = out_ipynb.stem
    with _work_folder(out_ipynb.parent / f".{stem}.{os.getpid()}.run") as tmp:
        executed = Path(tmp) / out_ipynb.name
        figures = Path(tmp) / "figures"
        # the kernel compiles quietly: a report's outputs are its answers, not the notices of a fresh install
        with _environment(FIGURES_ENV, str(figures)), _environment("PYTHONPATH", _kernel_pythonpath()), \
                _environment(QUIET_ENV, "1"):
            papermill.execute_notebook(str(notebook), str(executed), parameters=params, kernel_name=KERNEL,
                                       cwd=cwd or str(Path(notebook).parent), progress_bar=False,
                                       extra_arguments=KERNEL_ARGUMENTS)
        html_name = out_ipynb.with_suffix(".html").name
        install = (["figures"] if figures.is_dir() else []) + ([html_name] if html else []) + [out_ipynb.name]
        if html:
            (Path(tmp) / html_name).write_text(export_html(executed), encoding="utf-8")
        (Path(tmp) / MANIFEST).write_text(json.dumps({"install": install, "remove": [] if html else [html_name]}))
        for name in (out_ipynb.name, html_name if html else None, MANIFEST):
            if name:
                with open(Path(tmp) / name, "rb+") as file:
                    os.fsync(file.fileno())
        commit = out_ipynb.parent / f".{stem}.{os.getpid()}.commit"
        shutil.rmtree(commit, ignore_errors=True)
        os.replace(tmp, commit)  # the report is complete: from here on it is installed, now or by the next run
        tmp.mkdir()  # (for _work_folder to remove)
    _install_commit(commit, out_ipynb.parent)
    return out_ipynb


MANIFEST = "manifest.json"  # in a commit folder: what it installs, in order, and what it removes


def _install_commit(commit: Path, folder: Path) -> None:
    """Move a committed report's files from ``commit`` into ``folder`` (its manifest's order: figures, HTML,
    notebook), remove what the manifest says, then the commit folder. Safe to run again after a kill: what is
    already moved is skipped."""
    try:
        manifest = json.loads((commit / MANIFEST).read_text())
    except (OSError, ValueError):  # never completed (no manifest was written before the rename): dropped
        shutil.rmtree(commit, ignore_errors=True)
        return
    for name in manifest.get("install", []):
        source = commit / name
        if not source.exists():
            continue
        with contextlib.suppress(FileNotFoundError):  # moved meanwhile by another finisher of the same commit
            if source.is_dir():
                _replace_folder(source, folder / name)
            else:
                os.replace(source, folder / name)
    for name in manifest.get("remove", []):
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    shutil.rmtree(commit, ignore_errors=True)


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
        if base.is_dir():
            remove_stale_work(base)
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
            except (ValueError, TypeError, OSError):
                shutil.rmtree(staging, ignore_errors=True)
                raise
            except Exception as error:  # noqa: BLE001 (papermill, nbclient: a cell failed or the kernel died)
                shutil.rmtree(staging, ignore_errors=True)
                raise ReportError(path, error) from error
            _replace_folder(staging, final)
            outputs.append(final / f"{path.stem}.ipynb")
            write_index(out_dir)
    return outputs


INDEX = "index.html"


def report_answers(out_dir) -> list[dict]:
    """Every report under ``out_dir`` (``<notebook>/<params>/<params>.ipynb``, any notebook, any run):
    {notebook, params, html (path relative to ``out_dir``, or None), question, table (None when the report
    has no answer table)}, sorted by notebook then params."""
    out_dir = Path(out_dir)
    found = []
    for path in sorted(out_dir.glob("*/*/*.ipynb")):
        notebook, params = path.parent.parent.name, path.parent.name
        if path.stem != params or notebook.startswith(".") or params.startswith("."):
            continue  # a staging or old folder, or a stray notebook
        try:
            question, table = read_answer(path)
        except Exception:  # noqa: BLE001 (no answer table, or an unreadable notebook: listed without numbers)
            question, table = None, None
        html = path.with_suffix(".html")
        found.append({"notebook": notebook, "params": params, "question": question, "table": table,
                      "html": html.relative_to(out_dir).as_posix() if html.is_file() else None})
    return found


def index_html(out_dir) -> str:
    """The reports' index page: per notebook, one table of every parameter set's answer rows side by side,
    each with a link to its report."""
    import html as html_lib

    import pandas as pd

    reports = report_answers(out_dir)
    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>lab reports</title>', _INDEX_STYLE,
             "</head><body>", "<h1>lab reports</h1>",
             f"<p>{len(reports)} report(s). Each row is a report's answer table (numbers rounded to three "
             "significant digits, units in brackets); the first column links to the report.</p>"]
    for notebook in sorted({r["notebook"] for r in reports}):
        parts.append(f"<h2>{html_lib.escape(notebook)}</h2>")
        rows = []
        questions = []
        for report in (r for r in reports if r["notebook"] == notebook):
            link = (f'<a href="{html_lib.escape(report["html"])}">{html_lib.escape(report["params"])}</a>'
                    if report["html"] else html_lib.escape(report["params"]))
            if report["question"]:
                questions.append((report["params"], report["question"]))
            table = report["table"]
            if table is None or table.empty:
                rows.append(pd.DataFrame([{"report": link, "note": "no answer table"}]))
                continue
            shown = readable_table(table).map(lambda v: html_lib.escape(str(v)))
            shown.insert(0, "report", link)
            rows.append(shown)
        if questions:
            parts.append("<ul>" + "".join(f"<li><b>{html_lib.escape(params)}</b>: {html_lib.escape(question)}</li>"
                                          for params, question in questions) + "</ul>")
        frame = pd.concat(rows, ignore_index=True).fillna("")
        parts.append(frame.to_html(index=False, escape=False, classes="answers"))
    parts.append("</body></html>")
    return "\n".join(parts)


_INDEX_STYLE = """<style>
body { font-family: sans-serif; margin: 2em; }
table.answers { border-collapse: collapse; font-size: 0.9em; }
table.answers th, table.answers td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
table.answers td:first-child, table.answers th:first-child { text-align: left; }
</style>"""


def write_index(out_dir) -> Path:
    """Write ``out_dir/index.html`` (atomically) from every report under ``out_dir``; returns its path."""
    path = Path(out_dir) / INDEX
    with atomic_path(path) as tmp:
        tmp.write_text(index_html(out_dir), encoding="utf-8")
    return path


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
    with file_lock(out_dir / ".lab-report.lock", wait=False,
                   busy=f"another report run is writing into {out_dir}: wait for it, or use --out"):
        yield


WORK_KINDS = ("run", "staging", "old", "tmp", "commit")  # scratch a report run makes beside its output:
#   .NAME.PID.KIND; a "commit" folder holds a complete report still to move into place


@contextlib.contextmanager
def _work_folder(path: Path):
    """Create the scratch folder ``path`` (named ``.NAME.PID.KIND``) and remove it when the block ends."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_work(folder) -> list[Path]:
    """Delete the scratch a killed report run left in ``folder`` (our naming ``.NAME.PID.KIND``, KIND one of
    ``WORK_KINDS``, PID no longer running); a live run's is left alone. A complete report a killed run was
    moving into place (KIND ``commit``) is moved in first, so that no report stays half old, half new. Returns
    what was removed."""
    removed = []
    pattern = r"\.(.+)\.(\d+)\.(" + "|".join(WORK_KINDS) + ")"
    stale = [(path, re.fullmatch(pattern, path.name)) for path in sorted(Path(folder).glob(".*.*"))]
    # a commit of this very process was interrupted (KeyboardInterrupt in a notebook) before it finished moving
    stale = [(path, match) for path, match in stale if match and (not process_running(int(match.group(2))) or (
        match.group(3) == "commit" and int(match.group(2)) == os.getpid()))]
    for path, match in sorted(stale, key=lambda item: item[1].group(3) != "commit"):  # commits first
        if match.group(3) == "commit":
            _install_commit(path, Path(folder))
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed


def _replace_folder(staging: Path, final: Path) -> None:
    """Put the folder ``staging`` in place of ``final`` (two renames: ``final`` is briefly absent, never mixed)."""
    old = final.parent / f".{final.name}.{os.getpid()}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
