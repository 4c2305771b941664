"""lab.simulate: metrics, per-access results, cost model use, and bad input."""

import math

import numpy as np
import pandas as pd
import pytest

import lab
from lab.sim.cost import CostModel
from lab.units import BYTES_PER_MB

SEED_KEYS = {"cache_hits", "dram_accesses", "evictions", "cache_hit_rate", "total_latency", "bandwidth_wait_time"}


def test_metrics_by_hand(small_trace):
    # capacity 20 MB, LRU: A(4) miss, B(8) miss, A hit, C(16) miss evicts B, B(8) miss
    # evicts A then C, D(32) too large: miss, not inserted, A(4) miss, C(16) miss evicts B
    result = lab.simulate(small_trace, "LRU", capacity_mb=20)
    m = result.metrics
    assert result.hit.tolist() == [False, False, True, False, False, False, False, False]
    assert result.evictions_per_access.tolist() == [0, 0, 0, 1, 2, 0, 0, 1]
    assert result.victims()["tensor_id"].tolist() == ["B", "A", "C", "B"]
    assert (result.resident_bytes / BYTES_PER_MB).tolist() == [4, 12, 12, 20, 8, 8, 12, 20]
    assert SEED_KEYS <= m.keys()
    missed_mb = 4 + 8 + 16 + 8 + 32 + 4 + 16
    assert m["cache_hits"] == 1 and m["dram_accesses"] == 7 and m["evictions"] == 4
    assert m["cache_hit_rate"] == pytest.approx(100 / 8)
    assert m["bytes_from_dram"] == missed_mb * BYTES_PER_MB
    assert m["byte_hit_rate"] == pytest.approx(100 * 4 / (missed_mb + 4))
    assert m["compulsory_misses"] == 4 and m["uncacheable_accesses"] == 1
    assert m["peak_occupancy_mb"] == 20.0
    wait_ms = missed_mb * BYTES_PER_MB / 100e9 * 1e3  # seed cost model: 100 GB/s
    assert m["bandwidth_wait_time"] == pytest.approx(wait_ms)
    assert m["total_latency"] == pytest.approx(1 * 0.01 + missed_mb * 0.1 + wait_ms)
    assert result.latency_ms.sum() == pytest.approx(m["total_latency"])


def test_cost_model_and_presets_change_latency_not_hits(small_trace):
    seed = lab.simulate(small_trace, "LRU", capacity_mb=20)
    h100 = lab.simulate(small_trace, "LRU", capacity_mb=20, cost="h100-sxm5", buffer="scratchpad")
    custom = CostModel(name="x", hit_latency_ms=1.0, miss_latency_ms=2.0, miss_latency_ms_per_mb=0.0, dram_bandwidth_gb_s=1e9)
    mine = lab.simulate(small_trace, "LRU", capacity_mb=20, cost=custom)
    assert seed.hit.tolist() == h100.hit.tolist() == mine.hit.tolist()
    assert h100.metrics["total_latency"] < seed.metrics["total_latency"]
    assert mine.metrics["total_latency"] == pytest.approx(1 * 1.0 + 7 * 2.0 + mine.metrics["bandwidth_wait_time"])
    assert h100.metrics["bandwidth_wait_time"] == pytest.approx(
        seed.metrics["bandwidth_wait_time"] * 100 / 3350
    )


def test_to_frame_has_one_row_per_access(small_trace):
    frame = lab.simulate(small_trace, "FIFO", capacity_mb=20).to_frame()
    assert list(frame.columns) == ["access", "tensor_id", "size_mb", "hit", "write_allocated", "evictions", "resident_bytes",
                                     "write_bytes", "latency_ms"]
    assert len(frame) == len(small_trace)
    assert frame["tensor_id"].tolist() == small_trace["tensor_id"].tolist()
    assert frame["size_mb"].tolist() == small_trace["size_mb"].tolist()


def test_integer_tensor_ids_and_fractional_sizes():
    trace = pd.DataFrame({"tensor_id": [3, 1, 3, 2], "size_mb": [0.5, 0.25, 0.5, 0.3]})
    result = lab.simulate(trace, "LRU", capacity_mb=0.85)
    assert result.hit.tolist() == [False, False, True, False]
    assert result.victims()["tensor_id"].tolist() == [1]


