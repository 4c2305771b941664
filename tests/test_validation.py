import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import lab
from lab.analysis.validation import DEFAULT_WINDOW


def _trace(ids, sizes=None):
    return pd.DataFrame({"tensor_id": ids, "size_mb": sizes if sizes is not None else [1.0] * len(ids)})


def test_entropy_and_locality_against_scipy_on_a_known_trace():
    # reuse distances (other accesses between): a@2 -> 1, b@3 -> 1, a@5 -> 2, c@6 -> 1, a@7 -> 1, e@9 -> 4
    trace = _trace(["a", "b", "a", "b", "c", "a", "c", "a", "e", "f", "g", "h", "i", "e"])
    report = lab.validate(trace, window=2)
    distances = np.array([1, 1, 2, 1, 1, 4])
    _, counts = np.unique(distances, return_counts=True)
    assert report.reuse_entropy.value == pytest.approx(stats.entropy(counts, base=2))
    assert report.reuse_entropy_normalized.value == pytest.approx(stats.entropy(counts, base=2) / math.log2(3))
    assert report.temporal_locality.value == pytest.approx(4 / 6)
    assert "67% of 6 reuses come within 2 accesses" in report.temporal_locality.interpretation


def test_size_test_and_wasserstein_against_scipy():
    trace = lab.generate_trace("Transformer", num_layers=4)
    reference = lab.generate_trace("CNN", num_layers=8)
    report = lab.validate(trace, reference=reference)
    ks = stats.ks_2samp(trace["size_mb"], reference["size_mb"])
    assert report.size_distribution.value == pytest.approx(ks.statistic)
    assert report.size_distribution.p_value == pytest.approx(ks.pvalue)
    assert "differs from the reference" in report.size_distribution.interpretation
    w = stats.wasserstein_distance(trace["reuse_distance"].dropna(), reference["reuse_distance"].dropna())
    assert report.reuse_distance_distance.value == pytest.approx(w)


def test_a_generated_trace_is_tested_against_its_own_architecture():
    report = lab.validate(lab.generate_trace("MoE", num_layers=3))
    assert report.size_distribution.p_value > 0.05
    assert "consistent with the generator's architecture sizes" in report.size_distribution.interpretation
    assert report.reuse_distance_distance is None


def test_no_reuse_at_all():
    report = lab.validate(_trace(["a", "b", "c"], [1.0, 2.0, 3.0]))
    for statistic in (report.reuse_entropy, report.reuse_entropy_normalized, report.temporal_locality):
        assert math.isnan(statistic.value) and "no tensor is reused" in statistic.interpretation
    assert report.size_distribution is None  # no reference and no generator parameters
    with_ref = lab.validate(_trace(["a", "b"]), reference=_trace(["x", "x"]))
    assert math.isnan(with_ref.reuse_distance_distance.value)


def test_a_single_tensor():
    report = lab.validate(_trace(["a"] * 5))
    assert report.reuse_entropy.value == 0.0 and report.reuse_entropy_normalized.value == 0.0
    assert report.temporal_locality.value == 1.0
    single = lab.validate(_trace(["a"]))
    assert math.isnan(single.temporal_locality.value)


def test_report_as_frame_and_json():
    report = lab.validate(lab.generate_trace("CNN", num_layers=4), reference=lab.generate_trace("CNN", seed=1))
    frame = report.to_frame()
    assert frame["name"].tolist() == ["reuse_entropy", "reuse_entropy_normalized", "temporal_locality",
                                      "size_distribution_ks", "reuse_distance_wasserstein"]
    assert frame["interpretation"].str.len().gt(10).all()
    json.dumps(report.to_dict())
    with pytest.raises(Exception):
        report.reuse_entropy.value = 3.0  # frozen


def test_default_window():
    trace = lab.generate_trace("Transformer", num_layers=2)
    assert lab.validate(trace).temporal_locality.interpretation.endswith("locality")
    assert str(DEFAULT_WINDOW) in lab.validate(trace).temporal_locality.interpretation


@pytest.mark.parametrize("window", [0, -1, 1.5, "32"])
def test_bad_window(window):
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        lab.validate(_trace(["a", "a"]), window=window)


def test_bad_trace():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['size_mb'\]"):
        lab.validate(pd.DataFrame({"tensor_id": ["a"]}))


def test_interpretations_are_shown_whole():
    """pandas cuts a cell longer than display.max_colwidth (50) mid-word: a notebook, a report and the explorer
    show every interpretation of the table whole, in HTML and in text, and a slice of it too."""
    report = lab.validate(lab.generate_trace("CNN", num_layers=4), reference=lab.generate_trace("CNN", seed=1))
    frame = report.to_frame()
    long = [s.interpretation for s in report.statistics() if len(s.interpretation) > 50]
    assert long  # there is something to cut
    for text in (frame._repr_html_(), repr(frame), frame[["name", "interpretation"]]._repr_html_()):
        assert all(interpretation in text for interpretation in long)
