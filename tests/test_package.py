"""Package-level promises: a light core import, the layering of subpackages, and compiled code that is cached on
disk, compiled once per process, and never served stale."""

import ast
import functools
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
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
# other. The top-level core (checks, units, registry, compiled, version, files) is below everything; cli and
# __init__ on top.
LAYERS = [{"trace"}, {"workloads", "sim"}, {"bounds"}, {"planning"}, {"learn"}, {"analysis"}, {"study"}, {"ui"}]
CORE = {"checks", "units", "registry", "compiled", "version", "files"}  # lab.version: no layer reaches up for it


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


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """{lab module: the lab modules it imports anywhere in its source, function bodies included}. ``from P import
    name`` counts as an import of ``P.name`` when that is a module, else of ``P``."""
    modules = {_module_name(path): path for path in LAB.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    node.module.split(".")[0] == "lab":
                edges.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                             for a in node.names)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.split(".")[0] == "lab")
        graph[module] = {m for m in edges if m in modules and m != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each holds an import cycle), sorted."""
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        order[v] = low[v] = len(order)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return sorted(found)


def test_no_import_cycle_among_lab_modules():
    """No lab module reaches itself through imports, counting those inside functions (a cycle hidden in a
    function is still a cycle: the two modules cannot be read, changed or layered apart)."""
    graph = _import_graph()
    assert "lab.bounds.curves" in graph and graph["lab.analysis.sweep"] >= {"lab.bounds.curves"}
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check sees one


def test_the_bounds_layer_sits_between_the_engine_and_the_scorers():
    """lab.bounds imports only trace, sim and the core; learn takes the optimum from it, and nothing registers
    itself from above (no function or module-level import of a later layer anywhere: see the layering test)."""
    graph = _import_graph()
    bounds = {m: edges for m, edges in graph.items() if m.startswith("lab.bounds")}
    assert set(bounds) >= {"lab.bounds.optimal", "lab.bounds.curves", "lab.bounds.capacities"}
    for module, edges in bounds.items():
        assert {_place(m)[1] for m in edges} <= {"bounds", "trace", "sim"} | CORE, module
    assert "lab.bounds.optimal" in graph["lab.learn.features"]


def test_the_metrics_are_computed_in_one_place():
    """A run's metrics come from the engine's counters through ``metrics_of_counts`` (lab/sim/simulate.py), and
    so do the optimum's and the one-pass curves': no other module prices latency or builds a metrics dict."""
    offenders = []
    for path in LAB.rglob("*.py"):
        if path in (LAB / "sim" / "simulate.py", LAB / "sim" / "cost.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("latency_ms", "transfer_ms"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {node.func.attr}")
            if isinstance(node, ast.Dict) and {"cache_hits", "total_latency"} <= {
                    k.value for k in node.keys if isinstance(k, ast.Constant)} and \
                    not all(isinstance(v, ast.Constant) for v in node.values):  # a table of units or words is not
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} builds the metrics")
    assert offenders == []
    bounds = "\n".join(p.read_text() for p in (LAB / "bounds").glob("*.py"))
    assert bounds.count("metrics_of_counts(") >= 2  # the optimum's schedule and the one-pass curves


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
import pandas as pd
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
abac = lab.simulate(pd.DataFrame({"tensor_id": list("ABAC"), "size_mb": 1.0}), "FIFO", capacity_mb=2)
print(json.dumps({"compiled": sorted(compiled), "FIFO victims": abac.victims()["tensor_id"].tolist()}))
"""


