"""Package-level promises: a light core import, the layering of subpackages, and compiled code that is cached on
disk, compiled once per process, and never served stale."""

import ast
import importlib
import json
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numba
import pytest

import lab
from lab import compiled
from lab.sim import engine

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "lab"

# Each subpackage may import itself and the layers before it; packages that share a layer do not import each
# other. The top-level core (checks, units, registry, compiled) is below everything; cli and __init__ on top.
LAYERS = [{"trace"}, {"workloads", "sim"}, {"learn"}, {"analysis"}, {"study"}, {"ui"}]
CORE = {"checks", "units", "registry", "compiled", "version"}  # lab.version: no layer reaches up for it


def _place(module: str):
    """(layer index, package) of a lab module name: -1 for the core, len(LAYERS) for the top."""
    parts = module.split(".")
    package = parts[1] if len(parts) > 1 else ""
    if package in CORE:
        return -1, package
    for index, names in enumerate(LAYERS):
        if package in names:
            return index, package
    return len(LAYERS), package


def _lab_imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lab"):
            if node.module == "lab":
                yield from (f"lab.{alias.name}" for alias in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("lab"))


def test_subpackages_import_only_their_own_layer_and_below():
    violations = []
    for path in LAB.rglob("*.py"):
        module = "lab." + ".".join(path.relative_to(LAB).with_suffix("").parts)
        layer, package = _place(module)
        for imported in _lab_imports(path):
            their_layer, their_package = _place(imported)
            if imported == "lab":
                if layer < len(LAYERS) - 1:
                    violations.append(f"{module} -> lab (only ui and the top may use the flat API)")
            elif their_layer > layer or (their_layer == layer and their_package != package and 0 <= layer < len(LAYERS)):
                violations.append(f"{module} -> {imported}")
    assert violations == []


def test_core_import_stays_free_of_heavy_and_optional_packages():
    # numba loads scipy; dask and distributed load only when a study runs on them (lab.study)
    heavy = ("torch", "transformers", "ipywidgets", "matplotlib", "papermill", "libcachesim", "dask", "distributed")
    code = f"import sys, lab; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def _lab_modules(skip=("lab.ui", "lab.workloads")):
    for info in pkgutil.walk_packages(lab.__path__, "lab."):
        if not info.name.startswith(skip) and info.name != "lab.__main__":
            yield importlib.import_module(info.name)


def _kernels():
    """{(module name, name): dispatcher} of every kernel defined in a module of lab."""
    return {(m.__name__, name): v for m in _lab_modules() for name, v in vars(m).items()
            if isinstance(v, numba.core.registry.CPUDispatcher) and v.__module__ == m.__name__}


def test_every_kernel_is_cached_on_disk_and_stamped_with_the_sources():
    dispatchers = _kernels()
    assert len(dispatchers) > 10
    for (module, name), dispatcher in dispatchers.items():
        if dispatcher is engine.drive_uncached:
            continue
        assert dispatcher._cache.__class__.__name__ == "FunctionCache", f"{module}.{name}"
        locator = dispatcher._cache._impl.locator
        assert type(locator).__name__.startswith("Lab"), f"{module}.{name}: {type(locator).__name__}"
        stamp = compiled.kernel_stamp(dispatcher.py_func)
        assert locator.get_source_stamp() == stamp
        # an index written by other sources is never opened: the stamp is in its name
        assert f"-{stamp[:compiled.STAMP_CHARS]}.py" in dispatcher._cache._cache_file._index_name
        assert dispatcher.targetoptions.get("nogil"), f"{module}.{name} must release the GIL"