@pytest.mark.parametrize("policy", ["LRU", "FIFO", "ML", "Belady"])
def test_empty_trace_gives_zero_metrics(policy):
    empty = pd.DataFrame({"tensor_id": pd.Series([], dtype=str), "size_mb": pd.Series([], dtype=float)})
    empty["eviction_score"] = pd.Series([], dtype=float)
    result = lab.simulate(empty, policy)
    assert all(v == 0 for v in result.metrics.values())
    assert len(result.to_frame()) == 0 and len(result.victims()) == 0


@pytest.mark.parametrize(
    "trace, match",
    [
        (pd.DataFrame({"size_mb": [1.0]}), r"missing column\(s\) \['tensor_id'\]"),
        (pd.DataFrame({"tensor_id": ["a"]}), r"missing column\(s\) \['size_mb'\]"),
        (pd.DataFrame({"tensor_id": ["a", "b"], "size_mb": [1.0, np.nan]}), r"'size_mb'.*no NaN.*row 1"),
        (pd.DataFrame({"tensor_id": ["a", "b"], "size_mb": [1.0, -2.0]}), r"'size_mb'.*\(0, .*row 1: -2.0"),
        (pd.DataFrame({"tensor_id": ["a"], "size_mb": [0.0]}), r"'size_mb'.*\(0, "),
        (pd.DataFrame({"tensor_id": ["a"], "size_mb": [math.inf]}), r"'size_mb' must be finite"),
        (pd.DataFrame({"tensor_id": ["a"], "size_mb": ["big"]}), r"'size_mb' must hold numbers.*'big'"),
        (pd.DataFrame({"tensor_id": ["a", None], "size_mb": [1.0, 1.0]}), r"'tensor_id' has missing values"),
        (pd.DataFrame({"tensor_id": ["a", "a"], "size_mb": [1.0, 2.0]}), r"tensor_id 'a' appears with different sizes"),
        ([("a", 1.0)], r"trace must be a pandas DataFrame"),
    ],
)
def test_bad_traces_raise_value_errors_naming_the_field(trace, match):
    with pytest.raises(ValueError, match=match):
        lab.simulate(trace, "LRU")


@pytest.mark.parametrize("capacity", [0, -1.0, math.nan, math.inf, "64", None, True])
def test_bad_capacity(small_trace, capacity):
    with pytest.raises(ValueError, match="capacity_mb"):
        lab.simulate(small_trace, "LRU", capacity_mb=capacity)


def test_ml_without_scores_says_to_score_first(small_trace):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['eviction_score'\].*score the trace first"):
        lab.simulate(small_trace.drop(columns="eviction_score"), "ML")


def test_ml_with_nan_scores(small_trace):
    small_trace.loc[2, "eviction_score"] = np.nan
    with pytest.raises(ValueError, match=r"'eviction_score' must hold numbers.*row 2"):
        lab.simulate(small_trace, "ML")


def test_unknown_cost_preset(small_trace):
    with pytest.raises(ValueError, match=r"hardware preset name in \['seed', 'H100-SXM5', 'H200', 'A100-SXM4-40GB'\]"):
        lab.simulate(small_trace, "LRU", cost="TPU")


def test_the_input_trace_is_not_modified(small_trace):
    before = small_trace.copy()
    for policy in lab.policy_names():
        lab.simulate(small_trace, policy, capacity_mb=20)
    pd.testing.assert_frame_equal(small_trace, before)