def test_editing_one_policy_file_recompiles_only_its_policies_loops(tmp_path):
    """A kernel's cache stamp covers its module and what that imports, and a policy's loop also its policy's
    module. In a copy of lab: after an edit of clock.py (SIEVE) the next process recompiles SIEVE's loop and
    clock.py's kernels and loads LRU's and FIFO's loops (basic.py) from the disk cache; after an edit of a hook in
    basic.py the next process runs the new hook (numba keys its own cache on the decorated function's file, and the
    engine's loop inlines hooks from other files), recompiling LRU's and FIFO's loops, not SIEVE's; an edit of the
    engine recompiles every loop."""
    copy = tmp_path / "src"
    # with its compiled kernels: their stamps are of the files' contents and paths inside lab, so the copy's
    # cache serves the copy (what this process's run compiled need not be compiled there again)
    shutil.copytree(LAB, copy / "lab", ignore=shutil.ignore_patterns("*.pyc", ".lab-index.lock"))
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin", "LAB_QUIET": "1", "LAB_COMPILE_WORKERS": "0",
           "NUMBA_BOUNDSCHECK": os.environ.get("NUMBA_BOUNDSCHECK", "0")}

    def run(*policies) -> dict:
        done = subprocess.run([sys.executable, "-c", COUNT_COMPILES, *policies], cwd=copy, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def compiles(*policies) -> list:
        return run(*policies)["compiled"]

    def edit(relative: str, old: str = "", new: str = "") -> None:
        path = copy / "lab" / relative
        source = path.read_text()
        assert old in source
        path.write_text(source.replace(old, new) + "\n# edited\n" if old else source + "\n# edited\n")

    loops = {"engine.py:_drive_basic_LRU", "engine.py:_drive_clock_SIEVE", "engine.py:_drive_basic_FIFO"}
    assert run("LRU", "SIEVE")["FIFO victims"] == ["A"]  # compiles what the copied cache lacks
    assert compiles("LRU", "SIEVE") == []  # then everything loads from the disk cache
    edit("sim/policies/clock.py")
    again = compiles("LRU", "SIEVE")
    assert "engine.py:_drive_clock_SIEVE" in again and "engine.py:_drive_basic_LRU" not in again, again
    assert {name.split(":")[0] for name in again} <= {"clock.py", "engine.py"}, again
    assert [name for name in again if name.startswith("engine.py")] == ["engine.py:_drive_clock_SIEVE"], again
    # FIFO's find now refreshes the stamp on a hit, as LRU does: at C, B (not A) is then the oldest
    edit("sim/policies/basic.py", """    @staticmethod
    def find(s, c, i, hit):
        return -1""", """    @staticmethod
    def find(s, c, i, hit):
        if hit:
            s.stamp[c] = i
        return -1""")
    hooked = run("LRU", "SIEVE")
    assert hooked["FIFO victims"] == ["B"], "the edited hook did not take effect: stale compiled code"
    engine_loops = {name for name in hooked["compiled"] if name.startswith("engine.py")}
    assert engine_loops == {"engine.py:_drive_basic_LRU", "engine.py:_drive_basic_FIFO"}, hooked["compiled"]
    edit("sim/engine.py")
    assert loops <= set(compiles("LRU", "SIEVE"))
    # the stale files of the edited stamps are gone: one index per kernel in the engine's cache folder
    for folder in {p.parent for p in (copy / "lab" / "sim" / "__pycache__").rglob("engine.*.nbi")}:
        indexes = [p.name.split("-")[0] for p in folder.glob("engine.*.nbi")]
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


def test_one_step_time_model():
    """Step time (issue 26) has one model, ``lab.sim.timing``: no other module reads the physical numbers it prices
    with (peaks, efficiencies, on-chip bandwidth, launch and host costs) or runs the issue queue; the step-time
    metrics reach a metrics dict only through ``StepTime.metrics``."""
    fields = (r"peak_tflops_for|compute_efficiency|misaligned_gemm_efficiency|dram_efficiency|onchip_bandwidth_gb_s"
              r"|kernel_launch_us|launch_latency_us|host_dispatch_us|autograd_factor|gemm_tile|memory_combine")
    # lab.PlannerOptions has a memory_combine of its own (self.…, options.…): the override it passes to timing
    reads = re.compile(rf"(?<!\bself)(?<!\boptions)(?<!PlannerOptions)\.(?:{fields})\b|\bissue_queue\(")
    offenders = [f"{path}: {m.group(0)}" for path, code in _sources().items()
                 if path not in ("lab/sim/timing.py", "lab/sim/cost.py") for m in reads.finditer(code)]
    assert offenders == []
    assert _found(r"[\"']step_time_ms[\"']\s*:", skip={"lab/sim/timing.py", "lab/units.py"}) == []


def test_the_version_is_pyprojects_and_read_from_its_own_module():
    from lab.version import __version__

    assert lab.__version__ == __version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    upward = [str(p.relative_to(LAB)) for p in LAB.rglob("*.py") if "from lab import __version__" in p.read_text()]
    assert upward == []


def _stub_imports() -> dict:
    """{public name: (module, name there)} of ``lab/__init__.pyi``'s ``from X import NAME as NAME`` lines (a
    re-export), and {public name: (None, annotation)} of its ``NAME: TYPE`` lines; private imports left out."""
    tree = ast.parse((LAB / "__init__.pyi").read_text())
    found = {}
    for node in tree.body:
        assert isinstance(node, (ast.ImportFrom, ast.AnnAssign, ast.Expr)), ast.dump(node)
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or "").startswith("_"):
                    continue
                assert alias.asname == alias.name, f"{alias.name}: a stub re-exports with 'as {alias.name}'"
                assert alias.name not in found, f"{alias.name} twice in the stub"
                found[alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.AnnAssign):
            assert node.target.id not in found, f"{node.target.id} twice in the stub"
            found[node.target.id] = (None, ast.unparse(node.annotation))
    return found