def _file_of(value):
    """The lab source file behind a module's global (a module, or a function, class or kernel of one), if any."""
    if isinstance(value, numba.core.registry.CPUDispatcher):
        value = value.py_func
    module = value if isinstance(value, type(sys)) else sys.modules.get(getattr(value, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    if path is None or Path(path).name == "__init__.py" or not Path(path).resolve().is_relative_to(LAB):
        return None
    return Path(path).resolve()


def test_no_kernel_reaches_code_outside_its_stamp():
    """numba compiles into a kernel what its module's globals name (kernels it calls are linked in): the cache
    stamp covers every lab module behind those globals, whatever package the kernel is in. Code chosen by type
    at compile time (numba overloads) exists only for the policies' hooks, and each policy's loop is stamped
    with its policy's module and the engine's, not with the other policies' files."""
    for (module, name), dispatcher in _kernels().items():
        if dispatcher is engine.drive_uncached:
            continue
        covered = set(compiled.kernel_sources(dispatcher.py_func))
        needed = {_file_of(v) for v in vars(sys.modules[module]).values()} - {None}
        assert needed <= covered, f"{module}.{name}: {sorted(map(str, needed - covered))}"
    extending = {path.relative_to(LAB).as_posix() for path in LAB.rglob("*.py")
                 if re.search(r"numba(\.core)?\.extending|generated_jit", path.read_text())}
    assert extending == {"sim/policy.py"}
    policy_files = {path.resolve() for path in (LAB / "sim" / "policies").glob("*.py")}
    for name in lab.policy_names():
        cls = type(lab.get_policy(name))
        covered = set(compiled.kernel_sources(engine.driver_for(cls).py_func))
        own = {Path(sys.modules[c.__module__].__file__).resolve() for c in cls.__mro__ if c.__module__ != "builtins"}
        assert own | {Path(engine.__file__).resolve()} <= covered, name
        imported = {LAB.joinpath(*m.split(".")[1:]).with_suffix(".py") for path in own for m in _lab_imports(path)}
        assert covered & policy_files <= own | imported, f"{name}'s loop is stamped with other policies' files"

    class Mine(type(lab.get_policy("LRU"))):  # its hooks may live outside lab, where no stamp covers them
        pass

    assert engine.driver_for(Mine) is engine.drive_uncached


def test_one_compile_per_policy_per_process():
    """Whatever the trace looks like (read-only pandas arrays, categorical or integer ids, reads and writes,
    per-access outputs or not), each policy's loop has exactly one compiled signature."""
    code = """
import numpy as np, pandas as pd, lab
from lab.sim import engine
rng = np.random.default_rng(0)
ids = rng.integers(0, 50, 400)
traces = [
    pd.DataFrame({"tensor_id": ids, "size_mb": 1.0}),
    pd.DataFrame({"tensor_id": pd.Categorical(ids.astype(str)), "size_mb": np.ones(400)}),
    pd.DataFrame({"tensor_id": [f"t{i}" for i in ids], "size_mb": (ids % 7 + 1) / 4,
                  "access": np.where(rng.random(400) < 0.3, "write", "read")}),
]
frozen = pd.DataFrame({"tensor_id": ids.copy(), "size_mb": np.ones(400)})
frozen["tensor_id"].to_numpy().flags.writeable = False
traces.append(frozen)
for trace in traces:
    trace["eviction_score"] = rng.random(len(trace))
    for policy in lab.policy_names():
        for per_access in (True, False):
            lab.simulate(trace, policy, capacity_mb=8, per_access=per_access)
            lab.simulate(lab.encode_trace(trace), policy, capacity_mb=3.5, per_access=per_access)
print([len(engine.driver_for(type(lab.get_policy(p))).signatures) for p in lab.policy_names()])
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert json.loads(out) == [1] * len(lab.policy_names())  # one loop per policy, compiled once


def test_every_policy_state_is_found_again_by_the_disk_cache():
    """numba keys a cached loop on the state's type, pickled by reference: a state class that pickle cannot
    find again (an inherited State made at registration) would recompile the loop in every process."""
    import pickle

    import lab
    from lab.sim.policy import get_policy

    for name in lab.policy_names():
        state = type(get_policy(name)).State
        assert pickle.loads(pickle.dumps(state)) is state, name


def test_editing_a_hook_invalidates_the_compiled_loop(tmp_path):
    """Numba keys its disk cache on the decorated function's own file; the engine's loop inlines hooks from other
    files. Here a copy of lab is run, a hook is edited, and the next process must run the new hook."""
    copy = tmp_path / "src"
    shutil.copytree(LAB, copy / "lab", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import pandas as pd, lab; t = pd.DataFrame({'tensor_id': list('ABAC'), 'size_mb': 1.0}); "
            "print(lab.simulate(t, 'FIFO', capacity_mb=2).victims()['tensor_id'].tolist())")
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}

    def run():
        return subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    assert run() == "['A']"
    basic = copy / "lab" / "sim" / "policies" / "basic.py"
    source = basic.read_text()
    # FIFO's find now refreshes the stamp on a hit, as LRU does: at C, B (not A) is then the oldest
    edited = source.replace('''    @staticmethod
    def find(s, c, i, hit):
        return -1''', '''    @staticmethod
    def find(s, c, i, hit):
        if hit:
            s.stamp[c] = i
        return -1''')
    assert edited != source
    basic.write_text(edited)
    assert run() == "['B']", "the edited hook did not take effect: stale compiled code"


def test_no_code_generated_from_strings():
    """Compiled code is plain functions that tools, tracebacks and the cache stamps can see: no exec or eval."""
    for path in LAB.rglob("*.py"):
        calls = [n.func.id for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("exec", "eval")]
        assert calls == [], path


def test_the_import_scan_finds_what_a_full_parse_finds():
    """A kernel's stamp follows its module's imports, found by parsing only the lines that start an import (a full
    parse of every module took tenths of a second per process): it finds those of a full ``ast`` walk, in every
    module of lab and in the odd forms below."""
    def full_walk(source: str) -> list:
        return [ast.unparse(n) for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]

    def scanned(source: str) -> list:
        return [ast.unparse(n) for n in compiled._import_statements(source.encode())]

    odd = ("from lab.sim.structures import (NONE,  # a comment (with parentheses)\n    Lists)\n"
           "import lab.units, numpy as np\nfrom lab.sim.engine import \\\n    NO_VICTIM\n"
           "def f():\n    if True:\n        from . import checks  # (relative)\n"
           "    from lab.trace import workload as w  # a comment ( that opens\n"
           '\"\"\"Docstring prose:\nimport this and that\nfrom here import (there\nimport lab.prose\n\"\"\"\n')
    assert sorted(scanned(odd)) == sorted(full_walk(odd) + ["import lab.prose"])  # prose that parses: harmless
    for path in LAB.rglob("*.py"):
        assert sorted(scanned(path.read_text())) == sorted(full_walk(path.read_text())), path


COUNT_COMPILES = """
import json, sys
from pathlib import Path
from numba.core import event
import lab

compiled = set()
class Listener(event.Listener):
    def on_start(self, ev):
        function = ev.data["dispatcher"].py_func
        if type(ev.data["dispatcher"]._cache).__name__ != "NullCache":  # a kernel cached on disk, not a hook
            compiled.add(f"{Path(function.__code__.co_filename).name}:{function.__qualname__}")
    def on_end(self, ev):
        pass
event.register("numba:compile", Listener())
trace = lab.generate_trace("Transformer", num_layers=1)
results = [lab.simulate(trace, name, capacity_mb=8) for name in sys.argv[1:]]
print(json.dumps(sorted(compiled)))
"""


def test_editing_one_policy_file_recompiles_only_its_policies_loops(tmp_path):
    """A kernel's cache stamp covers its module and what that imports, and a policy's loop also its policy's
    module: after an edit of clock.py (SIEVE) the next process recompiles SIEVE's loop and clock.py's kernels,
    and loads LRU's loop (basic.py) from the disk cache; an edit of the engine recompiles both loops."""
    copy = tmp_path / "src"
    shutil.copytree(LAB, copy / "lab", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin", "LAB_QUIET": "1", "LAB_COMPILE_WORKERS": "0"}

    def compiles() -> list:
        done = subprocess.run([sys.executable, "-c", COUNT_COMPILES, "LRU", "SIEVE"], cwd=copy, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def edit(relative: str) -> None:
        path = copy / "lab" / relative
        path.write_text(path.read_text() + "\n# edited\n")

    loops = {"engine.py:_drive_basic_LRU", "engine.py:_drive_clock_SIEVE"}
    assert loops <= set(compiles())  # a cold start compiles both loops
    assert compiles() == []  # then both load from the disk cache
    edit("sim/policies/clock.py")
    again = compiles()
    assert "engine.py:_drive_clock_SIEVE" in again and "engine.py:_drive_basic_LRU" not in again, again
    assert {name.split(":")[0] for name in again} <= {"clock.py", "engine.py"}, again
    assert [name for name in again if name.startswith("engine.py")] == ["engine.py:_drive_clock_SIEVE"], again
    edit("sim/engine.py")
    assert loops <= set(compiles())
    # the stale files of the edited stamps are gone: one index per kernel in the engine's cache folder
    indexes = [p.name.split("-")[0] for p in (copy / "lab" / "sim" / "__pycache__").glob("engine.*.nbi")]
    assert sorted(indexes) == sorted(set(indexes)), indexes


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_requirement_name(d) for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_requirement_name(d) for d in extra} - {project["name"]}
    listed = {
        _requirement_name(line.strip()[2:])
        for line in (ROOT / "environment.yml").read_text().splitlines()
        if line.strip().startswith("- ") and not line.strip().startswith("- -e")
    }
    assert wanted - listed == set(), "add these to environment.yml"
    assert (ROOT / "environment.yml").read_text().rstrip().endswith("- -e .")


def test_one_latency_formula():
    """``total_latency`` has one formula, ``CostModel.latency_ms``: no other module prices hits, misses or MB."""
    prices = r"(hit_latency_ms|miss_latency_ms|miss_latency_ms_per_mb)"
    pattern = re.compile(rf"\.{prices}\s*[*+]|[*+]\s*\w+\.{prices}\b")
    offenders = [str(path.relative_to(LAB)) for path in LAB.rglob("*.py")
                 if path != LAB / "sim" / "cost.py" and pattern.search(path.read_text())]
    assert offenders == []
    cost = lab.CostModel(hit_latency_ms=1.0, miss_latency_ms=10.0, miss_latency_ms_per_mb=2.0,
                         dram_bandwidth_gb_s=1.0)
    assert cost.latency_ms(3, 2, 2**20) == pytest.approx(3 + 20 + 2 + 2**20 / 1e9 * 1e3)


def test_the_version_is_pyprojects_and_read_from_its_own_module():
    from lab.version import __version__

    assert lab.__version__ == __version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    upward = [str(p.relative_to(LAB)) for p in LAB.rglob("*.py") if "from lab import __version__" in p.read_text()]
    assert upward == []
