"""The front door and the docs: every `lab.` name they mention exists, the README's own-model example runs,
the notebooks are numbered once and all listed, and the docs site builds strictly (``make docs``)."""

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# `lab.x.y` in prose or code, not part of a longer name or a path (`lab/sim`, `my.lab.x`, `LAB_CACHE_DIR`)
DOTTED = re.compile(r"(?<![\w./-])lab(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"\bfrom\s+(lab(?:\.\w+)*)\s+import\s+(\([^)]*\)|[^\n#]+)")
IMPORT = re.compile(r"(?m)^\s*import\s+(lab(?:\.\w+)*)")


def _markdown_sources():
    """(where, text) of every markdown file of the front door and the docs, and each notebook's markdown cells."""
    sources = [(README.name, README.read_text())]
    sources += [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "docs").rglob("*.md"))]
    sources += [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "notebooks").glob("*.md"))]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        sources.append((str(path.relative_to(ROOT)), text))
    return sources


def lab_names(text: str) -> set:
    """Every ``lab.`` name the text refers to: dotted references and ``from lab... import`` / ``import lab...``."""
    names = set(DOTTED.findall(text))
    for module, imported in FROM_IMPORT.findall(text):
        for item in imported.strip("() \n").split(","):
            item = item.split(" as ")[0].strip()
            if item and item != "*":
                names.add(f"{module}.{item}")
    names.update(IMPORT.findall(text))
    return names


def resolve(name: str):
    """The object ``name`` (``lab.a.b``) names: attributes of ``lab`` (its lazy ones included), else submodules.
    Raises AttributeError or ImportError when it does not exist."""
    parts = name.split(".")
    target = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        try:
            target = getattr(target, part)
        except AttributeError:
            target = importlib.import_module(".".join(parts[:i]))
    return target


def test_name_extraction_finds_dotted_names_and_imports():
    text = ("Use `lab.simulate(...)`, then lab.ui.report.\n```python\nfrom lab.workloads.models import "
            "(capture_model,\n  PRESETS as P)\nfrom lab import optimal, CostModel\nimport lab.sim.hardware\n```\n"
            "not lab/sim/engine.py, $LAB_CACHE_DIR, my.lab.thing or the lab.")
    assert lab_names(text) == {"lab.simulate", "lab.ui.report", "lab.workloads.models",
                               "lab.workloads.models.capture_model",
                               "lab.workloads.models.PRESETS", "lab.optimal", "lab.CostModel", "lab.sim.hardware"}


def test_resolve_refuses_names_that_do_not_exist():
    assert resolve("lab.simulate") is importlib.import_module("lab").simulate
    for stale in ("lab.models", "lab.capture.capture_trace", "lab.widgets.Explorer", "lab.sim.no_such_thing"):
        with pytest.raises((AttributeError, ImportError)):
            resolve(stale)


def test_every_lab_name_in_the_readme_the_docs_and_the_notebooks_exists():
    missing = {}
    for where, text in _markdown_sources():
        for name in sorted(lab_names(text)):
            try:
                resolve(name)
            except (AttributeError, ImportError) as error:
                missing.setdefault(where, []).append(f"{name} ({type(error).__name__}: {error})")
    assert not missing, "names that do not exist:\n" + "\n".join(
        f"{where}: {', '.join(names)}" for where, names in missing.items())


def test_the_readme_is_a_front_door():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines: move the details to docs/"
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split("#")[0].strip() for line in first_block[:2]] == ["make report", "make test"]
    for section in ("## What it answers", "## A tour", "## Your own model", "## The command line",
                    "## Capabilities", "## Layout"):
        assert section in text, f"README.md lost its section {section!r}"


def _code_blocks(text: str, language: str) -> list:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(_code_blocks(README.read_text(), "python"))))
def test_each_python_example_of_the_readme_runs(index, tmp_path):
    code = _code_blocks(README.read_text(), "python")[index]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, f"README.md's python block {index} failed:\n{code}\n{done.stderr[-3000:]}"


def _cli_lines():
    """Each ``python -m lab VERB ...`` line of the README's and the docs' shell blocks: (where, argv after lab)."""
    found = []
    for where, text in _markdown_sources():
        for block in _code_blocks(text, "sh"):
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                if "-m" in words and words[words.index("-m") + 1:][:1] == ["lab"]:
                    found.append((where, words[words.index("-m") + 2:]))
    return found


def test_the_shell_examples_use_commands_and_options_that_exist():
    from lab.cli import build_parser

    with pytest.raises(SystemExit):  # the check below can fail: an option that does not exist is refused
        build_parser().parse_args(["simulate", "--no_such_option", "1"])
    lines = _cli_lines()
    assert {argv[0] for _, argv in lines} >= {"capture", "simulate", "compile", "study"}
    for where, argv in lines:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: `python -m lab {' '.join(argv)}` is refused by the parser")


def test_notebook_numbers_are_unique_and_every_notebook_is_listed():
    numbers = [path.name.split("-")[0] for path in NOTEBOOKS]
    assert all(n.isdigit() for n in numbers) and len(set(numbers)) == len(numbers), numbers
    listing = (ROOT / "notebooks" / "README.md").read_text()
    nav = json.dumps(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    for path in NOTEBOOKS:
        assert f"`{path.stem}`" in listing, f"notebooks/README.md does not list {path.name}"
        assert f"notebooks/{path.name}" in nav, f"mkdocs.yml's nav does not list {path.name}"
    params = sorted(p.name for p in (ROOT / "params").iterdir() if p.is_dir() and p.name != "studies")
    assert set(params) <= {path.stem for path in NOTEBOOKS}, "a params folder names no notebook"


def test_the_docs_build_strictly_with_generated_pages(tmp_path):
    import lab

    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(site)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    policies = (site / "policies.html").read_text()
    for name in lab.policy_table().index:
        assert f"<code>{name}</code>" in policies, f"the policy page lacks {name}"
    cli = (site / "cli.html").read_text()
    assert all(f"python -m lab {verb} --help" in cli for verb in ("generate", "simulate", "capture", "study"))
    quickstart = (site / "notebooks" / "00-quickstart.html").read_text()
    assert "working_set_mb" in quickstart, "the quickstart is rendered without its stored outputs"
    assert "site/" in (ROOT / ".gitignore").read_text().split(), "make docs's site/ must stay out of git"
