"""A cold start: loops compiled side by side in worker processes are the loops compiled here, cached for the
next process, and a long compile says what it compiles. Each case runs fresh processes over empty caches."""

import json
import os
import subprocess
import sys

import pytest

import lab
from lab.analysis.sweep import policy_list

CHILD = """
import json, sys
import lab
from lab import compiled
from lab.sim import engine, precompile
from lab.sim.simulate import capacity_bytes_of

compiled.NOTICE_AFTER_S = 0.0  # say everything it compiles
names = ["LRU", "FIFO", "MRU"]
trace = lab.generate_trace("Transformer", num_layers=2)
workload = lab.encode_trace(trace)
policies = [lab.get_policy(name) for name in names]
missing = [cls.__name__ for cls, _, _ in precompile.missing_loops(workload, policies, capacity_bytes_of(8.0))]
delivered = precompile.precompile(workload, policies, capacity_bytes_of(8.0))
table = lab.compare_policies(trace, names, 8.0, optimum=False)
loops = [engine.driver_for(type(p)) for p in policies]
print(json.dumps({"missing": missing, "delivered": delivered, "traffic": table["dram_traffic_mb"].tolist(),
                  "signatures": [len(d.signatures) for d in loops]}))
"""


def _child(cache, workers: int, quiet: bool = False):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "LAB_COMPILE_WORKERS": str(workers)}
    env.pop("LAB_QUIET", None) if not quiet else env.update(LAB_QUIET="1")
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.slow
def test_loops_compiled_by_a_worker_are_those_compiled_here_and_cached_for_the_next_process(tmp_path):
    parallel, notices = _child(tmp_path / "parallel", workers=1)
    assert parallel["missing"] == ["LRU", "FIFO", "MRU"]
    assert parallel["delivered"] == 1  # FIFO from the worker; LRU and MRU compiled here meanwhile
    assert "lab: compiling 3 policies' loops in 2 processes" in notices
    assert "compiling the LRU policy's loop" in notices and "compiling the MRU policy's loop" in notices
    assert "FIFO policy's loop" not in notices  # the worker compiles quietly
    # the loops from the worker and from here give the numbers of this process's own loops, one signature each
    here = lab.compare_policies(lab.generate_trace("Transformer", num_layers=2), ["LRU", "FIFO", "MRU"], 8.0,
                                optimum=False)
    assert parallel["traffic"] == here["dram_traffic_mb"].tolist()
    assert parallel["signatures"] == [1, 1, 1]
    again, notices = _child(tmp_path / "parallel", workers=1)  # the adopted files load in a new process
    assert again["missing"] == [] and again["delivered"] == 0 and again["traffic"] == parallel["traffic"]
    assert "policy's loop" not in notices


def test_policy_sets_by_name():
    assert [p.name for p in policy_list("featured")] == lab.policy_names(featured=True) == \
        ["LRU", "FIFO", "SIEVE", "Belady", "ML"]
    assert [p.name for p in policy_list("ALL")] == [p.name for p in policy_list(None)] == lab.policy_names()
    with pytest.raises(ValueError, match="unknown policy"):
        policy_list("every")


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_a_bad_worker_count_is_refused_naming_the_variable(value, monkeypatch):
    from lab.sim import precompile

    monkeypatch.setenv("LAB_COMPILE_WORKERS", value)
    with pytest.raises(ValueError, match=r"\$LAB_COMPILE_WORKERS must be a whole number"):
        precompile.max_workers()
    monkeypatch.setenv("LAB_COMPILE_WORKERS", "0")
    assert precompile.max_workers() == 0


def test_a_policy_without_init_state_is_refused_at_registration():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Stateless(lab.Policy):
        name = "Stateless"

        @staticmethod
        def evict(s, c, i):
            return c

        @staticmethod
        def remove(s, c):
            pass

    with pytest.raises(TypeError, match="must define init_state"):
        lab.register(Stateless)
    assert "Stateless" not in lab.policy_names()
