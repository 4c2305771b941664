"""A cold start compiles the policies' loops side by side: this process and worker processes, one per spare CPU.

numba compiles one function at a time per process (a global lock; most of
it is Python), and each policy has a loop of its own (``engine.driver_for``).
When a call needs several loops that are in neither this process nor the disk
cache, ``precompile`` hands a share of them to short-lived workers (``python
-m lab.sim.precompile``), compiles its own share meanwhile, then adopts the
workers' cache files and loads them. A worker writes only to a cache folder
of its own: numba's cache index is rewritten whole by each writer, so two
processes writing one folder could pair a signature with the other's code.
A loop's cache files are self-contained (the kernels it calls are linked
in), so copying its index and data files is all it takes. Whatever a worker
fails to deliver is compiled here, as it would have been without it.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lab.compiled import QUIET_ENV, say
from lab.sim import engine

WORKERS_ENV = "LAB_COMPILE_WORKERS"  # the most worker processes (default: one per CPU beyond the first; 0: none)
PARALLEL_MIN_LOOPS = 3  # fewer loops to compile than this: compile them here (a worker takes ~2 s to start)
LAB_ROOT = Path(__file__).resolve().parents[2]


def _load_cached(driver, signature) -> bool:
    """Load ``driver``'s loop for ``signature`` from numba's disk cache into this process, as numba's own
    ``Dispatcher.compile`` does on a cache hit; False when it is not there."""
    compiled = driver._cache.load_overload(signature, driver.targetctx)
    if compiled is None:
        return False
    driver.targetctx.insert_user_function(compiled.entry_point, compiled.fndesc, [compiled.library])
    driver.add_overload(compiled)
    return True


def max_workers() -> int:
    """Worker processes allowed: ``$LAB_COMPILE_WORKERS``, else one per CPU beyond the first; none inside a
    daemonic process (a Dask or multiprocessing worker cannot start children)."""
    if multiprocessing.current_process().daemon:
        return 0
    value = os.environ.get(WORKERS_ENV, "").strip()
    if not value:
        return max((os.cpu_count() or 1) - 1, 0)
    if not value.isdigit():
        raise ValueError(f"${WORKERS_ENV} must be a whole number of worker processes >= 0, got {value!r}")
    return int(value)


def missing_loops(workload, policies, capacity_bytes: int) -> list:
    """``(policy class, driver, signature)`` of each policy whose loop for ``workload`` is neither compiled in
    this process nor on disk (those on disk are loaded on the way); policies defined outside lab (uncached)
    are left out."""
    from lab.sim.simulate import driver_arguments

    missing, seen = [], set()
    for policy in policies:
        driver, args = driver_arguments(workload, policy, capacity_bytes, per_access=False)
        if driver is engine.drive_uncached or type(policy) in seen:
            continue
        seen.add(type(policy))
        signature = tuple(driver.typeof_pyval(a) for a in args)
        if signature in driver.overloads or _load_cached(driver, signature):
            continue
        missing.append((type(policy), driver, signature))
    return missing


def precompile(workload, policies, capacity_bytes: int) -> int:
    """Compile the loops ``policies`` need for ``workload`` that are neither in this process nor on disk,
    sharing them with worker processes when there are at least PARALLEL_MIN_LOOPS and ``max_workers()``
    allows; returns how many loops the workers delivered. Without workers, nothing is compiled here: each
    loop compiles on its first run, as always."""
    missing = missing_loops(workload, policies, capacity_bytes)
    workers = min(max_workers(), len(missing) - 1) if len(missing) >= PARALLEL_MIN_LOOPS else 0
    if workers <= 0:
        return 0
    shares = [missing[k::workers + 1] for k in range(workers + 1)]
    say(f"lab: compiling {len(missing)} policies' loops in {workers + 1} processes (first use; cached on disk "
        "afterwards)")
    delivered = 0
    with tempfile.TemporaryDirectory(prefix="lab-compile-") as scratch:
        started = [_start_worker(share, Path(scratch) / str(k)) for k, share in enumerate(shares[1:])]
        try:
            for _, driver, signature in shares[0]:
                driver.compile(signature)
            for (process, folder), share in zip(started, shares[1:]):
                folders = _delivered(process)
                for policy_cls, driver, signature in share:
                    if engine.driver_name(policy_cls) in folders:
                        delivered += _adopt(Path(folders[engine.driver_name(policy_cls)]), driver, signature)
                    driver.compile(signature)  # loads what was adopted, else compiles it here
        finally:
            for process, _ in started:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    return delivered


def _delivered(process) -> dict:
    """What a worker reports: ``{driver name: its cache folder}``, or nothing when it failed (its loops are
    then compiled here)."""
    try:
        out = process.stdout.read().decode()
        process.wait()
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if process.returncode == 0 and lines else {}
    except (OSError, ValueError):
        return {}


def _start_worker(share, folder: Path):
    folder.mkdir(parents=True)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(folder), QUIET_ENV: "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(LAB_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-m", "lab.sim.precompile"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    payload = pickle.dumps([(cls.__module__, cls.__qualname__, signature) for cls, _, signature in share])
    process.stdin.write(payload)
    process.stdin.close()
    return process, folder


def _adopt(folder: Path, driver, signature) -> int:
    """Copy a worker's cache files of ``driver`` (index and data, from ``folder``) into this process's cache
    folder, unless an index of it is there already (written by another run since: then it is left alone).
    Each file is copied under a temporary name and renamed: a reader never sees half of one. Returns 1 when
    the loop now loads from the disk cache, 0 otherwise."""
    cache = driver._cache
    index_name = cache._cache_file._index_name
    target = Path(cache._cache_path)
    if not (folder / index_name).is_file() or (target / index_name).exists():
        return 0
    cache._impl.locator.ensure_cache_path()
    base = index_name[: -len(".nbi")]
    for source in sorted(folder.glob(f"{base}.*.nbc")) + [folder / index_name]:  # the index last
        partial = target / f".{source.name}.{os.getpid()}.tmp"
        shutil.copyfile(source, partial)
        os.replace(partial, target / source.name)
    return int(_load_cached(driver, signature))


def _worker() -> None:
    """A worker: compile the loops named on stdin (pickled ``(module, class qualname, signature)``) into the
    cache folder of ``$NUMBA_CACHE_DIR``; print ``{driver name: its cache folder}`` as JSON."""
    folders = {}
    for module, qualname, signature in pickle.loads(sys.stdin.buffer.read()):
        policy_cls = importlib.import_module(module)
        for part in qualname.split("."):
            policy_cls = getattr(policy_cls, part)
        driver = engine.driver_for(policy_cls)
        driver.compile(signature)
        folders[engine.driver_name(policy_cls)] = driver._cache._cache_path
    print(json.dumps(folders))


if __name__ == "__main__":
    _worker()
