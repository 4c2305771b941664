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


def tiny_gpt2(n_layer=1):
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=64, n_head=4, vocab_size=97, n_positions=32)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def test_a_view_is_charged_its_bytes_and_shares_identity_with_the_data_it_views(monkeypatch):
    import lab

    trace = capture_trace(tiny_gpt2().eval(), {"input_ids": torch.zeros(2, 16, dtype=torch.long), "use_cache": False})
    qkv = trace[(trace["module"] == "transformer.h.0.attn.c_attn") & (trace["access"] == "write")]
    part = 2 * 16 * 64 * 4  # batch x tokens x width, fp32: one of Q, K, V
    assert qkv["tensor_id"].tolist() == ["addmm#1[part 0]", "addmm#1[part 1]", "addmm#1[part 2]"]
    assert (qkv["size_mb"] * 2**20).tolist() == [part] * 3  # the write of the fused projection, in its parts
    sdpa = trace[(trace["op"] == "aten.scaled_dot_product_attention") & trace["tensor_id"].str.startswith("addmm#1")]
    assert sorted(sdpa["tensor_id"]) == sorted(qkv["tensor_id"])  # Q, K, V views read what c_attn wrote
    assert (sdpa["size_mb"] * 2**20).tolist() == [part] * 3  # each view its own bytes, not the storage's span
    assert (trace.groupby("tensor_id")["size_mb"].nunique() == 1).all()  # one size per id, as lab.simulate needs
    result = lab.simulate(trace, "LRU", capacity_mb=16)
    assert result.hit[sdpa.index.to_numpy()].all()  # data just produced on chip, read through a view: hits

    class Halves(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 32)

        def forward(self, x):
            a, b = self.lin(x).chunk(2, dim=-1)  # two strided halves of each row
            return a * b

    halves = capture_trace(Halves(), (torch.ones(4, 8),))
    written = halves[(halves["op"] == "aten.addmm") & (halves["access"] == "write")]
    read = halves[(halves["op"] == "aten.mul") & (halves["access"] == "read")]
    assert read["tensor_id"].tolist() == written["tensor_id"].tolist() == ["addmm#1[part 0]", "addmm#1[part 1]"]
    assert (read["size_mb"] * 2**20).tolist() == [4 * 16 * 4] * 2

    from lab.workloads import capture

    monkeypatch.setattr(capture, "_MAX_BLOCKS", 2)  # too fragmented to partition: each view apart, its own bytes
    apart = capture_trace(Halves(), (torch.ones(4, 8),))
    read = apart[(apart["op"] == "aten.mul") & (apart["access"] == "read")]
    assert read["tensor_id"].tolist() == ["addmm#1[view 1]", "addmm#1[view 2]"]
    assert (read["size_mb"] * 2**20).tolist() == [4 * 16 * 4] * 2
    assert apart.loc[apart["op"] == "aten.addmm", "tensor_id"].iloc[-1] == "addmm#1"


def test_an_embedding_gather_reads_only_the_rows_of_its_tokens():
    model = tiny_llama()
    few = capture_trace(model, {"input_ids": torch.zeros(2, 16, dtype=torch.long)})
    gather = few[(few["op"] == "aten.embedding") & (few["kind"] == "weight")]
    # 32 tokens: at most 32 distinct rows of the 97 x 64 fp32 table (the indices are fake: an upper bound)
    assert gather["tensor_id"].tolist() == ["model.embed_tokens.weight[0:32]"]
    assert gather["size_mb"].iloc[0] * 2**20 == 32 * 64 * 4
    many = capture_trace(model, {"input_ids": torch.zeros(2, 64, dtype=torch.long)})
    gather = many[(many["op"] == "aten.embedding") & (many["kind"] == "weight")]
    assert gather["tensor_id"].tolist() == ["model.embed_tokens.weight"]  # 128 tokens, 97 rows: the whole table
    assert gather["size_mb"].iloc[0] * 2**20 == 97 * 64 * 4


