"""ARC and LIRS (lab/sim/policies/multiqueue_adaptive.py): victims derived by hand from the papers' rules (as
libCacheSim applies them), state consistency after dead tensors are dropped, and LIRS against libCacheSim
access by access where tests/test_libcachesim.py lists a QUIRKS entry."""

import numpy as np
import pandas as pd
import pytest

import lab
from lab.sim import engine
from lab.sim.policies import multiqueue_adaptive as mq
from lab.sim.simulate import replay
from lab.units import BYTES_PER_MB
from tests.conftest import random_trace
from tests.libcachesim_replay import HASHPOWER

lcs = pytest.importorskip("libcachesim")


def _trace(ids, sizes=None, access=None):
    sizes = [1] * len(ids) if sizes is None else sizes
    trace = pd.DataFrame({"tensor_id": list(ids), "size_mb": np.asarray(sizes, float) / BYTES_PER_MB})
    if access is not None:
        trace["access"] = access
    return trace


def _victims(result):
    return list(result.victims()[["access", "tensor_id"]].itertuples(index=False, name=None))


def _run(ids, capacity_bytes, policy, sizes=None, access=None):
    return lab.simulate(_trace(ids, sizes, access), policy, capacity_mb=capacity_bytes / BYTES_PER_MB)


def _final_state(trace, policy, capacity_bytes):
    """The policy's state after replaying ``trace`` (as lab.simulate does), and which tensors the engine holds."""
    workload = lab.encode_trace(trace)
    policy = lab.get_policy(policy)
    state = policy.init_state(workload, capacity_bytes)
    _, outcome, victim_access, victim_code, _ = replay(workload, policy, capacity_bytes, state=state)
    held = np.zeros(workload.n_tensors, bool)
    order = np.argsort(victim_access, kind="stable")
    j = 0
    for i, c in enumerate(workload.codes):
        while j < len(order) and victim_access[order[j]] == i:
            held[victim_code[order[j]]] = False
            j += 1
        if outcome[i] & engine.INSERTED:
            held[c] = True
        if outcome[i] & engine.DROPPED:
            held[c] = False
    return state, workload, held


# --- ARC -------------------------------------------------------------------------------------------------


def test_arc_ghost_hits_move_p_and_bring_the_block_back_into_t2():
    # buffer of 2 blocks. A, B -> T1 = [B, A]; A hits -> T2 = [A]; C: REPLACE (T1 = 1 > p = 0) evicts B to B1.
    # B hits B1: p = 0 + max(|B2| / |B1|, 1) = 1, REPLACE (T1 = 1 is not over p) evicts T2's A to B2, B enters T2.
    # A hits B2: p = 1 - max(|B1| / |B2|, 1) = 0, REPLACE evicts T1's C.
    result = _run("ABACBA", 2, "ARC")
    assert result.hit.tolist() == [False, False, True, False, False, False]
    assert _victims(result) == [(3, "B"), (4, "A"), (5, "C")]


def test_arc_evicts_t1_outright_when_t1_fills_the_buffer_and_b1_is_empty():
    # T1 + B1 + the new block > the buffer with B1 empty: T1's LRU end leaves without a ghost, so when A comes
    # back it is a plain miss into T1 (a ghost hit would have taken T2 and made the next victim C, not B).
    result = _run("ABCAD", 2, "ARC")
    assert _victims(result) == [(2, "A"), (3, "B"), (4, "C")]


def test_arc_forgets_dead_tensors():
    # A is written, read (a hit into T2) and dies: its bytes leave T2. B, C and D then only ever fill T1.
    result = _run("ABACDBCD", 2, "ARC", access=["write"] + ["read"] * 7)
    assert _victims(result) == [(4, "B"), (5, "C")]
    for seed in range(3):
        trace = random_trace(seed, n_accesses=600, n_tensors=60, max_size_bytes=40, zipf=1.2)
        rng = np.random.default_rng(seed)
        trace["access"] = np.where(rng.random(len(trace)) < 0.3, "write", "read")
        state, workload, held = _final_state(trace, "ARC", 300)
        which = np.where(state.key >= 0, state.key & 3, -1)
        for lst in range(4):
            assert state.nbytes[lst] == workload.tensor_bytes[which == lst].sum()
        np.testing.assert_array_equal(held, (which == mq.T1) | (which == mq.T2))


# --- LIRS ------------------------------------------------------------------------------------------------


def test_lirs_by_hand():
    # buffer of 3 blocks: Q's share is max(1, int(0.03)) = 1 block, the LIR set 2.
    # A, B: LIR. C: HIR (top of S, end of Q). D: Q is full -> C leaves (non-resident in S), D is HIR.
    # C again: a non-resident HIR block in S becomes LIR; the LIR block at the bottom of S (A) goes to Q,
    # which evicts D. B: an LIR hit; B was at the bottom of S, so pruning drops D's non-resident entry.
    # D again: no longer in S, a new block: HIR, evicting Q's A.
    result = _run("ABCDCBD", 3, "LIRS")
    assert result.hit.tolist() == [False] * 5 + [True, False]
    assert _victims(result) == [(3, "C"), (4, "D"), (6, "A")]


