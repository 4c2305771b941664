"""Library lowering (lab/workloads/lowering.py): the kernels cuDNN and torch run for a call, recorded as ops."""

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from lab.workloads.capture import capture_trace  # noqa: E402

MIB = 2**20


class TinyCNN(torch.nn.Module):
    """A 3x3 conv (filter transform), a 1x1 stride-1 conv on 16x16 (a direct GEMM), a 1x1 stride-2 conv (8x8:
    transforms, no filter transform), eval batch norm and ReLU."""

    def __init__(self):
        super().__init__()
        self.c3 = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.c1 = torch.nn.Conv2d(16, 16, 1, bias=False)
        self.down = torch.nn.Conv2d(16, 32, 1, stride=2, bias=False)
        self.bn = torch.nn.BatchNorm2d(32)

    def forward(self, x):
        return torch.relu(self.bn(self.down(self.c1(self.c3(x)))))


def _capture(dtype=torch.bfloat16, channels_last=False, lowering="cuda-sm90"):
    model = TinyCNN().to(dtype)
    x = torch.randn(4, 8, 16, 16, dtype=dtype)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    return capture_trace(model, (x,), lowering=lowering)


@pytest.fixture(scope="module")
def lowered():
    return _capture()


@pytest.fixture(scope="module")
def plain():
    return _capture(lowering=None)


def _ops(trace):
    return trace[trace["op_index"] >= 0].groupby("op_index").first()


def test_nchw_bf16_convs_run_cudnn_layout_transforms(lowered):
    ops = _ops(lowered)
    assert list(ops["op"]) == [
        "cudnn.nchwToNhwc", "cudnn.nchwToNhwc", "aten.convolution", "cudnn.nhwcToNchw",  # 3x3: input and filter
        "aten.convolution",  # 1x1 stride 1, 16x16 output: one GEMM on NCHW
        "cudnn.nchwToNhwc", "aten.convolution", "cudnn.nhwcToNchw",  # 1x1 stride 2 (8x8): no filter transform
        "aten.native_batch_norm", "aten.relu"]
    assert list(ops["launches"]) == [1] * 8 + [3, 1]  # eval batch norm: copy, 1/std, transform
    # each step is the conv's module, and only the convolutions carry FLOPs (2 x out x C_in x kh x kw)
    assert list(ops["module"][:4]) == ["c3"] * 4 and list(ops["module"][5:8]) == ["down"] * 3
    conv = ops["op"] == "aten.convolution"
    assert (ops.loc[~conv, "flops"] == 0).all()
    assert list(ops.loc[conv, "flops"]) == [2 * 4 * 16 * 16 * 16 * 8 * 9, 2 * 4 * 16 * 16 * 16 * 16,
                                            2 * 4 * 32 * 8 * 8 * 16]
    # the aten call's host calls go to its first kernel; the library's own kernels cost no aten call
    assert ops["host_calls"].iloc[0] >= 1 and (ops["host_calls"].iloc[1:4] == 0).all()


def test_transforms_move_the_bytes_of_their_tensors_through_dead_temporaries(lowered):
    t = lowered
    x_mb, w3_mb, c3_mb = 4 * 8 * 16 * 16 * 2 / MIB, 16 * 8 * 9 * 2 / MIB, 4 * 16 * 16 * 16 * 2 / MIB
    first = t[t["op_index"].between(0, 3)]
    assert list(zip(first["tensor_id"], first["access"], first["size_mb"])) == [
        ("input:0", "read", x_mb), ("nhwc_in#1", "write", x_mb),
        ("c3.weight", "read", w3_mb), ("nhwc_w#1", "write", w3_mb),
        ("nhwc_in#1", "read", x_mb), ("nhwc_w#1", "read", w3_mb), ("nhwc_out#1", "write", c3_mb),
        ("nhwc_out#1", "read", c3_mb), ("convolution#1", "write", c3_mb)]
    assert t.loc[t["tensor_id"] == "nhwc_in#1", "shape"].iloc[0] == "(4, 16, 16, 8)"  # NHWC
    temporaries = t[t["tensor_id"].str.startswith("nhwc_")]
    assert temporaries["tensor_id"].nunique() == 5 and (temporaries["kind"] == "activation").all()
    # written once, read once by the conv step's next kernel that needs it, then dead: the liveness and allocator
    # models free them
    for _, rows in temporaries.groupby("tensor_id"):
        assert list(rows["access"]) == ["write", "read"]
        assert np.diff(rows["op_index"].to_numpy()).item() in (1, 2)
        assert rows["op"].iloc[1] in ("aten.convolution", "cudnn.nhwcToNchw")