def test_training_attention_is_a_fused_forward_and_backward():
    b, s, heads, width = 2, 16, 4, 64
    ids = torch.zeros(b, s, dtype=torch.long)
    trace = capture_trace(tiny_gpt2(n_layer=2), {"input_ids": ids, "labels": ids}, training=True)
    forward = trace[trace["op"] == "aten.scaled_dot_product_attention"]
    backward = trace[trace["op"] == "aten._scaled_dot_product_flash_attention_backward"]
    assert set(backward["layer"]) == {0, 1} and set(backward["phase"]) == {"backward"}
    for layer in (0, 1):
        fwd = forward[forward["layer"] == layer]
        bwd = backward[backward["layer"] == layer]
        q, k, v = fwd[fwd["access"] == "read"]["tensor_id"].tolist()[:3]
        out, lse = fwd[fwd["access"] == "write"]["tensor_id"].tolist()
        lse_bytes = fwd.loc[fwd["tensor_id"] == lse, "size_mb"].iloc[0] * 2**20
        assert lse_bytes == b * heads * s * 4  # the log-sum-exp per query row, fp32
        reads = bwd[bwd["access"] == "read"]
        assert reads["tensor_id"].tolist()[:4] == [q, k, v, out] and reads["tensor_id"].iloc[5] == lse
        assert reads["kind"].iloc[4] == "gradient"  # dO
        writes = bwd[bwd["access"] == "write"]
        assert len(writes) == 3 and (writes["size_mb"] * 2**20 == b * s * width * 4).all()  # dQ, dK, dV
        assert writes["kind"].eq("gradient").all()
    # no unfused math path: no s x s scores or probabilities, nothing attention-related outside a layer
    assert not set(trace["op"]) & {"aten.bmm", "aten._softmax", "aten._softmax_backward_data", "aten.baddbmm"}
    attention = trace[trace["module"].str.contains(r"\.attn")]
    assert (attention["layer"] >= 0).all()
    never_written = set(trace.loc[trace["phase"] == "backward", "tensor_id"]) - set(
        trace.loc[trace["access"] == "write", "tensor_id"]) - set(trace.loc[trace["kind"].isin(["weight", "input"]),
                                                                             "tensor_id"])
    assert not never_written  # every activation the backward reads was written by the step


def test_kernels_move_what_a_gpu_kernel_moves():
    ids = torch.zeros(2, 16, dtype=torch.long)
    trace = capture_trace(tiny_gpt2(), {"input_ids": ids, "labels": ids}, training=True)
    masks = trace[(trace["op"] == "aten.native_dropout") & (trace["dtype"] == "bool")]
    assert len(masks) == 3  # embedding, attention output and MLP dropout; attention probabilities: in the kernel
    assert (masks["size_mb"] * 2**20 == 2 * 16 * 64).all()  # 1 byte per element
    assert not set(trace["op"]) & {"aten.bernoulli_", "aten.empty_like", "aten.div_"}
    sdpa = trace[(trace["op"] == "aten.scaled_dot_product_attention") & (trace["access"] == "read")]
    assert len(sdpa) == 3  # Q, K, V: causal through is_causal, as on a GPU; no 16 x 16 mask built or read
    assert not ((trace["dtype"] == "bool") & trace["shape"].str.endswith("16, 16)")).any()
    assert not ((trace["op"] == "aten.cat") & (trace["phase"] == "forward")).any()  # no KV cache (use_cache off)

    class Fill(torch.nn.Module):
        def forward(self, x):
            return torch.zeros_like(x) + torch.empty_like(x).fill_(1.0)

    fill = capture_trace(Fill(), (torch.ones(4, 8),), persist=())
    assert fill["op"].tolist() == ["aten.zeros_like", "aten.fill_", "aten.add", "aten.add", "aten.add"]
    assert fill["access"].tolist() == ["write", "write", "read", "read", "write"]  # nothing reads x


