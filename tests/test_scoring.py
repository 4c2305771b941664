import numpy as np
import pandas as pd
import pytest

import lab
from lab.learn.scoring import register_scorer


def test_heuristic_by_hand():
    trace = pd.DataFrame({
        "tensor_id": ["a", "b", "c"],
        "size_mb": [1.0, 2.0, 3.0],
        "reuse_distance": [np.nan, 2.0, 4.0],
        "stride": [1, 1, 3],
    })
    # size -> 0, .5, 1; reuse: first access counts as the largest (4) -> 1, 0, 1; stride -> 0, 0, 1
    scores = lab.score(trace)["eviction_score"].to_numpy()
    np.testing.assert_allclose(scores, [0.4 * 0 + 0.5 * 1 + 0.1 * 0, 0.4 * 0.5, 0.4 + 0.5 + 0.1])


def test_scores_lie_in_the_unit_interval_and_constant_columns_count_zero():
    trace = lab.generate_trace("MoE", num_layers=2)
    scores = lab.score(trace)["eviction_score"]
    assert scores.between(0, 1).all() and scores.max() > 0.5
    flat = pd.DataFrame({"tensor_id": ["a", "b", "a"], "size_mb": 4.0, "stride": 1})
    np.testing.assert_allclose(lab.score(flat)["eviction_score"], [0.0, 0.0, 0.0])


def test_missing_reuse_and_stride_columns_follow_from_the_order():
    trace = pd.DataFrame({"tensor_id": ["a", "b", "a", "c", "a"], "size_mb": [1.0, 1.0, 1.0, 1.0, 1.0]})
    with_column = trace.assign(reuse_distance=lab.reuse_distances(trace["tensor_id"]), stride=1)
    np.testing.assert_allclose(lab.score(trace)["eviction_score"], lab.score(with_column)["eviction_score"])


def test_score_returns_a_copy():
    trace = lab.generate_trace("MLP", num_layers=2)
    scored = lab.score(trace)
    assert "eviction_score" not in trace and len(scored) == len(trace)


def test_unknown_method_and_a_registered_one():
    trace = lab.generate_trace("MLP", num_layers=2)
    with pytest.raises(ValueError, match=r"unknown scorer 'oracle'; known: \['heuristic'"):
        lab.score(trace, "oracle")

    @register_scorer("test-size-only")
    def size_only(trace, encoded):
        return encoded.access_bytes / encoded.access_bytes.max()

    try:
        assert lab.score(trace, "TEST-size-only")["eviction_score"].max() == 1.0
    finally:
        lab.learn.scoring.SCORERS.remove("test-size-only")


def test_bad_reuse_column():
    trace = pd.DataFrame({"tensor_id": ["a"], "size_mb": [1.0], "reuse_distance": [-3.0]})
    with pytest.raises(ValueError, match="'reuse_distance' must hold finite numbers >= 0"):
        lab.score(trace)


def test_predict_schedule_ranks_tensors_by_their_latest_score():
    trace = lab.generate_trace("Transformer", num_layers=3)
    schedule = lab.predict_schedule(trace, top=20)
    ranking = schedule.ranking
    assert ranking["rank"].tolist() == list(range(1, 21))
    assert ranking["tensor_id"].is_unique
    assert ranking["eviction_score"].is_monotonic_decreasing
    latest = schedule.scored.drop_duplicates("tensor_id", keep="last").set_index("tensor_id")["eviction_score"]
    assert (ranking.set_index("tensor_id")["eviction_score"] == latest[ranking["tensor_id"]]).all()
    assert ranking["eviction_score"].iloc[0] == latest.max()
    counts = schedule.scored["tensor_id"].value_counts()
    assert (ranking.set_index("tensor_id")["accesses"] == counts[ranking["tensor_id"]]).all()
    assert len(lab.predict_schedule(trace, top=None).ranking) == trace["tensor_id"].nunique()


@pytest.mark.parametrize("top", [0, -1, 2.5, "5"])
def test_bad_top(top):
    with pytest.raises(ValueError, match="top must be an integer >= 1 or None"):
        lab.predict_schedule(lab.generate_trace("MLP", num_layers=1), top=top)


def test_score_groups_make_each_tie_one_row():
    trace = pd.DataFrame({"tensor_id": ["a", "b", "c", "d", "e"], "size_mb": [1.0, 4.0, 2.0, 3.0, 1.0]})
    ranking = pd.DataFrame({"rank": [1, 2, 3, 4, 5], "tensor_id": ["b", "d", "c", "a", "e"],
                            "size_mb": [4.0, 3.0, 2.0, 1.0, 1.0], "op": ["mm", "add", "mm", "mm", "mm"],
                            "eviction_score": [0.9, 0.9, 0.90000001, 0.5, 0.2]})
    groups = lab.learn.scoring.score_groups(ranking, examples=2)
    assert groups["first_rank"].tolist() == [1, 4, 5] and groups["last_rank"].tolist() == [3, 4, 5]
    assert groups["tensors"].tolist() == [3, 1, 1] and groups["size_mb"].tolist() == [9.0, 1.0, 1.0]
    assert groups["examples"].tolist() == ["b, d, ...", "a", "e"] and groups.loc[0, "ops"] == "mm, add"
    assert groups["eviction_score"].tolist() == [0.9, 0.5, 0.2]
    schedule = lab.predict_schedule(trace, top=2)
    assert len(schedule.ranking) == 2 and schedule.groups["tensors"].sum() == 5  # the groups span every tensor
    with pytest.raises(ValueError, match="examples must be an integer >= 1"):
        lab.learn.scoring.score_groups(ranking, examples=0)
