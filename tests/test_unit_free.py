"""Every registered policy is unit-free: a trace whose sizes and capacity are all multiplied by one factor (the same
trace given in bytes, KiB or MiB) gets the same decisions, access by access and victim by victim, whatever the
policy's parameters (randomized policies with the same seed). Registry-driven: a new policy is covered as it is
registered.

Real captures are MiB-scale while the libCacheSim cross-check's random traces are of a few bytes per tensor: a
constant in the trace's unit (a share of the buffer rounded down to whole bytes, a step of one byte, a minimum of
one byte) makes a policy behave differently at the scale of real traces than where it was checked.
"""

from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lab
from lab.sim import structures
from lab.sim.policy import POLICIES
from lab.units import BYTES_PER_MB

ALL_POLICIES = lab.policy_names()
FACTORS = (2**10, 2**20)  # bytes -> KiB -> MiB: each size and the capacity times the factor


def _decisions(trace, policy, capacity_bytes, factor):
    """What ``policy`` decides on ``trace`` (sizes in bytes in ``size_bytes``) with everything scaled by
    ``factor``: per access its outcome bits (hit, inserted, dropped, ...), per eviction its access and victim."""
    scaled = trace.drop(columns="size_bytes").assign(size_mb=trace["size_bytes"] * factor / BYTES_PER_MB)
    result = lab.simulate(scaled, policy, capacity_mb=capacity_bytes * factor / BYTES_PER_MB)
    return result.outcome, result.victim_access, result.victim_code


def _assert_unit_free(trace, policy, capacity_bytes):
    base = _decisions(trace, policy, capacity_bytes, 1)
    for factor in FACTORS:
        outcome, victim_access, victim_code = _decisions(trace, policy, capacity_bytes, factor)
        differ = np.flatnonzero(outcome != base[0])
        assert differ.size == 0, (f"{policy} at {capacity_bytes} bytes: access {differ[0]} decided differently "
                                  f"with sizes times {factor}")
        np.testing.assert_array_equal(victim_access, base[1], err_msg=f"{policy}, sizes times {factor}")
        np.testing.assert_array_equal(victim_code, base[2], err_msg=f"{policy}, sizes times {factor}")


def _parameters(cls):
    """A strategy for ``cls``'s parameters: each one its default or any value in its range (unbounded ones up to a
    modest value: they cost no time)."""
    draws = {}
    for f in fields(cls):
        meta = f.metadata
        if isinstance(f.default, bool):
            strategy = st.booleans()
        elif meta.get("integer"):
            low = meta["low"] if meta.get("low") is not None else 0
            high = meta["high"] if meta.get("high") is not None else low + 1000
            strategy = st.integers(low, high)
        elif meta.get("low") is not None or meta.get("high") is not None:
            low = meta["low"] if meta.get("low") is not None else 0.0
            high = meta["high"] if meta.get("high") is not None else low + 10.0
            strategy = st.floats(low, high)
        else:
            continue
        draws[f.name] = st.one_of(st.just(f.default), strategy)
    return st.fixed_dictionaries(draws)


