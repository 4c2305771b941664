"""lab.capture: what a real model's code reads and writes, on fake, meta and real tensors."""

import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lab.workloads.capture import CaptureError, capture_trace, routing_counts  # noqa: E402


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during a capture test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def tiny_llama():
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=97,
                                      max_position_embeddings=64)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def test_fake_and_real_cpu_captures_agree():
    model = tiny_llama()
    ids = torch.randint(0, 97, (2, 16))
    real = capture_trace(model, {"input_ids": ids}, device="real")
    fake = capture_trace(model, {"input_ids": ids}, device="fake")
    meta = capture_trace(model, {"input_ids": ids}, device="meta")
    columns = ["tensor_id", "op", "access", "size_mb", "kind", "module"]
    assert len(real) > 100
    assert real[columns].values.tolist() == fake[columns].values.tolist() == meta[columns].values.tolist()


def test_views_move_no_data_and_attention_is_one_op():
    trace = capture_trace(tiny_llama(), {"input_ids": torch.zeros(1, 8, dtype=torch.long)})
    ops = set(trace["op"])
    assert not ops & {"aten.view", "aten._unsafe_view", "aten.t", "aten.transpose", "aten.expand", "aten.detach",
                      "aten.lift_fresh", "aten.split"}
    assert not any(op.startswith("prim.") for op in ops)
    sdpa = trace[trace["op"] == "aten.scaled_dot_product_attention"]
    assert sdpa["layer"].tolist().count(0) >= 4  # reads q, k, v, writes the output in layer 0
    assert "aten._safe_softmax" not in ops and "aten.bmm" not in ops


def test_identity_is_the_storage_region_and_tied_weights_are_one_tensor():
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16)
    model = transformers.GPT2LMHeadModel(config).eval()
    trace = capture_trace(model, {"input_ids": torch.zeros(1, 8, dtype=torch.long)})
    weights = trace[trace["kind"] == "weight"]
    assert not weights["tensor_id"].str.startswith("lm_head.weight").any()  # tied to the token embedding
    # the gather reads the 8 rows of the 8 tokens; the output projection reads the whole table: both parts
    gathered = weights[weights["tensor_id"] == "transformer.wte.weight[0:8]"]
    rest = weights[weights["tensor_id"] == "transformer.wte.weight[8:50]"]
    assert gathered["op"].tolist() == ["aten.embedding", "aten.mm"] and rest["op"].tolist() == ["aten.mm"]
    assert gathered["size_mb"].tolist() == [8 * 32 * 4 / 2**20] * 2 and rest["size_mb"].iloc[0] * 2**20 == 42 * 32 * 4


def test_each_access_has_module_layer_phase_dtype_and_shape():
    trace = capture_trace(tiny_llama(), {"input_ids": torch.zeros(1, 8, dtype=torch.long)})
    q = trace[trace["tensor_id"] == "model.layers.1.self_attn.q_proj.weight"].iloc[0]
    assert q["module"] == "model.layers.1.self_attn.q_proj" and q["layer"] == 1
    assert q["phase"] == "forward" and q["access"] == "read" and q["dtype"] == "float32"
    assert q["size_mb"] * 2**20 == 64 * 64 * 4
    assert set(trace["phase"]) == {"forward"}
    assert trace["reuse_distance"].isna().sum() == trace["tensor_id"].nunique()


def test_training_step_reads_and_writes_every_parameter_and_makes_gradients():
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16)
    model = transformers.GPT2LMHeadModel(config)
    ids = torch.zeros(2, 8, dtype=torch.long)
    trace = capture_trace(model, {"input_ids": ids, "labels": ids}, training=True)
    params = dict(model.named_parameters())
    assert model.training  # the module's mode is restored
    assert set(trace["phase"]) == {"forward", "backward", "optimizer"}
    base = trace["tensor_id"].str.replace(r"\[[^\[\]]*\]$", "", regex=True)  # a part (rows of a table): its tensor
    later = base[trace["phase"].isin(["backward", "optimizer"]) & (trace["access"] == "read")]
    updated = base[(trace["phase"] == "optimizer") & (trace["access"] == "write") & (trace["kind"] == "weight")]
    for name, p in params.items():
        assert name in set(later), f"{name} not read after the forward"
        assert name in set(updated), f"{name} not written by the optimizer"
        parts = trace[(base == name) & (trace["phase"] == "optimizer") & (trace["access"] == "write")]
        assert round(parts.drop_duplicates("tensor_id")["size_mb"].sum() * 2**20) == p.nbytes
    grads = trace[trace["tensor_id"].str.startswith("grad:")].drop_duplicates("tensor_id")
    assert set(grads["tensor_id"]) == {f"grad:{n}" for n in params}
    for _, g in grads.iterrows():
        assert g["size_mb"] * 2**20 == params[g["tensor_id"][5:]].nbytes
    states = trace[trace["kind"] == "optimizer_state"]
    assert {f"adamw.exp_avg:{n}" for n in params} <= set(states["tensor_id"])
    assert any(op.startswith("aten._foreach_") for op in trace.loc[trace["phase"] == "optimizer", "op"])


def test_a_model_fake_tensors_cannot_run_names_the_op_and_suggests_meta():
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x * x.sum().item()

    with pytest.raises(CaptureError, match=r"_local_scalar_dense.*device='meta'"):
        capture_trace(DataDependent(), (torch.ones(3),))
    with pytest.raises(ValueError, match="device must be 'fake', 'meta' or 'real'"):
        capture_trace(DataDependent(), (torch.ones(3),), device="gpu")


def test_routing_counts():
    uniform = routing_counts(8, tokens=10, top_k=2)
    assert uniform.sum() == 20 and uniform.max() - uniform.min() <= 1
    skewed = routing_counts(8, tokens=100, top_k=2, routing="zipf", skew=2.0, rng=np.random.default_rng(1))
    assert skewed.sum() == 200 and skewed.max() == 100  # capped: a token picks an expert once
    histogram = routing_counts(4, tokens=50, top_k=2, routing=[3, 1, 0, 0])
    assert histogram.tolist() == [50, 50, 0, 0]
    with pytest.raises(ValueError, match="routing histogram must hold 4"):
        routing_counts(4, tokens=5, top_k=1, routing=[1, 2])
    with pytest.raises(ValueError, match="routing must be"):
        routing_counts(4, tokens=5, top_k=1, routing="random")