def test_lirs_takes_blocks_larger_than_its_hir_share():
    # a buffer of 1000 bytes gives Q 10 bytes: an 11-byte block is inserted all the same (libCacheSim declines it)
    result = _run(["big", "big", "small", "small"], 1000, "LIRS", sizes=[11, 11, 10, 10])
    assert result.hit.tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="0.01"):
        lab.get_policy("LIRS", hir_ratio=0.02).libcachesim_params()


def test_lirs_sets_hold_one_block_larger_than_their_share():
    # 100 bytes: Q's share is 1 byte, the LIR set's 99. A (60) is LIR; B (40) does not fit the LIR set and is
    # HIR: Q holds it alone, over its share, and nothing is evicted.
    result = _run("ABA", 100, "LIRS", sizes=[60, 40, 60])
    assert result.resident_bytes.tolist() == [60, 100, 100] and _victims(result) == []
    # A (50) and B (49) are LIR. C (30) fits neither set: with Q empty the LIR block at the bottom of S (A) is
    # demoted into Q, alone, and evicted from it; C then fits the LIR set. D (30): the same with B.
    result = _run("ABCD", 100, "LIRS", sizes=[50, 49, 30, 30])
    assert _victims(result) == [(2, "A"), (3, "B")]
    assert result.resident_bytes.tolist() == [50, 99, 79, 60]


def test_lirs_hits_on_mib_sized_tensors():
    # ten tensors of 8 MiB cycled through a 100 MiB buffer: all fit, every access after the first round hits
    # (libCacheSim's Q share, 1 MiB, declines every one of them: it misses every access)
    ids = [f"t{k}" for k in range(10)] * 5
    result = lab.simulate(pd.DataFrame({"tensor_id": ids, "size_mb": 8.0}), "LIRS", capacity_mb=100)
    assert result.hit.tolist() == [False] * 10 + [True] * 40


def test_lirs_forgets_dead_tensors():
    # A (LIR) dies after its second access: the LIR set has room again, so C is LIR and D is the HIR block
    # E evicts. Had A still counted, C would have been HIR and D would have evicted it.
    result = _run("ABACDEBCDE", 3, "LIRS", access=["write"] + ["read"] * 9)
    assert _victims(result) == [(5, "D")]
    assert _victims(_run("ABACDEBCDE", 3, "LIRS"))[0] == (4, "C")


@pytest.mark.parametrize("seed", range(5))
def test_lirs_state_stays_consistent_with_dead_tensors(seed):
    """Seeds 3 and 4: blocks larger than Q's share (3 bytes) and than the LIR set's (the buffer's 300 bytes
    less Q's 150 bytes)."""
    trace = random_trace(seed, n_accesses=1500, n_tensors=120, max_size_bytes=30 if seed < 4 else 200, zipf=1.2,
                         unit=seed == 2)
    rng = np.random.default_rng(seed)
    trace["access"] = np.where(rng.random(len(trace)) < 0.3, "write", "read")
    capacity = [3000, 3000, 250, 300, 300][seed]
    policy = lab.get_policy("LIRS", hir_ratio=0.5) if seed == 4 else "LIRS"
    state, workload, held = _final_state(trace, policy, capacity)
    k = workload.n_tensors
    node = state.mem[: k * mq.NODE_COLUMNS].reshape(k, mq.NODE_COLUMNS)
    reg = state.mem[state.reg0: state.reg0 + mq.N_REG]
    size = node[:, mq.SIZE]
    flags = node[:, mq.FLAGS]
    in_s = node[:, mq.S_AT] >= 0
    in_q = node[:, mq.Q_AT] >= 0
    assert reg[mq.S_COUNT] == in_s.sum() and reg[mq.S_BYTES] == size[in_s].sum()
    assert reg[mq.LIR_BYTES] == size[in_s & (flags & mq.LIR > 0)].sum()
    assert reg[mq.HIR_BYTES] == size[in_q].sum()
    assert reg[mq.OCCUPIED] == size[flags & mq.COUNTED > 0].sum()
    np.testing.assert_array_equal(held, flags & mq.HELD > 0)
    # the engine and LIRS hold the same tensors but for the victims still pending
    pending = node[:, mq.PENDING_AT] >= 0
    np.testing.assert_array_equal(pending, held & (flags & mq.COUNTED == 0))
    if in_s.any():  # the bottom of S is an LIR block, and S's cursor is on it
        bottom = state.mem[state.codes0 + reg[mq.S_BOTTOM]]
        assert node[bottom, mq.S_AT] == reg[mq.S_BOTTOM] == node[in_s, mq.S_AT].min()
        assert in_s.sum() == 1 or flags[bottom] & mq.LIR


