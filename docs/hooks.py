"""MkDocs hooks: the pages that are generated from the repository at build time, never copied by hand.

- Every notebook under ``notebooks/`` becomes a page ``notebooks/<name>.ipynb`` (mkdocs-jupyter renders it with
  its stored outputs, ``execute: false``): the tutorials, the explorer and the report notebooks.
- ``<!-- lab:policy-table -->`` in a page becomes the table of ``lab.policy_table()``.
- ``<!-- lab:cli-help -->`` becomes ``python -m lab --help`` and each command's ``--help``.
- ``<!-- lab:notebooks -->`` becomes the table of ``notebooks/README.md`` (the one list of the notebooks).

The repository being built is put first on ``sys.path``, so that the pages document its own ``lab``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import posixpath
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
MARKERS = {
    "<!-- lab:policy-table -->": "_policy_table",
    "<!-- lab:cli-help -->": "_cli_help",
    "<!-- lab:notebooks -->": "_notebooks_table",
}


def _lab():
    """``lab`` imported from this repository (not another checkout installed in the environment)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    lab = importlib.import_module("lab")
    if Path(lab.__file__).resolve().parents[1] != ROOT:
        raise PluginError(f"lab was imported from {lab.__file__}, not from the repository being built ({ROOT}): "
                          "build the docs in a fresh process (make docs)")
    return lab


def _cell(value) -> str:
    """One table cell: no line breaks, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _policy_table(page) -> str:
    """The registered policies as a Markdown table, from ``lab.policy_table()``."""
    table = _lab().policy_table()
    rows = ["| policy | evicts | parameters | libCacheSim | follows |", "|---|---|---|---|---|"]
    for name, row in table.iterrows():
        aliases = f" (`{_cell(row['aliases'])}`)" if row["aliases"] else ""
        flags = [label for label, on in (("randomized, `seed`", row["randomized"]),
                                         ("offline: reads the future", row["offline"])) if on]
        evicts = _cell(row["evicts"]) + (f" *({'; '.join(flags)})*" if flags else "")
        params = f"`{_cell(row['parameters'])}`" if row["parameters"] else "—"
        rows.append(f"| `{name}`{aliases} | {evicts} | {params} | {_cell(row['libcachesim']) or '—'} | "
                    f"{_cell(row['reference'])} |")
    return "\n".join(rows)


def _cli_help(page) -> str:
    """``python -m lab --help`` and every command's ``--help``, as the parser prints them (100 columns)."""
    _lab()
    cli = importlib.import_module("lab.cli")
    with _columns(100):
        parser = cli.build_parser()
        parts = ["```text\n$ python -m lab --help\n" + parser.format_help().rstrip() + "\n```"]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    parts.append(f"### `{name}`\n\n```text\n$ python -m lab {name} --help\n"
                                 + sub.format_help().rstrip() + "\n```")
    return "\n\n".join(parts)


@contextlib.contextmanager
def _columns(width: int):
    """argparse wraps to ``$COLUMNS``: a fixed width, so the page is the same on every terminal."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _notebooks_table(page) -> str:
    """The table of ``notebooks/README.md``, each notebook's name linked to its page (relative to ``page``)."""
    lines = (ROOT / "notebooks" / "README.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    if not table:
        raise PluginError("notebooks/README.md has no table of the notebooks")
    out = table[:2]
    for line in table[2:]:
        cells = line.split("|")
        name = cells[1].strip().strip("`")
        link = posixpath.relpath(f"notebooks/{name}.ipynb", posixpath.dirname(page.file.src_uri) or ".")
        cells[1] = f" [`{name}`]({link}) "
        out.append("|".join(cells))
    return "\n".join(out)


@event_priority(50)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files, config):
    """Add every notebook of ``notebooks/`` as the page ``notebooks/<name>.ipynb``."""
    # a File whose source folder is the repository's root, not a generated one: mkdocs-jupyter's wrapper reads
    # the source path from the folder and the name, which a generated File does not have
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        files.append(File(f"notebooks/{path.name}", src_dir=str(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_page_markdown(markdown, page, config, files):
    """Replace each generation marker in a page by what it generates."""
    for marker, function in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, globals()[function](page))
    return markdown
