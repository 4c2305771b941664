"""lab's DRAM traffic against an NVIDIA H200's, measured kernel by kernel (ground_truth/h200, README there)."""

import shutil
from pathlib import Path

import pytest

from lab.analysis.fidelity import H200_CASES, h200_case, measured_cases, measured_totals

GROUND_TRUTH = Path(__file__).resolve().parents[1] / "ground_truth" / "h200"

# The totals table of ground_truth/h200/README.md: case, kernels, DRAM read MiB, DRAM write MiB.
README_TOTALS = [
    ("gpt2-fwd-b1-s512", 219, 239.6, 127.4),
    ("gpt2-fwd-b8-s1024", 219, 7614.6, 7213.6),
    ("llama7b-fwd-b1-s512", 1245, 15125.3, 3892.3),
    ("resnet50-fwd-b32", 347, 1554.1, 2250.2),
    ("gpt2-train-b1-s512", 752, 4483.3, 3110.8),
]


def test_measured_totals_reproduce_the_readme_table():
    table = measured_totals(GROUND_TRUTH)
    assert list(table["case"]) == list(H200_CASES) == [row[0] for row in README_TOTALS]
    for row, (case, kernels, read_mb, write_mb) in zip(table.itertuples(), README_TOTALS):
        assert row.case == case
        assert row.kernels == kernels
        assert round(row.read_mb, 1) == read_mb
        assert round(row.write_mb, 1) == write_mb


def test_a_case_name_gives_the_capture_of_the_step_workloads_py_measures():
    # the shared cases, as captured since slice 0: no KV cache for decoders, the measured AdamW for training
    assert H200_CASES["gpt2-fwd-b8-s1024"] == dict(name="gpt2", batch_size=8, seq_length=1024, use_cache=False,
                                                   lowering="cuda-sm90")
    assert H200_CASES["gpt2-train-b1-s512"] == dict(name="gpt2", batch_size=1, seq_length=512, training=True,
                                                    lowering="cuda-sm90")
    assert H200_CASES["resnet50-fwd-b32"] == dict(name="resnet-50", batch_size=32, lowering="cuda-sm90")
    # cases measured later the same way (CASES=... run.sh): every model workloads.py builds
    assert h200_case("llama7b-train-b2-s128") == dict(name="llama-2-7b", batch_size=2, seq_length=128, training=True,
                                                      lowering="cuda-sm90")
    assert h200_case("bert-fwd-b8-s128") == dict(name="bert-base", batch_size=8, seq_length=128, lowering="cuda-sm90")
    assert h200_case("vit-fwd-b16") == dict(name="vit-base", batch_size=16, lowering="cuda-sm90")
    for bad in ("gpt2-fwd-b4", "resnet50-fwd-b8-s128", "vit-train-b8", "gpt3-fwd-b1-s8", "gpt2-fwd-b0-s8", None):
        with pytest.raises(ValueError, match="case must be a measured step's name as workloads.py takes it") as caught:
            h200_case(bad)
        assert "\n" not in str(caught.value)


def test_a_case_measured_later_is_read_after_the_shared_ones(tmp_path):
    for path in GROUND_TRUTH.glob("*.csv"):
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(GROUND_TRUTH / "resnet50-fwd-b32.csv", tmp_path / "resnet50-fwd-b8.csv")  # its kernels, renamed
    (tmp_path / "notes.csv").write_text("not a case\n")
    (tmp_path / "gpt3-fwd-b1-s8.csv").write_text("a model workloads.py does not build\n")
    assert measured_cases(tmp_path) == list(H200_CASES) + ["resnet50-fwd-b8"]
    table = measured_totals(tmp_path).set_index("case")
    assert table.loc["resnet50-fwd-b8"].tolist() == table.loc["resnet50-fwd-b32"].tolist()


# Predicted DRAM MiB (read + write) of each case under buffer="cache", H200 preset, FIFO (benchmark log, 2026-12-06:
# the cases captured as measured, use_cache=False and AdamW not capturable, with the H200's lowering: ResNet's
# cuDNN layout transforms)
CACHE_TOTALS_MB = {"gpt2-fwd-b1-s512": 374.7, "gpt2-fwd-b8-s1024": 14_475.2, "llama7b-fwd-b1-s512": 20_116.3,
                   "resnet50-fwd-b32": 3_582.2, "gpt2-train-b1-s512": 7_889.9}


