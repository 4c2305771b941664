import os
import sys

# compile notices (lab.compiled) stay off stderr here: the notebooks' stored outputs and the reports' no-stderr
# checks must not depend on which kernels happen to be compiled already
os.environ["LAB_QUIET"] = "1"
# every kernel the suite runs is compiled with numba's bounds checking (an index out of range raises IndexError
# instead of reading or writing past an array): each test also checks that its kernels stay in bounds, and
# tests/test_policy_ranges.py drives every policy to the ends of its parameters' ranges. lab.compiled keeps such
# kernels in a cache folder of their own, apart from the normal ones. NUMBA_BOUNDSCHECK=0 runs the suite unchecked.
os.environ.setdefault("NUMBA_BOUNDSCHECK", "1")
if "numba" in sys.modules:  # imported before this file (a plugin): read the setting again
    from numba.core import config as _numba_config

    _numba_config.reload_config()

import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab.units import BYTES_PER_MB

ROOT = Path(__file__).resolve().parents[1]

# --- the suite on several processes (pytest-xdist: make test runs ``pytest -n 3``) -------------------------
# With ``--dist loadgroup`` (pyproject.toml's addopts) the tests of each file listed here run on one worker, in
# order: they share module-scoped fixtures (a report run, a study, a Voila server and browser) made once. A
# tutorial notebook's cells (nbval) share one kernel and run in order: each notebook is such a group too. Every
# other test is handed out on its own. (Groups are made here from the test ids, not with xdist_group marks:
# xdist 3.8 puts a mark's group into ``item._nodeid``, which pytest 9 no longer reads.)
SHARED_FIXTURE_MODULES = {"tests/test_report.py", "tests/test_study.py", "tests/test_app.py", "tests/test_figures.py",
                          "tests/test_learned.py", "tests/test_llm_scorer.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """On an xdist worker, the tests marked slow first (a stable sort: every worker collects the same order): the
    tests handed out one by one go in this order, so that the longest are not the last, one worker busy alone."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FileGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path.endswith(".ipynb") or path in SHARED_FIXTURE_MODULES:
                return path
            return super()._split_scope(nodeid)

    return FileGroups(config, log)


# On a clean clone numba's disk cache is empty, and the workers would compile the same kernels side by side
# (each of the 20 policies' loops takes seconds). Before the workers start, the controller fills the cache
# once, in a process of its own that compiles the loops side by side with lab.sim.precompile's workers
# (private cache folders, adopted whole): every policy's loop on the scratchpad and the hardware cache, the
# one-pass curves, the optimum and the plan. The workers then load them from disk. Warm, it takes seconds.
# Whatever it misses is compiled where it is first used, as without it; a failure here only costs that.
WARM_UP = """
import lab
trace = lab.generate_trace("Transformer", num_layers=2, batch_size=2, seq_length=16, seed=0)
capacities = [float(c) for c in lab.default_capacities_mb(trace, 3)]
for step in (lambda: lab.compare_policies(trace, "all", capacity_mb=capacities[1]),
             lambda: lab.sweep_capacity(trace, "all", capacities),
             lambda: lab.compare_policies(trace, "all", capacity_mb=capacities[1], cost="H100-SXM5"),
             lambda: lab.predict_compile(trace, capacities[1]),
             lambda: lab.plan(trace, capacities[1], cost="H200")):
    try:
        step()
    except Exception as error:  # an API that moved: its kernels compile in the workers instead
        print(f"numba warm-up step failed: {error!r}"[:300])
"""
WARM_UP_ENV = "LAB_TEST_WARM_UP"  # 0: skip the warm-up


def _xdist_controller(config) -> bool:
    """True in the process that hands tests to xdist workers (not in a worker, not in a plain run)."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput") and \
        getattr(config.option, "dist", "no") != "no"


def pytest_sessionstart(session):
    if not _xdist_controller(session.config) or os.environ.get(WARM_UP_ENV, "1") == "0":
        return
    started = time.perf_counter()
    env = {**os.environ, "LAB_QUIET": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", WARM_UP], env=env, cwd=ROOT, capture_output=True, text=True)
    session.config._lab_warm_up = (time.perf_counter() - started, done.returncode, (done.stdout + done.stderr)[-500:])


def pytest_report_header(config):
    warm_up = getattr(config, "_lab_warm_up", None)
    if warm_up:
        seconds, code, out = warm_up
        return [f"numba cache warmed for the workers in {seconds:.1f} s" +
                ("" if code == 0 and not out.strip() else f" (exit code {code}: {out.strip()})")]
    return []


def random_trace(seed, n_accesses=400, n_tensors=40, max_size_bytes=64, unit=False, zipf=None):
    """A random trace with exact integer byte sizes (size_mb = bytes / 2**20) and eviction scores."""
    rng = np.random.default_rng(seed)
    if zipf:
        ids = (rng.zipf(zipf, n_accesses) - 1) % n_tensors
    else:
        ids = rng.integers(0, n_tensors, n_accesses)
    size_bytes = np.ones(n_tensors, np.int64) if unit else rng.integers(1, max_size_bytes + 1, n_tensors)
    trace = pd.DataFrame({"tensor_id": [f"t{i}" for i in ids], "size_mb": size_bytes[ids] / BYTES_PER_MB})
    # scores on a coarse grid so that ties (and their tie-break) really occur
    trace["eviction_score"] = rng.integers(0, 5, n_accesses) / 4
    return trace


@pytest.fixture
def small_trace():
    return pd.DataFrame(
        {
            "tensor_id": ["A", "B", "A", "C", "B", "D", "A", "C"],
            "size_mb": [4.0, 8.0, 4.0, 16.0, 8.0, 32.0, 4.0, 16.0],
            "eviction_score": [0.1, 0.9, 0.2, 0.5, 0.8, 0.3, 0.4, 0.6],
        }
    )


@pytest.fixture(scope="session")
def scored():
    """A scored 3-layer Transformer trace, shared by the figure tests (read only)."""
    import lab

    return lab.score(lab.generate_trace("Transformer", num_layers=3))