@st.composite
def _cases(draw):
    """(trace with sizes in bytes, capacity in bytes): a random trace of unit or varied sizes, uniform or skewed
    reuse, maybe with reads and writes, with scores for ML."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    n_tensors = draw(st.integers(1, 60), label="tensors")
    n_accesses = draw(st.integers(1, 800), label="accesses")
    unit = draw(st.booleans(), label="unit sizes")
    sizes = np.ones(n_tensors, np.int64) if unit else rng.integers(1, draw(st.integers(1, 500)) + 1, n_tensors)
    skewed = draw(st.booleans(), label="skewed")
    ids = (rng.zipf(1.2, n_accesses) - 1) % n_tensors if skewed else rng.integers(0, n_tensors, n_accesses)
    trace = pd.DataFrame({"tensor_id": ids, "size_bytes": sizes[ids],
                          "eviction_score": rng.integers(0, 5, n_accesses) / 4})
    if draw(st.booleans(), label="reads and writes"):
        trace["access"] = np.where(rng.random(n_accesses) < 0.3, "write", "read")
    capacity = max(1, int(sizes.sum() * draw(st.floats(0.0, 1.1), label="capacity / working set")))
    return trace, capacity


@pytest.mark.parametrize("policy", ALL_POLICIES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_cases(), data=st.data())
def test_the_same_decisions_in_bytes_kib_and_mib(policy, case, data):
    trace, capacity = case
    params = data.draw(_parameters(POLICIES[policy]), label="params")
    _assert_unit_free(trace, lab.get_policy(policy, **params), capacity)


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("seed", range(3))
def test_the_same_decisions_on_random_traces_of_many_accesses(policy, seed):
    """Longer traces than hypothesis draws (evictions by the thousand), unit and varied sizes, several capacities."""
    rng = np.random.default_rng(seed)
    n_tensors = 150
    unit = seed == 0
    sizes = np.ones(n_tensors, np.int64) if unit else rng.integers(1, 600, n_tensors)
    ids = (rng.zipf(1.2, 4000) - 1) % n_tensors if seed != 1 else rng.integers(0, n_tensors, 4000)
    trace = pd.DataFrame({"tensor_id": ids, "size_bytes": sizes[ids], "eviction_score": rng.integers(0, 5, 4000) / 4})
    if seed == 2:
        trace["access"] = np.where(rng.random(4000) < 0.3, "write", "read")
    for fraction in (0.03, 0.2, 0.6):
        _assert_unit_free(trace, policy, max(1, int(sizes.sum() * fraction)))


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_the_seed_example_in_mib_and_in_bytes(policy, scored):
    """The seed's Transformer trace (sizes in MiB) and the same numbers read as bytes, at 50 MB and at 50 bytes:
    the same decisions (LIRS and S3-FIFO once missed nearly everything at MiB scale only)."""
    trace = scored.assign(size_bytes=np.rint(scored["size_mb"] * BYTES_PER_MB).astype(np.int64) // BYTES_PER_MB)
    assert (trace["size_bytes"] * BYTES_PER_MB == np.rint(scored["size_mb"] * BYTES_PER_MB)).all()
    _assert_unit_free(trace.drop(columns="size_mb"), policy, 50)


def test_lirs_hits_on_the_seed_example():
    """Report 01's seed example: LIRS missed every access at 50 MB (its Q share, 0.5 MB, declined every tensor)."""
    trace = lab.generate_trace("Transformer")
    assert lab.simulate(trace, "LIRS", capacity_mb=50).metrics["cache_hit_rate"] > 20


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 2**34), block=st.integers(1, 2**20), ratio=st.floats(0, 64),
       factor=st.integers(1, 2**20))
def test_a_share_counts_the_same_blocks_in_any_unit(capacity, block, ratio, factor):
    """Sub-queue shares (lab.sim.structures.share_bytes): whole blocks, the same number for the capacity and the
    block scaled by any integer; with 1-byte blocks, libCacheSim's int(capacity * ratio)."""
    share = structures.share_bytes(capacity, ratio, block)
    assert share % block == 0 and 0 <= share <= max(ratio * capacity, 0) + 1e-6 * capacity
    assert structures.share_bytes(capacity * factor, ratio, block * factor) == share * factor
    assert structures.share_bytes(capacity, ratio, 1) == int(capacity * ratio)


def test_the_block_is_the_sizes_gcd():
    workload = lab.encode_trace(pd.DataFrame({"tensor_id": ["a", "b", "c"], "size_mb": [1.5, 3.0, 0.75]}))
    assert structures.size_granularity(workload) == 3 * 2**18
    assert structures.size_granularity(lab.encode_trace(pd.DataFrame({"tensor_id": ["a"], "size_mb": [1.0]}))) == 2**20