@pytest.fixture(scope="module")
def h200_traces():
    """The capture of each measured case (five models; cached after the first run)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from lab.workloads.models import capture_model

    return {case: capture_model(**arguments) for case, arguments in H200_CASES.items()}


@pytest.mark.slow
def test_cache_model_predicts_the_h200_within_the_targets(h200_traces):
    """buffer="cache" under the H200 preset: total within 1.5x of the measurement for every case, reads and
    writes each within 2x (issue 10's targets)."""
    from lab.analysis.fidelity import fidelity_table

    table = fidelity_table(GROUND_TRUTH, buffers=("cache",), traces=h200_traces)
    assert list(table["case"]) == list(H200_CASES)
    for row in table.itertuples():
        # what the benchmark log's 2026-12-06 entry records: a change to capture or to the cache model that moves
        # these is a change of the published figures (re-measure and log it)
        assert row.total_mb == pytest.approx(CACHE_TOTALS_MB[row.case], rel=0.005), row
        assert 1 / 1.5 <= row.total_ratio <= 1.5, row
        assert 1 / 2 <= row.read_ratio <= 2, row
        assert 1 / 2 <= row.write_ratio <= 2, row
        # issue 26: traffic and ResNet-50 b32's writes within 1.25x, the eager step time within 1.25x (the H200
        # preset's three fitted numbers, benchmarks/calibrate_time.py), and no step faster without its host
        assert 1 / 1.25 <= row.total_ratio <= 1.25, row
        assert 1 / 1.25 <= row.step_ratio <= 1.25, row
        assert 0 < row.graph_step_ms <= row.step_ms, row
    resnet = table.set_index("case").loc["resnet50-fwd-b32"]
    assert 1 / 1.25 <= resnet["write_ratio"] <= 1.25


@pytest.mark.slow
def test_captured_flops_of_the_measured_cases(h200_traces):
    """Executed FLOPs of a step (the capture's ``flops``, one value per op): ResNet-50 at batch 32 is 32 x 4.09
    G multiply-adds (262 GFLOP); GPT-2 small over 512 tokens is 2 FLOPs per token and weight of its products
    (the layers' projections and the LM head) plus the causal half of its attention products."""
    def tflop(case):
        trace = h200_traces[case]
        return trace[trace["op_index"] >= 0].groupby("op_index")["flops"].first().sum() / 1e12

    assert tflop("resnet50-fwd-b32") == pytest.approx(0.262, rel=0.005)
    # 2 x 512 tokens x (85.0 M layer weights + 38.6 M LM head) + 12 layers x 2 x 512^2 x 768 (causal: half)
    gpt2 = 2 * 512 * (12 * (768 * 2304 + 768 * 768 + 2 * 768 * 3072) + 768 * 50257) + 12 * 2 * 512**2 * 768
    assert tflop("gpt2-fwd-b1-s512") == pytest.approx(gpt2 / 1e12, rel=1e-9)
    assert gpt2 / 1e12 == pytest.approx(0.131, rel=0.005)


@pytest.mark.slow
def test_the_resnet_capture_runs_the_kernels_the_h200_ran(h200_traces):
    """Under the H200's lowering (cuda-sm90) ResNet-50 at batch 32 launches the measured 347 kernels: cuDNN's 42
    nchwToNhwc and 25 nhwcToNchw layout transforms (447 MiB written: inputs, filters larger than 1x1 and outputs of
    the 25 transformed convolutions), three per eval batch norm; and each kernel category launches as measured
    (batch norm's copy kernel is named as an elementwise one)."""
    from lab.analysis.fidelity import kernel_categories, op_categories

    trace = h200_traces["resnet50-fwd-b32"]
    ops = trace[trace["op_index"] >= 0].groupby("op_index").first()
    assert ops["launches"].sum() == 347 and len(ops) == 174 + 67
    assert (ops["op"] == "cudnn.nchwToNhwc").sum() == 42 and (ops["op"] == "cudnn.nhwcToNchw").sum() == 25
    transform_writes = trace.loc[trace["op"].str.startswith("cudnn.") & (trace["access"] == "write"), "size_mb"]
    assert transform_writes.sum() == pytest.approx(447.29, abs=0.01)
    measured = kernel_categories(GROUND_TRUTH / "resnet50-fwd-b32.csv")["category"].value_counts()
    captured = ops.assign(category=op_categories(ops["op"])).groupby("category")["launches"].sum()
    assert "other" not in measured and measured.sum() == captured.sum() == 347
    for category in ("transform", "conv/gemm", "pool"):
        assert measured[category] == captured[category], category
    assert measured["norm"] + measured["elementwise"] == captured["norm"] + captured["elementwise"]
