"""Package-level promises: a light core import and compiled kernels cached on disk."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numba

from lab import kernels


def test_core_import_stays_free_of_torch_and_transformers():
    code = "import sys, lab; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_every_kernel_is_cached_on_disk():
    dispatchers = [v for v in vars(kernels).values() if isinstance(v, numba.core.registry.CPUDispatcher)]
    assert dispatchers
    for dispatcher in dispatchers:
        assert dispatcher._cache.__class__.__name__ == "FunctionCache", dispatcher.__name__


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject():
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = {_requirement_name(d) for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_requirement_name(d) for d in extra} - {project["name"]}
    listed = {
        _requirement_name(line.strip()[2:])
        for line in (root / "environment.yml").read_text().splitlines()
        if line.strip().startswith("- ") and not line.strip().startswith("- -e")
    }
    assert wanted - listed == set(), "add these to environment.yml"
    assert (root / "environment.yml").read_text().rstrip().endswith("- -e .")
