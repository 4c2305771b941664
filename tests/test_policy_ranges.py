"""Every registered policy at each end of each parameter's range (read from its ``param(...)`` fields: the
registry drives it, so a new policy or parameter is covered as it is added): the run finishes quickly, keeps the
engine's invariants, and every compiled kernel stays in bounds (numba's bounds checking, in one subprocess).

A parameter without an upper bound is run at a huge value (2**62, 1e300): it must cost no time, or its range must
be bounded (``lab.sim.policy.param``'s ``high``).
"""

import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import pytest

import lab
from lab.sim.policy import POLICIES
from lab.units import BYTES_PER_MB

ALL_POLICIES = lab.policy_names()
UNBOUNDED_INT = 2**62
UNBOUNDED_FLOAT = 1e300
SECONDS = 10.0  # per run of a few thousand accesses, compiled (a default run takes milliseconds)


def range_ends(policy: str) -> list[dict]:
    """The parameters to run ``policy`` with: its defaults, then each parameter alone at each end of its range
    (True and False for a switch; a huge value where the range is unbounded above)."""
    cases = [{}]
    for f in fields(POLICIES[policy]):
        meta = f.metadata
        if isinstance(f.default, bool):
            ends = [True, False]
        elif meta.get("integer"):
            ends = [meta["low"] if meta["low"] is not None else 0,
                    meta["high"] if meta["high"] is not None else UNBOUNDED_INT]
        elif meta.get("low") is not None or meta.get("high") is not None:
            ends = [meta["low"] if meta["low"] is not None else -UNBOUNDED_FLOAT,
                    meta["high"] if meta["high"] is not None else UNBOUNDED_FLOAT]
        else:
            continue
        cases += [{f.name: end} for end in ends if end != f.default]
    return cases