def test_the_allocator_reuses_a_dead_temporary(lowered):
    from lab.sim.hardware import assign_addresses

    lo, _ = assign_addresses(lowered)
    start = pd.Series(lo, index=lowered["tensor_id"]).groupby(level=0).first()
    # down's NHWC input is allocated after c3's temporaries died: it lands in their freed range
    freed = {start["nhwc_in#1"], start["nhwc_w#1"], start["nhwc_out#1"]}
    assert start["nhwc_in#2"] in freed or start["nhwc_out#2"] in freed


def test_lowering_none_and_calls_no_rule_matches_record_pure_aten(plain):
    lowered = _capture(dtype=torch.float32)  # fp32 convs run no transform in this rule set
    fp32_plain = _capture(dtype=torch.float32, lowering=None)
    assert list(_ops(plain)["op"]) == list(_ops(fp32_plain)["op"])  # one op per aten call
    assert list(_ops(plain)["launches"]) == [1] * 5
    # the same rows, only eval batch norm's launches differ
    bn = lowered["op"] == "aten.native_batch_norm"
    assert (lowered.loc[bn, "launches"] == 3).all()
    pd.testing.assert_frame_equal(lowered.drop(columns="launches"), fp32_plain.drop(columns="launches"))
    assert plain.attrs["lowering"] is None and lowered.attrs["lowering"] == "cuda-sm90"


def test_a_channels_last_model_runs_no_transforms():
    ops = _ops(_capture(channels_last=True))
    assert not ops["op"].str.startswith("cudnn.").any()
    assert (ops["op"] == "aten.convolution").sum() == 3 and ops["launches"].sum() == 3 + 3 + 1


def test_a_bad_lowering_is_refused():
    model = TinyCNN()
    with pytest.raises(ValueError, match="lowering must be None .*'cuda-sm90'"):
        capture_trace(model, (torch.randn(1, 8, 8, 8),), lowering="cudnn")


def test_category_traffic_puts_measured_and_predicted_bytes_side_by_side(lowered):
    import lab
    from lab.analysis.fidelity import category_traffic, kernel_categories, op_categories

    kernels = pd.DataFrame({"ID": range(5), "kernel": [
        "void cudnn::nchwToNhwcKernel<__nv_bfloat16>(...)", "sm90_xmma_fprop_implicit_gemm_bf16_nhwc",
        "void at::native::batch_norm_transform_input_kernel<c10::BFloat16>(...)",
        "void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous)::launch_clamp_scalar>(...)",
        "void some_unknown_kernel()"],
        "read_bytes": [MIB, 2 * MIB, 3 * MIB, 4 * MIB, 0], "write_bytes": [MIB, 4 * MIB, 2 * MIB, 8 * MIB, 0]})
    assert list(kernel_categories(kernels)["category"]) == ["transform", "conv/gemm", "norm", "elementwise", "other"]
    assert list(op_categories(["cudnn.nhwcToNchw", "aten.convolution", "aten.native_batch_norm", "aten.relu",
                               "aten.max_pool2d_with_indices", "aten.cat"])) == [
        "transform", "conv/gemm", "norm", "elementwise", "pool", "other"]
    result = lab.simulate(lowered, "FIFO", 0.05, cost="H200", buffer="cache", per_access=False)
    table = category_traffic(kernels, result).set_index("category")
    assert list(table.index) == ["transform", "norm", "conv/gemm", "elementwise", "other", "flush"]
    assert table.loc["transform", "launches"] == 5 and table.loc["norm", "launches"] == 3
    assert table.loc["conv/gemm", "measured_write_mb"] == 4 and table.loc["conv/gemm", "write_ratio"] == pytest.approx(
        table.loc["conv/gemm", "write_mb"] / 4)
    # every predicted byte lands in one category (the flush included), every measured one too
    assert table["write_mb"].sum() == pytest.approx(result.metrics["dram_writes_mb"])
    assert table["read_mb"].sum() == pytest.approx(result.metrics["dram_reads_mb"])
    assert table["measured_write_mb"].sum() == 15 and table.loc["transform", "write_mb"] > 0
    with pytest.raises(ValueError, match="per-op DRAM bytes"):
        category_traffic(kernels, lowered)  # the trace, not its simulation