def test_per_workload_counts_are_the_same_at_every_capacity_of_one_workload():
    # compulsory misses, reads and uncacheable accesses are counted once per Workload (memoized): one workload
    # simulated at many capacities reports what a fresh encoding of the trace reports at each
    rng = np.random.default_rng(7)
    n = 400
    trace = pd.DataFrame({"tensor_id": rng.integers(0, 40, n).astype(str),
                          "access": rng.choice(["read", "write", "persist"], n, p=[0.6, 0.3, 0.1])})
    sizes = dict(zip(map(str, range(40)), rng.uniform(0.5, 30, 40).round(2)))
    trace["size_mb"] = trace["tensor_id"].map(sizes)
    workload = lab.encode_trace(trace)
    for capacity_mb in [40, 0.4, 12, 31, 3, 12, 64]:
        shared = lab.simulate(workload, "LRU", capacity_mb, per_access=False).metrics
        fresh = lab.simulate(trace, "LRU", capacity_mb, per_access=False).metrics
        assert shared == fresh
        accesses = trace[trace["access"] != "persist"]
        too_large = int(((accesses["size_mb"] * BYTES_PER_MB).round() > capacity_mb * BYTES_PER_MB).sum())
        assert shared["uncacheable_accesses"] == too_large


def test_a_result_names_its_model(small_trace):
    result = lab.simulate(small_trace, lab.get_policy("S3-FIFO", small_ratio=0.2), capacity_mb=20)
    model = result.model
    assert (model.buffer, model.cost, model.capacity_mb, model.policy) == ("scratchpad", "seed", 20.0, "S3-FIFO")
    assert model.params == lab.get_policy("S3-FIFO", small_ratio=0.2).get_params() == result.params
    assert model.cache_model is None and result.buffer == "scratchpad"
    text = model.describe()
    assert text.startswith("S3-FIFO(small_ratio=0.2, ") and "20 MB scratchpad" in text and "seed cost model" in text
    assert "\n" not in text
    assert model.to_dict()["buffer_description"] == "liveness-aware software-managed whole-tensor buffer"
    assert set(result.metrics) == set(lab.simulate(small_trace, "LRU", 20).metrics)  # metrics stay numbers
    assert all(isinstance(v, (int, float)) for v in result.metrics.values())


def test_a_cache_result_names_the_cache_and_its_parameters(small_trace):
    from lab.sim.hardware import CacheModel

    cache_model = CacheModel(line_bytes=1 << 20, effective_fraction=0.5)
    result = lab.simulate(small_trace, "FIFO", 20, "H200", buffer="cache", cache_model=cache_model)
    model = result.model
    assert (model.buffer, model.cost, model.policy, model.params) == ("cache", "H200", "FIFO", {})
    assert result.params == {} and model.cache_model == cache_model  # the cache's fields beside, not in params
    assert model.describe() == ("FIFO, 20 MB cache (hardware cache of 1024 KiB lines, 50 % of the capacity "
                                "effective, write-back, no knowledge of liveness), H200 cost model")
    assert model.to_dict()["cache_model"]["line_bytes"] == 1 << 20


def test_a_gpu_preset_runs_the_hardware_cache_unless_told(small_trace):
    for preset in ("A100-SXM4-40GB", "H100-SXM5", "H200"):
        default = lab.simulate(small_trace, "LRU", 20, preset, per_access=False)
        cache = lab.simulate(small_trace, "LRU", 20, preset, per_access=False, buffer="cache")
        assert default.buffer == default.model.buffer == "cache" and default.metrics == cache.metrics
        told = lab.simulate(small_trace, "LRU", 20, preset, buffer="scratchpad")
        assert told.buffer == "scratchpad" and told.hit.tolist() == lab.simulate(small_trace, "LRU", 20).hit.tolist()
    # no preset named, or a cost model of one's own: the scratchpad, as before
    for cost in (None, "seed", CostModel(name="x", hit_latency_ms=1.0)):
        assert lab.simulate(small_trace, "LRU", 20, cost).buffer == "scratchpad"
    mine = CostModel(name="mine", buffer="cache")
    assert lab.simulate(small_trace, "LRU", 20, mine).model.buffer == "cache"


@pytest.mark.parametrize("buffer, error", [("l2", ValueError), ("Cache", ValueError), (1, TypeError),
                                           (["cache"], TypeError)])
def test_a_bad_buffer_is_one_line_naming_the_choices(small_trace, buffer, error):
    with pytest.raises(error, match=r"^buffer must be one of \['scratchpad', 'cache'\] or None") as raised:
        lab.simulate(small_trace, "LRU", 20, buffer=buffer)
    assert "\n" not in str(raised.value)


