"""S3-FIFO, 2Q and SLRU: victims derived by hand from the papers' rules, and dead-tensor drops that leave the
queues consistent. The miss-for-miss check against libCacheSim is the registry-driven one in
test_libcachesim.py."""

import numpy as np
import pandas as pd
import pytest

import lab
from lab.sim.simulate import replay
from lab.units import BYTES_PER_MB
from tests.conftest import random_trace


def _unit(ids):
    return pd.DataFrame({"tensor_id": list(ids), "size_mb": 1.0})


def _victims(result):
    return result.victims()[["access", "tensor_id"]].values.tolist()


# --- by hand -------------------------------------------------------------------------------------


def test_s3fifo_by_hand():
    # 4 slots, small FIFO 2, main 2, ghost 3. A, B fill small; C and D go to main (small full before any
    # eviction). E: small's tail A was never hit -> evicted into the ghost. A again: the ghost remembers it ->
    # small's tail B is evicted and A enters main. F: main (C, D, A) is over its 2 -> its tail C (no hit) goes.
    result = lab.simulate(_unit("ABCDEAF"), lab.get_policy("S3-FIFO", small_ratio=0.5), capacity_mb=4)
    assert _victims(result) == [[4, "A"], [5, "B"], [6, "C"]]


def test_s3fifo_hits_move_from_small_to_main_and_main_reinserts():
    # 4 slots, small 2, main 2. A hit twice in small moves to main when small is evicted (threshold 2);
    # B (never hit) is evicted instead. In main a hit tensor goes back to the head once.
    ids = "ABCD" + "AA" + "E" + "F" + "G"
    result = lab.simulate(_unit(ids), lab.get_policy("S3-FIFO", small_ratio=0.5), capacity_mb=4)
    # at E: small is (B, A) -> A (2 hits) moves to main, B evicted. At F: main is C, D, A (3 > 2): C goes.
    # At G: main is D, A (2, within its share); small (E, F): its tail E goes.
    assert _victims(result) == [[6, "B"], [7, "C"], [8, "E"]]


def test_twoq_by_hand():
    # 4 slots: Ain 1, Aout 2, Am 3. Misses enter Ain; Ain over its share gives up its oldest to Aout. A and B,
    # remembered by Aout, come back into Am; the hit on A (in Am) changes nothing Ain decides.
    result = lab.simulate(_unit("ABCDEABFAGH"), "2Q", capacity_mb=4)
    assert _victims(result) == [[4, "A"], [5, "B"], [6, "C"], [7, "D"], [9, "E"], [10, "F"]]
    assert result.hit.tolist() == [False] * 8 + [True, False, False]


def test_twoq_evicts_from_am_once_ain_is_within_its_share():
    # 4 slots, Ain 2 (ain_ratio 0.5), Aout 2, Am 2. E and F push A and B from Ain into Aout; A and B come back
    # into Am (pushing C and D out of Ain). Then Ain (E, F) is within its share, so G takes Am's least
    # recently used: B, since A was hit after it came in.
    ids = "ABCDEF" + "AB" + "A" + "G"
    result = lab.simulate(_unit(ids), lab.get_policy("2Q", ain_ratio=0.5), capacity_mb=4)
    assert _victims(result) == [[4, "A"], [5, "B"], [6, "C"], [7, "D"], [9, "B"]]


def test_slru_by_hand():
    # 8 slots, 4 segments of 2. A, B fill segment 0, C, D segment 1, E, F 2, G, H 3. The hit on A promotes it
    # to segment 1, whose least recently used (C) is demoted to segment 0. I misses: segment 0's tail B goes.
    result = lab.simulate(_unit("ABCDEFGHAI"), "SLRU", capacity_mb=8)
    assert _victims(result) == [[9, "B"]]


@pytest.mark.parametrize("policy", ["S3-FIFO", "2Q", "SLRU"])
def test_dead_tensors_are_dropped_and_the_state_stays_consistent(policy):
    trace = random_trace(7, n_accesses=2000, n_tensors=150, max_size_bytes=200, zipf=1.2)
    first = ~trace["tensor_id"].duplicated().to_numpy()
    rng = np.random.default_rng(7)
    trace["access"] = np.where(first, "write", np.where(rng.random(len(trace)) < 0.2, "write", "read"))
    workload = lab.encode_trace(trace)
    for capacity in (500, 3000):
        result = lab.simulate(workload, policy, capacity_mb=capacity / BYTES_PER_MB)
        m = result.metrics
        assert m["dead_drops"] > 0
        assert result.resident_bytes.max() <= capacity
        # the policy's own queues hold exactly the resident tensors: replaying with the state exposed
        p = lab.get_policy(policy)
        state = p.init_state(workload, capacity)
        replay(workload, p, capacity, per_access=False, state=state)
        q = state.q
        resident_lists = 2 if policy != "SLRU" else p.n_segments
        assert int(q.nbytes[:resident_lists].sum()) == result.resident_bytes[-1]
        in_resident_lists = (q.owner >= 0) & (q.owner < resident_lists)
        assert int(q.count[:resident_lists].sum()) == int(in_resident_lists.sum())
        assert int(q.sizes[in_resident_lists].sum()) == result.resident_bytes[-1]