def traces(n_accesses: int) -> list[tuple[str, pd.DataFrame, list[float]]]:
    """(name, trace, capacities in MB): MiB-scale tensors of varied sizes in bytes with reads and writes, unit sizes,
    and the seed's Transformer example; capacities from under the largest tensor to most of the working set."""
    rng = np.random.default_rng(0)
    n_tensors = max(20, n_accesses // 10)
    size_bytes = np.rint(np.exp(rng.uniform(np.log(2**16), np.log(2**26), n_tensors))).astype(np.int64)
    ids = (rng.zipf(1.2, n_accesses) - 1) % n_tensors
    first = ~pd.Series(ids).duplicated().to_numpy()
    mib = pd.DataFrame({"tensor_id": ids, "size_mb": size_bytes[ids] / BYTES_PER_MB,
                        "access": np.where(first | (rng.random(n_accesses) < 0.2), "write", "read"),
                        "eviction_score": rng.integers(0, 5, n_accesses) / 4})
    working_set = size_bytes[np.unique(ids)].sum() / BYTES_PER_MB
    unit = pd.DataFrame({"tensor_id": rng.integers(0, n_tensors, n_accesses), "size_mb": 1.0,
                         "eviction_score": rng.random(n_accesses)})
    seed = lab.generate_trace("Transformer")  # issue 23's case: 2Q(ain_ratio=0.9) at 50 MB overran a queue
    seed["eviction_score"] = rng.random(len(seed))
    return [("MiB-scale", mib, [30.0, working_set * 0.3, working_set * 0.8]),
            ("unit", unit, [1.0, 3.0, n_tensors * 0.5]),
            ("seed example", seed, [20.0, 50.0])]


def run_all(n_accesses: int, check_time: bool) -> list[str]:
    """Run every policy at each of its range ends on ``traces(n_accesses)``; returns what went wrong, one line each
    (an exception, a broken invariant, or with ``check_time`` a run over SECONDS)."""
    problems = []
    cases = traces(n_accesses)
    tiny = cases[0][1].head(50)
    for policy in ALL_POLICIES:
        for params in range_ends(policy):
            p = lab.get_policy(policy, **params)
            try:
                lab.simulate(tiny, p, capacity_mb=20.0)  # compiles (the state's types may depend on the parameters)
                for name, trace, capacities in cases:
                    for capacity_mb in capacities:
                        start = time.perf_counter()
                        result = lab.simulate(trace, p, capacity_mb=capacity_mb)
                        seconds = time.perf_counter() - start
                        m = result.metrics
                        if not (m["cache_hits"] + m["write_allocations"] + m["dram_accesses"] == m["accesses"]
                                and result.resident_bytes.max(initial=0) <= round(capacity_mb * BYTES_PER_MB)):
                            problems.append(f"{p} on {name} at {capacity_mb:g} MB: broken invariants")
                        if check_time and seconds > SECONDS:
                            problems.append(f"{p} on {name} at {capacity_mb:g} MB: {seconds:.1f} s")
            except Exception as error:  # noqa: BLE001 (every failure is reported, one line each)
                problems.append(f"{p}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    return problems


def test_range_ends_are_what_the_registry_says():
    assert {"ain_ratio": 1.0} in range_ends("2Q") and {"ain_ratio": 0.0} in range_ends("2Q")
    assert {"initial_frequency": 2**30} in range_ends("CLOCK")
    assert {"seed": UNBOUNDED_INT} in range_ends("Hyperbolic")
    assert {"bypass": True} in range_ends("Belady")
    assert range_ends("LRU") == [{}]


@pytest.mark.parametrize("bad", [{"n_samples": 2**20}, {"n_samples": 0}, {"n_samples": 2.0}])
def test_a_parameter_out_of_range_names_itself_and_its_range(bad):
    with pytest.raises(ValueError, match=r"Hyperbolic\.n_samples must be an integer >= 1 and <= 1024, got") as error:
        lab.get_policy("Hyperbolic", **bad)
    assert "\n" not in str(error.value)


def test_every_range_end_finishes_quickly_and_keeps_the_invariants():
    """A few thousand accesses per run (CLOCK(initial_frequency=2**30) once swept its ring 2**30 times per
    eviction; n_samples had no upper bound)."""
    problems = run_all(3000, check_time=True)
    assert not problems, "\n".join(problems)


def test_the_seed_example_at_2q_ain_ratio_09():
    """Issue 23's case: a tensor back from Aout larger than Am's share (10 % of the buffer) overran Am's queue of
    victims (a segfault; an IndexError with bounds checking)."""
    result = lab.simulate(lab.generate_trace("Transformer"), lab.get_policy("2Q", ain_ratio=0.9), capacity_mb=50)
    assert result.resident_bytes.max() <= 50 * BYTES_PER_MB


def test_every_range_end_stays_in_bounds(tmp_path):
    """All policies compiled with numba's bounds checking, run at each end of each range on short traces: no
    IndexError, no crash. The suite runs with the checks on (tests/conftest.py), so its kernels are checked ones
    and this runs here; with the checks off (NUMBA_BOUNDSCHECK=0 given) it runs in a subprocess that turns them on
    (its kernels cached apart from the normal ones, lab.compiled)."""
    if numba.config.BOUNDSCHECK:
        with pytest.raises(IndexError):
            numba.njit(lambda values, i: values[i])(np.zeros(3), 3)  # the checks are really on
        problems = run_all(400, check_time=False)
        assert not problems, "\n".join(problems)
        return
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys\nfrom tests.test_policy_ranges import run_all\nproblems = run_all(400, check_time=False)\n"
            "print('\\n'.join(problems))\nsys.exit(1 if problems else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def test_bounds_checked_kernels_are_cached_apart_from_normal_ones(tmp_path):
    """numba's disk cache does not key its files on NUMBA_BOUNDSCHECK: a kernel compiled and cached without the
    checks would serve a run that asked for them (and read past its array). lab.compiled keeps checked kernels in a
    folder of their own."""
    code = ("import sys\nimport numpy as np\nfrom lab.trace.kernels import previous_access_positions\n"
            "codes = np.array([0, 1, int(sys.argv[1])], np.int64)\n"
            "try:\n    previous_access_positions(codes, 2)\n    print('ran')\n"
            "except IndexError:\n    print('IndexError')\n")

    def run(boundscheck: str, last_code: int) -> str:
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_BOUNDSCHECK": boundscheck}
        done = subprocess.run([sys.executable, "-c", code, str(last_code)], env=env, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    assert run("0", 1) == "ran"  # compiled unchecked, and cached
    assert run("1", 2) == "IndexError"  # not the unchecked kernel from the cache
    assert run("0", 1) == "ran"
    normal, checked = sorted({p.parent for p in tmp_path.rglob("kernels.previous_access_positions-*.nbi")},
                             key=lambda p: len(p.parts))
    assert checked == normal / "boundscheck", (normal, checked)