def _libcachesim(trace, tmp_path, capacity_bytes, unit):
    """libCacheSim's LIRS on ``trace``: hit flags and the change in its object count, per access."""
    path = lab.write_trace(trace, tmp_path / "t.oracleGeneral.bin")
    reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE,
                             lcs.ReaderInitParam(ignore_obj_size=unit))
    cache = lcs.LIRS(capacity_bytes, hashpower=HASHPOWER)
    hits, delta = [], []
    for req in reader:
        before = cache.get_n_obj()
        hits.append(cache.get(req))
        delta.append(cache.get_n_obj() - before)
    return np.array(hits), np.array(delta)


def _ours(trace, capacity_bytes):
    result = lab.simulate(trace, "LIRS", capacity_mb=capacity_bytes / BYTES_PER_MB)
    return result.hit, result.inserted.astype(int) - result.evictions_per_access


@pytest.mark.parametrize("seed", range(3))
def test_lirs_matches_libcachesim_miss_for_miss_when_q_holds_two_blocks_or_more(seed, tmp_path):
    trace = random_trace(200 + seed, n_accesses=6000, n_tensors=900, unit=True, zipf=1.2 if seed == 1 else None)
    for capacity in (200, 450):  # Q's share: 2 and 4 blocks
        theirs_hit, theirs_delta = _libcachesim(trace, tmp_path, capacity, unit=True)
        hit, delta = _ours(trace, capacity)
        np.testing.assert_array_equal(hit, theirs_hit)
        np.testing.assert_array_equal(delta, theirs_delta)


@pytest.mark.parametrize("seed", range(4))
def test_lirs_differs_from_libcachesim_only_where_it_counts_an_evicted_block_a_hit(seed, tmp_path):
    """Small buffers (Q's share is one block): the QUIRKS entry of tests/test_libcachesim.py. Every difference is
    an access libCacheSim counts a hit on a block it evicted, and the object counts agree at every access."""
    trace = random_trace(100 + seed, n_accesses=3000, n_tensors=50 + 40 * seed, unit=True,
                         zipf=1.1 if seed % 2 else None)
    n_tensors = trace["tensor_id"].nunique()
    for fraction in (0.1, 0.3, 0.7):
        capacity = max(3, int(n_tensors * fraction))
        theirs_hit, theirs_delta = _libcachesim(trace, tmp_path, capacity, unit=True)
        hit, delta = _ours(trace, capacity)
        assert not (hit & ~theirs_hit).any()
        assert (theirs_hit & ~hit).sum() <= 0.01 * len(trace)
        np.testing.assert_array_equal(delta, theirs_delta)


@pytest.mark.parametrize("seed", range(2))
def test_lirs_with_variable_sizes_matches_libcachesim_but_for_a_few_accesses(seed, tmp_path):
    """Blocks of at most 1% of the buffer, so that LIRS evicts: libCacheSim may evict several blocks in one step
    where the engine takes one victim at a time, and the rest leave at the next accesses."""
    trace = random_trace(300 + seed, n_accesses=8000, n_tensors=1000, max_size_bytes=100,
                         zipf=1.2 if seed else None)
    for capacity in (10_000, 30_000):
        theirs_hit = _libcachesim(trace, tmp_path, capacity, unit=False)[0]
        hit = _ours(trace, capacity)[0]
        assert 0 < (~theirs_hit).sum() < len(trace)
        assert (hit != theirs_hit).sum() <= 0.001 * len(trace)


def test_lirs_on_the_standard_cases_hits_blocks_libcachesim_declines(tmp_path):
    """The traces of tests/test_libcachesim.py with variable sizes: libCacheSim never inserts a block larger than
    its Q share, 1 % of the buffer, so it never hits one (LIRS's difference (4)); lab does."""
    for seed in range(4):
        trace = random_trace(100 + seed, n_accesses=3000, n_tensors=50 + 40 * seed, max_size_bytes=500,
                             zipf=1.1 if seed % 2 else None)
        working_set = int(np.rint(trace.drop_duplicates("tensor_id")["size_mb"].sum() * BYTES_PER_MB))
        sizes = lab.encode_trace(trace).access_bytes
        for fraction in (0.1, 0.3, 0.7):
            capacity = max(1, int(working_set * fraction))
            large = sizes > max(1, int(0.01 * capacity))
            theirs_hit = _libcachesim(trace, tmp_path, capacity, unit=False)[0]
            hit = _ours(trace, capacity)[0]
            assert large.any() and not theirs_hit[large].any()
            assert hit[large].mean() > 0.05