def test_every_public_name_is_in_all_dir_and_the_stub():
    """Lazy names too: ``dir(lab)`` (tab completion) and ``lab/__init__.pyi`` (type checkers) list exactly
    ``lab.__all__``, and the stub imports each from where lab gets it."""
    stub = _stub_imports()
    public = {name for name in dir(lab) if not name.startswith("_")}
    assert len(lab.__all__) == len(set(lab.__all__))
    assert public == set(lab.__all__)
    assert set(stub) - {"__version__"} == set(lab.__all__) and "__version__" in dir(lab)
    assert set(lab._LAZY) | set(lab._LAZY_MODULES) <= set(lab.__all__)
    for name, (module, attribute) in stub.items():
        if name in lab._LAZY_MODULES:  # without importing it (plots loads matplotlib)
            assert f"{module}.{attribute}" == lab._LAZY_MODULES[name], name
        elif name == "MODEL_PRESETS":  # lab.workloads.models.PRESETS under another name: annotated
            assert (module, attribute, lab._LAZY[name]) == (None, "Registry[_Preset]", "lab.workloads.models")
        elif name in lab._LAZY:  # without importing torch and the other heavy ones
            assert (module, attribute) == (lab._LAZY[name], name), name
        else:
            assert getattr(importlib.import_module(module), attribute) is getattr(lab, name), name
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["lab"]
    assert "__init__.pyi" in package_data and "py.typed" in package_data and (LAB / "py.typed").is_file()


def _definitions(pattern: str) -> list[str]:
    """``file:line`` of every line of lab's sources matching the regular expression ``pattern``."""
    regex = re.compile(pattern)
    return [f"{path.relative_to(LAB)}:{number}" for path in sorted(LAB.rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1) if regex.search(line)]


def test_one_of_each_shared_piece():
    """One registry class (every name lookup an instance of it), one heap, one random generator, one file lock,
    one command line, one class per name (issue 25)."""
    from lab.learn.scoring import SCORERS
    from lab.registry import Registry
    from lab.sim.cost import HARDWARE_PRESETS
    from lab.sim.policy import POLICIES
    from lab.trace.io import FORMATS
    from lab.workloads import generator, models

    assert _definitions(r"^class \w*Registry\b") == ["registry.py:11"]
    for registry in (POLICIES, SCORERS, HARDWARE_PRESETS, FORMATS, generator._MODEL_TYPES, models.PRESETS):
        assert isinstance(registry, Registry)
    assert [d.split(":")[0] for d in _definitions(r"^\s*def \w*(sift|heap_place)\w*\(")] == ["sim/structures.py"] * 2
    assert [d.split(":")[0] for d in _definitions(r"0x9E3779B97F4A7C15|0xBF58476D1CE4E5B9")] == ["sim/structures.py"] * 2
    assert [d.split(":")[0] for d in _definitions(r"\bfcntl\.flock\(")] == ["files.py"]
    assert {d.split(":")[0] for d in _definitions(r"^import argparse|\bArgumentParser\(")} == {"cli.py"}
    assert "__main__" not in (LAB / "ui" / "report.py").read_text() + (LAB / "ui" / "app.py").read_text()
    classes: dict = {}
    for path in sorted(LAB.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append(str(path.relative_to(LAB)))
    assert {name: files for name, files in classes.items() if len(files) > 1} == {}
    assert _definitions(r"^PHASES\s*=") == []


# Issue 25: each metric and rule defined once. These read the sources (comments left out) of lab/**/*.py and the
# code cells of the notebooks, and name each duplicate that came back.
def _code(path: Path) -> str:
    """``path``'s Python source without its comments (strings, docstrings included, kept)."""
    import io
    import tokenize

    tokens = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
              if t.type != tokenize.COMMENT]
    return tokenize.untokenize(tokens)


