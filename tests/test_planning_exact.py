"""The planner's own optimum (issue 26, slice 6): the exhaustive search over every decision vector of lab.plan's
model, the integer program's lower bound, and the planner's gap to them on small seeded traces."""

import math

import numpy as np
import pytest

from lab.planning import PlannerOptions, check_plan, exhaustive_plan, plan, plan_optimum, planner_gap
from lab.planning.exact import gap_case, planner_decisions, planner_gaps
from lab.sim.cost import MIN_BANDWIDTH_GB_S
from lab.units import percent_above
from tests.test_planning import FAST_L2, _layers, _trace

QUARTER = 0.25 * FAST_L2.dram_bandwidth_gb_s * FAST_L2.dram_efficiency  # GB/s: a copy engine at a quarter of DRAM

# (gap_case seed, options): traces of at most 8 intervals whose decision vectors enumerate in well under a second
SMALL_CASES = [
    (27, PlannerOptions()),  # the planner is 8 % above the optimum here
    (1, PlannerOptions(max_outstanding_prefetches=1)),
    (12, PlannerOptions(execution="eager", memory_combine="sum")),
    (23, PlannerOptions(streaming=False, copy_bandwidth_gb_s=QUARTER, max_outstanding_evictions=1)),
]


def _case(seed, options):
    trace, capacity_mb = gap_case(seed)
    if not options.streaming:  # room for every op's working set
        capacity_mb = max(capacity_mb, 2 * trace["size_mb"].max() + 8)
    return trace, capacity_mb


@pytest.mark.parametrize("seed, options", SMALL_CASES, ids=[f"seed{s}" for s, _ in SMALL_CASES])
def test_the_milp_bound_sits_below_the_exhaustive_optimum_which_sits_below_the_plan(seed, options):
    trace, capacity_mb = _case(seed, options)
    best = exhaustive_plan(trace, capacity_mb, FAST_L2, options, max_intervals=8)
    check_plan(best.plan)
    assert best.intervals <= 8 and best.enumerated > 1 and best.plan.seed == "exhaustive"
    fixed, planned_ms = planner_decisions(trace, capacity_mb, FAST_L2, options)  # lab.plan's decisions
    bound = plan_optimum(trace, capacity_mb, FAST_L2, options)
    assert bound.solved and bound.lower_ms <= best.step_time_ms <= planned_ms * (1 + 1e-12)
    if seed == 27:  # the exhaustive search finds what the greedy misses
        assert planned_ms == plan(trace, capacity_mb, FAST_L2, options).step_time_ms
        assert best.step_time_ms < 0.95 * planned_ms
    # with the planner's own decisions fixed, the program bounds that plan's simulated time
    pinned = plan_optimum(trace, capacity_mb, FAST_L2, options, fixed=fixed)
    assert pinned.fixed and pinned.binaries == bound.binaries
    assert bound.lower_ms <= pinned.lower_ms * (1 + 1e-9) and pinned.lower_ms <= planned_ms
    if seed == 27:  # and tells the planner's decisions from the optimum's
        assert pinned.lower_ms > 1.05 * bound.lower_ms


def _one_weight(copy_gb_s=None, execution="graph"):
    """Two compute-bound ops writing outputs no one reads, then a memory-bound one reading a 24 MiB weight: the
    only interval is the weight's first read, so at most one copy exists (no FIFO order, no shared bandwidth, no
    eviction to relax)."""
    ops = [("aten.bmm", 2e10, [("h", 1.0, "write")]),
           ("aten.bmm", 5e9, [("g", 1.0, "write")]),
           ("aten.addmm", 1e8, [("w", 24.0, "read"), ("z", 1.0, "write")])]
    return _trace(ops), PlannerOptions(copy_bandwidth_gb_s=copy_gb_s, execution=execution)