def test_persistent_results_are_read_once_more_at_the_end():
    model = tiny_gpt2(n_layer=2)
    ids = torch.zeros(1, 8, dtype=torch.long)
    trace = capture_trace(model.eval(), {"input_ids": ids, "use_cache": True})
    persist = trace[trace["op"] == "persist"]
    assert persist.index.tolist() == list(range(len(trace) - len(persist), len(trace)))  # after everything
    assert (persist["access"] == "persist").all()
    logits, *cache = persist["tensor_id"].tolist()
    assert persist["size_mb"].iloc[0] * 2**20 == 8 * 97 * 4 and len(cache) == 4  # keys and values of 2 layers
    assert (persist["size_mb"].iloc[1:] * 2**20 == 8 * 64 * 4).all()
    written = trace[trace["access"] == "write"]
    assert set(persist["tensor_id"]) <= set(written["tensor_id"])
    assert set(capture_trace(model, {"input_ids": ids, "use_cache": True}, persist=("outputs",))
               .query("op == 'persist'")["tensor_id"]) == {logits}
    assert not (capture_trace(model, {"input_ids": ids}, persist=())["op"] == "persist").any()

    step = capture_trace(model, {"input_ids": ids, "labels": ids, "use_cache": False}, training=True)
    persist = step[step["op"] == "persist"]
    base = persist["tensor_id"].str.replace(r"\[[^\[\]]*\]$", "", regex=True)
    for name in dict(model.named_parameters()):
        for prefix in ("", "adamw.exp_avg:", "adamw.exp_avg_sq:"):
            assert prefix + name in set(base), f"{prefix}{name} does not persist"
    assert set(persist["phase"]) == {"optimizer"} and not base.str.startswith("grad:").any()
    last = step.drop_duplicates("tensor_id", keep="last")
    assert (last.loc[last["tensor_id"].isin(persist["tensor_id"]), "op"] == "persist").all()
    with pytest.raises(ValueError, match="persist must name only"):
        capture_trace(model, {"input_ids": ids}, persist=("logits",))
    with pytest.raises(TypeError, match="persist must be a collection"):
        capture_trace(model, {"input_ids": ids}, persist=3)


def test_each_token_goes_to_exactly_top_k_experts():
    from lab.workloads.capture import route_tokens

    for routing, tokens in (("uniform", 10), ("zipf", 37), ([5, 1, 1, 0, 0, 3, 0, 1], 64)):
        rng = np.random.default_rng(3)
        counts = routing_counts(8, tokens, 2, routing=routing, skew=1.5, rng=rng)
        assigned = route_tokens(counts, tokens, 2, rng)
        assert [len(rows) for rows in assigned] == counts.tolist()
        per_token = np.bincount(np.concatenate(assigned), minlength=tokens)
        assert (per_token == 2).all()  # exactly top_k, and never the same expert twice (rows are unique)
        assert all(len(np.unique(rows)) == len(rows) for rows in assigned)
    picked = {tuple(np.flatnonzero(routing_counts(8, 1, 2, rng=np.random.default_rng(seed))))
              for seed in range(8)}
    assert len(picked) > 1  # one token, even shares: the seed decides, not always experts 0 and 1
    with pytest.raises(ValueError, match="counts must hold 4"):
        route_tokens(np.array([3, 1]), 2, 2)


def test_batch_norm_running_statistics_are_updated_in_training_and_persist():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    trace = capture_trace(model, (torch.ones(2, 3, 8, 8),), training=True)
    for stat in ("1.running_mean", "1.running_var"):
        rows = trace[trace["tensor_id"] == stat]
        assert rows["access"].tolist()[:2] == ["read", "write"]  # read-modify-write by the batch-norm kernel
        assert rows["op"].iloc[-1] == "persist" and (rows["size_mb"] * 2**20 == 4 * 4).all()
    inference = capture_trace(model, (torch.ones(2, 3, 8, 8),))
    assert not ((inference["kind"] == "buffer") & (inference["access"] == "write")).any()