def test_a_degenerate_result_says_why_in_one_sentence(small_trace):
    assert lab.simulate(small_trace, "LRU", 20).note == ""
    too_small = lab.simulate(small_trace, "LRU", 2, per_access=False)
    assert too_small.note == ("Every tensor is larger than the buffer (2 MB; the smallest is 4 MB): every access "
                              "bypasses it and goes to DRAM.")
    # S3-FIFO admits new tensors into its small queue only: 10 % of 36 MB holds none of them
    s3 = lab.simulate(small_trace, "S3-FIFO", 36, per_access=False)
    assert s3.metrics["cache_hits"] == 0 and s3.metrics["uncacheable_accesses"] == 0
    # S3-FIFO declares its small queue (Policy.admission_limit)
    assert s3.note == ("S3-FIFO's small queue (10 % of the buffer, 3.6 MB) holds none of these tensors (the smallest "
                       "is 4 MB): every tensor bypasses it.")
    # the seed example: the small queue holds some tensors, but not those that carry most of the bytes
    seed = lab.generate_trace("Transformer", num_layers=12, batch_size=32, seq_length=128, seed=0)
    note = lab.simulate(seed, "S3-FIFO", 64, per_access=False).note
    assert note.startswith("S3-FIFO's small queue (10 % of the buffer, 6.4 MB) is smaller than the tensors that "
                           "carry") and note.endswith("so S3-FIFO serves few of them.")
    assert lab.simulate(seed, "LRU", 64, per_access=False).note == ""
    once = pd.DataFrame({"tensor_id": ["a", "b", "c"], "size_mb": [1.0, 1.0, 1.0]})
    assert lab.simulate(once, "LRU", 8).note == "No access is served on chip: every access is the first of its tensor."
    mixed = pd.DataFrame({"tensor_id": ["big", "a", "big", "b"], "size_mb": [9.0, 1.0, 9.0, 1.0]})
    assert lab.simulate(mixed, "LRU", 8).note == (
        "No access is served on chip: 2 of 4 accesses are to tensors larger than the buffer (8 MB), and no other "
        "tensor is used again while it is resident.")
    empty = lab.simulate(pd.DataFrame({"tensor_id": pd.Series([], dtype=str), "size_mb": pd.Series([], dtype=float)}),
                         "LRU", 8)
    assert empty.note == "The trace has no accesses: every number is 0."


def test_a_policy_that_admits_into_part_of_the_buffer_names_that_part():
    from lab.sim.model import degenerate_note

    class SmallQueue:  # what S3-FIFO declares (Policy.admission_limit): new tensors enter 10 % of the buffer
        name = "S3-FIFO"

        def admission_limit(self, capacity_bytes, workload):
            return capacity_bytes // 10, "S3-FIFO's small queue"

    workload = lab.encode_trace(pd.DataFrame({"tensor_id": ["a", "b", "a"], "size_mb": [6.0, 8.0, 6.0]}))
    metrics = {"accesses": 3, "uncacheable_accesses": 0, "cache_hits": 0, "write_allocations": 0,
               "compulsory_misses": 2}
    note = degenerate_note(SmallQueue(), workload, 50 * BYTES_PER_MB, metrics, insertions=0, buffer="scratchpad")
    assert note == ("S3-FIFO's small queue (10 % of the buffer, 5 MB) holds none of these tensors (the smallest is "
                    "6 MB): every tensor bypasses it.")
    assert lab.get_policy("LRU").admission_limit(50 * BYTES_PER_MB, workload) is None  # the whole buffer admits
    assert lab.get_policy("2Q").admission_limit(40 * BYTES_PER_MB, workload) == (10 * BYTES_PER_MB, "2Q's Ain queue")


def test_a_policy_that_cannot_run_in_the_cache_says_so(small_trace):
    from lab.sim.model import BufferModelError

    with pytest.raises(BufferModelError, match=r"^ML cannot run in the hardware cache \(buffer='cache'\).*"
                                               r"run it with buffer='scratchpad'$"):
        lab.simulate(small_trace, "ML", 20, "H200")
    assert lab.simulate(small_trace, "ML", 20, "H200", buffer="scratchpad").buffer == "scratchpad"