@pytest.mark.parametrize("capacity_mb", [8.0, 30.0])
@pytest.mark.parametrize("copy_gb_s, execution", [(None, "graph"), (QUARTER, "graph"), (QUARTER, "eager")])
def test_the_milp_equals_the_exhaustive_optimum_with_one_copy_at_most(capacity_mb, copy_gb_s, execution):
    trace, options = _one_weight(copy_gb_s, execution)
    best = exhaustive_plan(trace, capacity_mb, FAST_L2, options)
    bound = plan_optimum(trace, capacity_mb, FAST_L2, options)
    assert bound.lower_ms == pytest.approx(best.step_time_ms, rel=1e-6)
    assert len(best.plan.events) == (1 if capacity_mb > 24 else 0)  # prefetched when it fits, else streamed


def test_an_optimum_that_evicts_then_prefetches_is_found_by_both():
    # y (24 MiB) is produced by a memory-bound op and read at the end; w (26 MiB) is read by a memory-bound op in
    # between; 30 MB hold one of them: the optimum evicts y behind the first compute op, then prefetches w behind
    # the second (one copy at a time, so the program is exact); keeping y or writing it through is slower
    ops = [("aten.add", 0.0, [("a", 1.0, "read"), ("y", 24.0, "write")]),
           ("aten.bmm", 3e10, [("c", 1.0, "read"), ("d", 1.0, "write")]),
           ("aten.bmm", 3e10, [("d", 1.0, "read"), ("f", 1.0, "write")]),
           ("aten.add", 0.0, [("w", 26.0, "read"), ("e", 1.0, "write")]),
           ("aten.add", 0.0, [("y", 24.0, "read"), ("e", 1.0, "read"), ("z", 1.0, "write")])]
    trace = _trace(ops)
    options = PlannerOptions(max_outstanding_prefetches=1, max_outstanding_evictions=1)
    best = exhaustive_plan(trace, 30.0, FAST_L2, options)
    events = best.plan.events
    assert events[["kind", "tensor_id", "issue_op", "need_op"]].values.tolist() == [
        ["prefetch", "w", 1, 3], ["eviction", "y", 0, 2]]
    assert best.plan.ops.loc[0, "dram_write_mb"] == 0.0  # y is not written through
    bound = plan_optimum(trace, 30.0, FAST_L2, options)
    assert bound.lower_ms == pytest.approx(best.step_time_ms, rel=1e-6)
    fixed, planned_ms = planner_decisions(trace, 30.0, FAST_L2, options)
    assert best.step_time_ms <= planned_ms
    assert plan_optimum(trace, 30.0, FAST_L2, options, fixed=fixed).lower_ms <= planned_ms


@pytest.mark.parametrize("seed", [11, 47])
def test_the_milp_equals_the_exhaustive_optimum_when_no_copy_can_help(seed):
    # copies at 1 byte per second never pay: both search the kept and bypassed intervals, dirty data written
    # through or flushed, under the buffer op by op, where the program is exact
    trace, capacity_mb = gap_case(seed)
    options = PlannerOptions(copy_bandwidth_gb_s=MIN_BANDWIDTH_GB_S)
    for capacity in (capacity_mb, capacity_mb / 3):
        best = exhaustive_plan(trace, capacity, FAST_L2, options)
        assert best.plan.events.empty
        assert plan_optimum(trace, capacity, FAST_L2, options).lower_ms == pytest.approx(best.step_time_ms, rel=1e-6)


# The gap of lab.plan to its own model's optimum on 20 seeded traces (gap_case 0-19) under the fast-L2 H200
# (ops compute- or DRAM-bound, so prefetching matters), against the integer program's bound (an upper bound on the
# true gap). Measured 2026-12-06: median 0.00 %, mean 2.63 %, max 18.58 % (seed 9), 7 traces above 0.01 %.
GAP_MEDIAN_PCT, GAP_MEAN_PCT, GAP_MAX_PCT, GAP_ABOVE = 0.5, 3.0, 20.0, 7


@pytest.fixture(scope="module")
def gaps():
    return planner_gaps(range(20), FAST_L2, method="milp")


def test_the_planners_gap_to_its_own_optimum_stays_within_its_measured_bounds(gaps):
    assert len(gaps) == 20 and (gaps["method"] == "milp").all()
    assert (gaps["gap_pct"] >= 0).all()  # a lower bound is never above the plan
    assert gaps["gap_pct"].median() <= GAP_MEDIAN_PCT
    assert gaps["gap_pct"].mean() <= GAP_MEAN_PCT
    assert gaps["gap_pct"].max() <= GAP_MAX_PCT
    assert (gaps["gap_pct"] > 0.01).sum() <= GAP_ABOVE