@functools.lru_cache(maxsize=1)
def _sources() -> dict[str, str]:
    """{path relative to the repository: code} of every module of lab and every notebook's code cells."""
    out = {str(p.relative_to(ROOT)): _code(p) for p in sorted(LAB.rglob("*.py"))}
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        out[str(notebook.relative_to(ROOT))] = "\n".join("".join(c["source"]) for c in cells
                                                         if c["cell_type"] == "code")
    return out


def _found(pattern: str, skip=()) -> list[str]:
    """'path: match' for each match of ``pattern`` in the sources, the paths in ``skip`` left out."""
    return [f"{path}: {m.group(0)}" for path, code in _sources().items() if path not in skip
            for m in re.finditer(pattern, code)]


@functools.lru_cache(maxsize=1)
def _lab_strings() -> tuple:
    """(path relative to the repository, string token) of every string literal of lab's modules, in order."""
    import io
    import tokenize

    return tuple((str(path.relative_to(ROOT)), token.string) for path in sorted(LAB.rglob("*.py"))
                 for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
                 if token.type == tokenize.STRING)


def _string_literals(value: str) -> list[str]:
    """The modules of lab holding the string literal ``value`` (once per occurrence)."""
    return [path for path, string in _lab_strings() if string in (f'"{value}"', f"'{value}'")]


def test_notebooks_use_the_facade():
    """Tutorials, reports and the app's page import lab and names from it, never a module inside it: what a
    notebook calls is public (``lab.__all__``, tab completion, the stub)."""
    pattern = re.compile(r"^\s*(?:from\s+lab\.\w|import\s+lab\.\w)", re.M)
    found = []
    for notebook in sorted([*(ROOT / "notebooks").glob("*.ipynb"), *(LAB / "ui" / "pages").glob("*.ipynb")]):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        found += [f"{notebook.relative_to(ROOT)}: {m.group(0).strip()}" for m in pattern.finditer(code)]
        for names in re.findall(r"^\s*from\s+lab\s+import\s+(\([^)]*\)|[^\n]*)", code, re.M):
            found += [f"{notebook.relative_to(ROOT)}: {n}" for n in re.findall(r"\w+", names) if n not in lab.__all__]
    assert found == []


def test_the_optimum_auto_rule_is_defined_once():
    """When ``optimum="auto"`` leaves the optimum out (a trace longer than AUTO_OPTIMUM_ACCESSES, or the
    explorer's own limit): one comparison, in ``lab.analysis.contenders.auto_skips_optimum``."""
    assert _found(r"(?:<=?|>=?)\s*(?:self\.)?(?:AUTO_OPTIMUM_ACCESSES|optimum_max_accesses)\b") == []
    assert _found(r"def auto_skips_optimum\b") == ["lab/analysis/contenders.py: def auto_skips_optimum"]


def test_the_best_online_policy_is_chosen_in_one_place():
    """One function picks the best online policy (``best_online_policy``): no other tie rule, ``min(..., key=)``
    over policies, ``tied_best`` or per-group ``.first()`` of a sorted table elsewhere (notebooks included)."""
    assert _found(r"\bmin\([^()]*\bkey=|\btied_best\b|groupby\(WORKLOAD[^()]*\)\.first\(\)") == []
    assert _found(r"<=\s*least\s*\*\s*\(1\s*\+") == ["lab/analysis/contenders.py: <= least * (1 +"]
    assert _found(r"def best_online_policy\b") == ["lab/analysis/contenders.py: def best_online_policy"]


def test_the_gap_to_the_optimum_is_computed_in_one_place():
    """100 (traffic - optimum) / optimum and 100 (LRU - x) / (LRU - optimum) each have one definition
    (``above_optimum_pct``, ``gap_closed_pct``): no formula over an optimum, a lower bound or an excess over it
    elsewhere (the optimum's own bracket width, ``OptimalResult.gap_pct``, aside)."""
    formula = r"100(?:\.0)?\s*\*\s*\([^()]*-[^()]*\)\s*/\s*[\w\[\]\"'.]*(?:lower|opt|bound|bracket|excess|gap)"
    skip = {p for p in _sources() if p.endswith("/optimal.py") or p == "lab/units.py"}  # units: percent_above
    assert _found(formula, skip) == []
    assert len(_found(r"def above_optimum_pct\b")) == 1 and len(_found(r"def gap_closed_pct\b")) == 1


