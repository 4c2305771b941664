"""The per-op columns of a capture (op_index, flops, launches, host_calls, grad_mode) against hand formulas and
the H200 ground truth (ground_truth/h200)."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lab.workloads.capture import capture_trace, multi_tensor_launches  # noqa: E402

GROUND_TRUTH = Path(__file__).resolve().parents[1] / "ground_truth" / "h200"
OP_COLUMNS = {"op_index": np.int64, "flops": np.float64, "launches": np.int16, "host_calls": np.int32,
              "grad_mode": np.bool_}


def ops_of(trace):
    """One row per recorded op (its first row), in op_index order."""
    return trace[trace["op_index"] >= 0].groupby("op_index").first()


class Call(torch.nn.Module):
    def __init__(self, fn, *modules):
        super().__init__()
        self.fn = fn
        self.inner = torch.nn.ModuleList(modules)

    def forward(self, *args):
        return self.fn(self, *args)


def test_flops_of_linear_and_conv_equal_the_formulas():
    linear = torch.nn.Linear(32, 48)
    trace = capture_trace(linear, (torch.empty(4, 10, 32),))
    (flops,) = ops_of(trace).query("flops > 0")["flops"]
    assert flops == 2 * 40 * 32 * 48  # addmm: 2 m k n

    conv = torch.nn.Conv2d(6, 8, kernel_size=3, stride=2, padding=1, groups=2, bias=False)
    trace = capture_trace(conv, (torch.empty(2, 6, 11, 11),))
    ops = ops_of(trace)
    (flops,) = ops.loc[ops["op"] == "aten.convolution", "flops"]
    assert flops == 2 * (2 * 8 * 6 * 6) * (6 // 2) * 3 * 3  # 2 x outputs x (in channels / groups) x kh x kw
    assert (ops.loc[ops["op"] != "aten.convolution", "flops"] == 0).all()

    # a training step: the backward of a linear layer is two products of the forward's size (input, weight)
    trace = capture_trace(torch.nn.Linear(32, 48, bias=False), (torch.empty(40, 32, requires_grad=True),),
                          training=True)
    ops = ops_of(trace)
    assert ops.loc[ops["phase"] == "forward", "flops"].sum() == 2 * 40 * 32 * 48
    assert ops.loc[ops["phase"] == "backward", "flops"].sum() == 2 * 2 * 40 * 32 * 48
    assert ops.loc[ops["phase"] == "optimizer", "flops"].sum() == 0


@pytest.mark.parametrize("causal", [False, True])
def test_flops_of_fused_attention_equal_the_formula_halved_when_causal(causal):
    b, h, s, d = 2, 3, 16, 8
    attend = Call(lambda self, q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal))
    qkv = tuple(torch.empty(b, h, s, d, requires_grad=True) for _ in range(3))
    ops = ops_of(capture_trace(attend, qkv, training=True))
    forward = 4 * b * h * s * s * d  # Q K^T and P V, 2 s^2 d each per head
    executed = forward / 2 if causal else forward  # a causal flash kernel skips the masked half
    (fwd,) = ops.loc[ops["op"] == "aten.scaled_dot_product_attention", "flops"]
    (bwd,) = ops.loc[ops["op"] == "aten._scaled_dot_product_flash_attention_backward", "flops"]
    assert fwd == executed
    assert bwd == 2.5 * executed  # five products: S recomputed, dP, dQ, dK, dV

    # queries shorter than keys: nothing is skipped
    q = torch.empty(b, h, 4, d)
    ops = ops_of(capture_trace(attend, (q, qkv[1].detach(), qkv[2].detach())))
    assert ops["flops"].sum() == 4 * b * h * 4 * s * d


@pytest.fixture(scope="module")
def gpt2_step():
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=97, n_positions=32)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    ids = torch.zeros(2, 16, dtype=torch.long)
    return capture_trace(transformers.GPT2LMHeadModel(config), {"input_ids": ids, "labels": ids}, training=True)


def test_op_index_counts_ops_in_trace_order_and_per_op_values_are_constant(gpt2_step):
    trace = gpt2_step
    assert {c: trace[c].dtype for c in OP_COLUMNS} == {c: np.dtype(t) for c, t in OP_COLUMNS.items()}
    persist = (trace["access"] == "persist").to_numpy()
    assert persist.any() and (trace.loc[persist, "op_index"] == -1).all()
    assert (trace.loc[persist, ["flops", "launches", "host_calls"]] == 0).all().all()
    index = trace.loc[~persist, "op_index"].to_numpy()
    assert index[0] == 0 and (np.diff(index) >= 0).all() and (np.diff(index) <= 1).all()  # 0, 1, 2, ... in order
    per_op = trace[~persist].groupby("op_index")[list(OP_COLUMNS)[1:] + ["op", "phase", "module"]].nunique()
    assert (per_op == 1).all().all()
    ops = ops_of(trace)
    assert (ops["launches"] >= 1).all() and (ops["host_calls"] >= 1).all()
    # the views, detaches and allocations dropped from the trace are host calls of the op after them
    assert ops["host_calls"].sum() > len(ops)
    grad = ops.groupby("phase")["grad_mode"].agg(["min", "max"])
    assert grad.loc["forward"].all() and grad.loc["backward"].all() and not grad.loc["optimizer"].any()


def test_an_inference_forward_records_no_grad_mode(gpt2_step):
    config = transformers.GPT2Config(n_layer=1, n_embd=64, n_head=4, vocab_size=97, n_positions=32)
    trace = capture_trace(transformers.GPT2LMHeadModel(config), {"input_ids": torch.zeros(1, 8, dtype=torch.long)})
    assert not trace["grad_mode"].any()
    assert len(ops_of(trace)) == trace["op_index"].max() + 1


def test_adamw_runs_as_torch_runs_it_with_host_step_counts_and_chunked_launches():
    """AdamW(foreach=True), not capturable: the step counts are host scalars (no recorded op), 8 foreach ops on
    the device lists, each launching the kernels multi_tensor_apply chunks them into."""
    mlp = torch.nn.Sequential(torch.nn.Linear(4096, 8192), torch.nn.Linear(8192, 4096))
    trace = capture_trace(mlp, (torch.empty(1, 4096),), training=True)
    ops = ops_of(trace)
    optimizer = ops[ops["phase"] == "optimizer"]
    assert list(optimizer["op"]) == ["aten._foreach_mul_", "aten._foreach_lerp_", "aten._foreach_mul_",
                                     "aten._foreach_addcmul_", "aten._foreach_sqrt", "aten._foreach_div_",
                                     "aten._foreach_add_", "aten._foreach_addcdiv_"]
    assert not trace["tensor_id"].str.contains("adamw.step").any()
    # chunks of 65,536 elements: 512 + 1 + 512 + 1 = 1,026 blocks, at most 320 per launch
    assert (optimizer["launches"] == 4).all()
    assert (ops.loc[ops["phase"] != "optimizer", "launches"] == 1).all()


def reference_launches(numels, depth, scalar_list=False):
    """torch's multi_tensor_apply loop (ATen/native/cuda/MultiTensorApply.cuh), chunk by chunk."""
    max_tensors = ((96, 64, 48, 36, 30) if scalar_list else (110, 64, 48, 36, 30))[depth - 1]
    launches = blocks = tensors = 0
    for numel in numels:
        if numel == 0:
            continue
        tensors += 1
        chunks = -(-numel // 65536)
        for chunk in range(chunks):
            blocks += 1
            if (tensors == max_tensors and chunk == chunks - 1) or blocks == 320:
                launches += 1
                blocks = 0
                tensors = 0 if chunk == chunks - 1 else 1
    return launches + (blocks > 0)


def test_multi_tensor_launches_follow_torch_and_the_measured_gpt2_optimizer():
    rng = np.random.default_rng(0)
    for _ in range(30):
        numels = rng.choice([0, 1, 100, 65536, 65537, 300 * 65536, 321 * 65536 + 5], size=rng.integers(1, 300))
        for depth in range(1, 6):
            for scalar_list in (False, True):
                assert multi_tensor_launches(numels, depth, scalar_list) == reference_launches(
                    numels.tolist(), depth, scalar_list)
    # GPT-2 small's parameters (the LM head tied): the H200 ran each of AdamW's 8 foreach ops as 7 launches
    from lab.analysis.fidelity import read_kernels

    measured = read_kernels(GROUND_TRUTH / "gpt2-train-b1-s512.csv")
    launches = measured["kernel"].str.contains("multi_tensor_apply_kernel").sum()
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    numels = [p.numel() for p in model.parameters()]
    assert len(numels) == 148 and launches == 56
    for depth, scalar_list in [(1, False), (2, False), (3, False), (1, True), (3, True)]:
        assert 8 * multi_tensor_launches(numels, depth, scalar_list) == launches


def test_measured_steps_reproduce_steps_jsonl():
    import lab
    from lab.analysis.fidelity import H200_CASES

    table = lab.measured_steps(GROUND_TRUTH)
    records = [json.loads(line) for line in (GROUND_TRUTH / "steps.jsonl").read_text().splitlines()]
    assert list(table["case"]) == list(H200_CASES) and len(records) == len(table)
    for record in records:
        row = table.set_index("case").loc[record["case"]]
        assert row["step_ms"] == record["step_ms"]
        assert row["peak_allocated_mb"] * 2**20 == record["peak_allocated_bytes"]
        assert row["allocated_before_mb"] * 2**20 == record["allocated_before_step"]
        assert row["params"] == record["params"] and row["torch"] == record["torch"]
    with pytest.raises(ValueError, match="steps.jsonl"):
        lab.measured_steps(GROUND_TRUTH / "missing")


def test_read_kernels_keeps_l2_bytes_and_the_grid():
    from lab.analysis.fidelity import read_kernels

    kernels = read_kernels(GROUND_TRUTH / "resnet50-fwd-b32.csv")
    assert len(kernels) == 347 and kernels["l2_bytes"].dtype == np.int64
    first = kernels.iloc[0]  # the first row of the CSV: cudnn::nchwToNhwcKernel
    assert (first["read_bytes"], first["write_bytes"], first["l2_bytes"]) == (9_650_432, 8_519_936, 81_068_992)
    assert first["grid"] == "(1568, 1, 32)"
    assert (kernels["l2_bytes"] >= kernels["read_bytes"]).all()


def test_the_gpt2_fidelity_case_builds_no_kv_cache():
    """workloads.py calls the language models with use_cache=False: the capture of its case writes no K/V cat
    and persists no cache (two layers, 64 tokens: the case's own arguments otherwise)."""
    from lab.analysis.fidelity import H200_CASES
    from lab.workloads.models import capture_model

    case = H200_CASES["gpt2-fwd-b1-s512"]
    assert case["use_cache"] is False and H200_CASES["llama7b-fwd-b1-s512"]["use_cache"] is False
    trace = capture_model(**{**case, "seq_length": 64, "num_layers": 2})
    assert trace.attrs["capture"]["use_cache"] is False
    assert not (trace["op"] == "aten.cat").any()
    persisted = trace.loc[trace["access"] == "persist", "op"]
    assert len(persisted) == 1  # the logits only