def test_planner_gap_is_exact_when_the_trace_enumerates():
    trace, options = _one_weight(QUARTER)
    exact = planner_gap(trace, 30.0, FAST_L2, options)
    assert exact.method == "exhaustive" and exact.intervals == 1
    assert exact.gap_pct == pytest.approx(percent_above(exact.planner_ms, exact.optimum_ms))
    assert exact.planner_ms == plan(trace, 30.0, FAST_L2, options).step_time_ms
    bound = planner_gap(trace, 30.0, FAST_L2, options, method="milp")
    assert bound.planner_ms == exact.planner_ms and bound.gap_pct == pytest.approx(exact.gap_pct, abs=1e-5)


def test_a_time_limit_gives_a_bracket_not_an_error():
    trace = _layers(12)
    planned = plan(trace, 64, FAST_L2).step_time_ms
    cut = plan_optimum(trace, 64, FAST_L2, time_limit_s=1e-3)
    assert not cut.solved and "time limit" in cut.status.lower()
    assert 0 < cut.lower_ms <= planned
    assert math.isnan(cut.upper_ms) or cut.lower_ms <= cut.upper_ms


def test_bad_arguments_are_one_line_errors():
    trace, capacity_mb = gap_case(0)  # 11 intervals
    long_chain = _trace([("aten.bmm", 2e10, [(f"x{i}", 1.0, "read"), (f"x{i + 1}", 1.0, "write")]) for i in range(800)]
                        + [("aten.addmm", 1e8, [("x800", 1.0, "read"), ("w", 24.0, "read")])])
    checks = [
        (lambda: exhaustive_plan(trace, capacity_mb, FAST_L2), r"11 intervals .*above max_intervals=9"),
        (lambda: exhaustive_plan(trace, capacity_mb, FAST_L2, max_intervals=20), r"decision vectors, above max_vectors="),
        (lambda: exhaustive_plan(trace, capacity_mb, FAST_L2, max_intervals=0), r"^max_intervals must be an integer"),
        (lambda: plan_optimum(trace, capacity_mb, FAST_L2, time_limit_s=0), r"^time_limit_s must be a number of seconds in \(0, 86400\], got 0"),
        (lambda: plan_optimum(trace, capacity_mb, FAST_L2, time_limit_s=-1.0), r"^time_limit_s must be"),
        (lambda: plan_optimum(trace, capacity_mb, FAST_L2, time_limit_s=float("nan")), r"^time_limit_s must be"),
        (lambda: planner_gap(trace, capacity_mb, FAST_L2, method="greedy"), r"^method must be one of \['auto', 'exhaustive', 'milp'\], got 'greedy'"),
        (lambda: plan_optimum(trace, -1.0, FAST_L2), r"^capacity_mb must be"),
        (lambda: plan_optimum(trace, capacity_mb, "seed"), r"^no plan: "),
        (lambda: gap_case(-1), r"^seed must be an integer >= 0"),
        # 800 compute-bound ops, then one reading a weight that may be prefetched after any of them: a program
        # HiGHS would not stop within its time limit, refused before it is built
        (lambda: plan_optimum(long_chain, 64.0, FAST_L2, time_limit_s=1.0),
         r"^plan_optimum: the integer program of this trace would hold about 1,2\d\d,\d{3} nonzeros \(801 ops, "
         r"\d+ intervals\), above 1,000,000: .*bound a window of the trace"),
        (lambda: planner_gap(long_chain, 64.0, FAST_L2), r"^plan_optimum: the integer program"),
    ]
    for call, text in checks:
        with pytest.raises(ValueError, match=text) as error:
            call()
        assert "\n" not in str(error.value)
    state = np.zeros(3, np.int8)
    with pytest.raises(ValueError, match=r"^fixed: "):
        plan_optimum(*_one_weight()[:1], 30.0, FAST_L2, fixed=(state, state.astype(np.int64), state.astype(np.int64)))