def test_the_optimum_pseudo_policy_is_one_constant_and_one_predicate():
    """The string "OPT" appears once (the constant OPTIMUM), and rows are told apart by ``is_optimum`` (defined
    once), never compared with the constant."""
    assert len(_string_literals("OPT")) == 1, _string_literals("OPT")
    assert _found(r"def is_optimum\b") == ["lab/analysis/contenders.py: def is_optimum"]
    assert _found(r"[!=]=\s*OPTIMUM\b") == []


def test_capabilities_are_class_attributes_not_policy_names():
    """What a policy can do (needs scores, has a one-pass curve, reads the future) is a class attribute: no
    comparison of a policy's name, and beneath the ui (colours, words) the scored policy's name "ML" only in its
    class and once as the policy the scorer evaluation drives."""
    assert _found(r"\bpolic\w*\.name\s*(?:==|!=|in)\s*[\"'(]") == []
    assert _found(r"(?:==|!=)\s*[\"'](?:ML|LRU|FIFO|Belady|BeladySize|SIEVE)[\"']", skip={"lab/ui/plots.py"}) == []
    beneath_ui = [path for path in _string_literals("ML") if not path.startswith("lab/ui/")]  # ui: colours, words
    assert sorted(beneath_ui) == ["lab/analysis/scorer_evaluation.py", "lab/sim/policies/scored.py"]
    from lab.sim.policy import Policy

    for capability in ("needs_scores", "one_pass_curve", "offline", "randomized"):
        assert hasattr(Policy, capability), capability
    assert lab.get_policy("LRU").one_pass_curve and lab.get_policy("FIFO").one_pass_curve is None  # not inherited


def test_the_scorer_is_chosen_with_scorer_everywhere():
    """``scorer=`` names the scorer (``method`` means flow/milp, auto/one-pass/simulation, auto/optimum/belady)."""
    import inspect

    for function in (lab.score, lab.predict_schedule, lab.compare_policies, lab.sweep_capacity, lab.run_policies,
                     lab.predict_compile):
        assert "scorer" in inspect.signature(function).parameters, function.__name__
    assert "method" not in {*inspect.signature(lab.score).parameters, *inspect.signature(lab.predict_schedule).parameters}
    docs = {str(p.relative_to(ROOT)): p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    scorer_method = r"(?:predict_schedule|\bscore)\([^()]*method=|_flag\(schedule, \"method\""
    assert _found(scorer_method) == [] and [p for p, text in docs.items() if re.search(scorer_method, text)] == []


def test_an_optional_column_is_read_by_one_helper():
    """"The column, or zeros/defaults when the trace lacks it" is ``lab.trace.schema.column_or``, not an
    inline ``x if "col" in trace else np.zeros(...)`` or ``w.is_write if w.has_writes else np.zeros(...)``."""
    inline = (r"if\s+[\"']\w+[\"']\s+in\s+trace\s+else\s+np\.(?:zeros|full|ones)\((?!0\b)"
              r"|\.is_(?:write|persist)\s+if\s+\w+\.has_\w+\s+else\s+np\.zeros\((?!0\b)")
    assert _found(inline) == []


def test_a_cache_index_is_saved_and_read_under_its_folders_lock(tmp_path):
    """Two processes saving different signatures of one kernel must not both pick the same data file: numba's
    index is read, extended and written under one lock per cache folder (lab.compiled.INDEX_LOCK_NAME)."""
    from numba.core import caching

    index = caching.IndexDataCacheFile(str(tmp_path), "kernel", "stamp")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lab.files import file_lock\n"
         f"with file_lock({str(tmp_path / compiled.INDEX_LOCK_NAME)!r}):\n"
         "    print('held', flush=True); time.sleep(1.5)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        index.save(("signature", 1), {"code": 1})
        assert time.perf_counter() - started > 1.0  # it waited for the other process's save
    finally:
        holder.wait()
    index.save(("signature", 2), {"code": 2})
    assert index.load(("signature", 1)) == {"code": 1} and index.load(("signature", 2)) == {"code": 2}
    assert sorted(p.name for p in tmp_path.glob("*.nbc")) == ["kernel.1.nbc", "kernel.2.nbc"]
