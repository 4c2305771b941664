"""Named presets: real scale from configs in code, weight bytes checked against an independent count."""

import socket

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import lab  # noqa: E402
from lab.workloads.models import PRESETS, capture_model, packed_bytes  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during a capture test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "captures"))


def _gpt2(V=50257, P=1024, d=768, L=12):
    return V * d + P * d + L * (12 * d * d + 13 * d) + 2 * d  # lm_head tied to wte


def _bert(V=30522, P=512, d=768, L=12, types=2):
    embeddings = V * d + P * d + types * d + 2 * d
    head = d * d + d + 2 * d + V  # transform dense + LayerNorm + decoder bias (decoder tied)
    return embeddings + L * (12 * d * d + 13 * d) + head


def _llama(V, d, I, L, heads, kv_heads):
    head_dim = d // heads
    attention = 2 * d * d + 2 * d * kv_heads * head_dim
    return 2 * V * d + L * (attention + 3 * d * I + 2 * d) + d


def _mixtral(V=32000, d=4096, I=14336, L=32, heads=32, kv_heads=8, experts=8):
    head_dim = d // heads
    attention = 2 * d * d + 2 * d * kv_heads * head_dim
    return 2 * V * d + L * (attention + experts * d + experts * 3 * d * I + 2 * d) + d


def _vit(d=768, L=12, patch=16, image=224, labels=2):
    patches = (image // patch) ** 2
    return 3 * patch * patch * d + d + d + (patches + 1) * d + L * (12 * d * d + 13 * d) + 2 * d + d * labels + labels


def _resnet50(labels=2):
    def conv(cin, cout, k):
        return cin * cout * k * k

    total = conv(3, 64, 7) + 2 * 64
    cin = 64
    for out, depth in zip([256, 512, 1024, 2048], [3, 4, 6, 3]):
        mid = out // 4
        for block in range(depth):
            total += conv(cin, mid, 1) + conv(mid, mid, 3) + conv(mid, out, 1) + 2 * (mid + mid + out)
            if block == 0:
                total += conv(cin, out, 1) + 2 * out  # projection shortcut
            cin = out
    return total + 2048 * labels + labels


def _mlp(h=4096, L=8, f=4):
    return L * (h * f * h + f * h + f * h * h + h)


PARAMETERS = {
    "gpt2": _gpt2(),
    "bert-base": _bert(),
    "llama-2-7b": _llama(32000, 4096, 11008, 32, 32, 32),
    "llama-2-70b": _llama(32000, 8192, 28672, 80, 64, 8),
    "mixtral-8x7b": _mixtral(),
    "vit-base": _vit(),
    "resnet-50": _resnet50(),
    "mlp": _mlp(),
}


def test_capture_is_reachable_from_lab_without_loading_torch_at_import():
    assert lab.capture_model is capture_model


def test_every_preset_is_counted():
    assert set(PARAMETERS) == set(PRESETS)
    assert PARAMETERS["llama-2-7b"] == 6_738_415_616 and PARAMETERS["gpt2"] == 124_439_808


# embedding tables read only by a gather (not tied to an output projection): (rows, width) per preset; a
# gather of 32 tokens reads 32 of their rows (all of them when the table is smaller), never the whole table
GATHERED_ONLY = {
    "gpt2": [(1024, 768)],  # wpe; wte is tied to lm_head, which reads it all
    "bert-base": [(512, 768), (2, 768)],  # position and token-type tables; word embeddings tied to the decoder
    "llama-2-7b": [(32000, 4096)],
    "llama-2-70b": [(32000, 8192)],
    "mixtral-8x7b": [(32000, 4096)],
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_unique_weight_bytes_are_parameters_times_bytes(name):
    trace = capture_model(name, batch_size=1, seq_length=32, dtype="bf16", routing="uniform")
    weights = trace[trace["kind"] == "weight"].drop_duplicates("tensor_id")
    unread = sum((rows - min(rows, 32)) * width for rows, width in GATHERED_ONLY.get(name, []))
    assert round(weights["size_mb"].sum() * 2**20) == (PARAMETERS[name] - unread) * 2
    assert (trace["model_type"] == PRESETS[name].model_type).all()


def test_activation_sizes_follow_batch_and_sequence():
    small = capture_model("llama-2-7b", batch_size=1, seq_length=64, num_hidden_layers=2)
    large = capture_model("llama-2-7b", batch_size=2, seq_length=64, num_hidden_layers=2)
    assert small["op"].tolist() == large["op"].tolist()
    ratio = large["size_mb"].to_numpy() / small["size_mb"].to_numpy()
    weights = ((small["kind"] == "weight") & (small["op"] != "aten.embedding")).to_numpy()
    assert (ratio[weights] == 1).all()
    gathered = ((small["kind"] == "weight") & (small["op"] == "aten.embedding")).to_numpy()
    assert (ratio[gathered] == 2).all()  # one table row per token
    mm_out = ((small["op"] == "aten.mm") & (small["access"] == "write")).to_numpy()
    assert (ratio[mm_out] == 2).all()


def test_moe_reads_only_the_experts_tokens_are_routed_to():
    uniform = capture_model("mixtral-8x7b", batch_size=1, seq_length=64, num_hidden_layers=2)
    experts = uniform[uniform["tensor_id"].str.contains(r"experts\.gate_up_proj\[")]
    assert experts.groupby("layer")["tensor_id"].nunique().tolist() == [8, 8]
    chosen = capture_model("mixtral-8x7b", batch_size=1, seq_length=64, num_hidden_layers=2,
                           routing=[1, 1, 0, 0, 0, 0, 0, 0])
    read = set(chosen.loc[chosen["tensor_id"].str.contains("experts"), "tensor_id"])
    assert read == {f"model.layers.{l}.mlp.experts.{w}[{e}]" for l in (0, 1) for w in ("gate_up_proj", "down_proj")
                    for e in (0, 1)}
    one_expert = 3 * 4096 * 14336 * 2 / 2**20
    assert chosen.loc[chosen["tensor_id"].str.endswith("gate_up_proj[0]"), "size_mb"].iloc[0] == 2 * one_expert / 3
    skewed = capture_model("mixtral-8x7b", batch_size=1, seq_length=64, num_hidden_layers=2, routing="zipf",
                           routing_skew=3.0)
    assert not skewed.equals(uniform)


def test_weight_dtype_packs_linear_weights_only():
    bf16 = capture_model("llama-2-7b", batch_size=1, seq_length=16, num_hidden_layers=1)
    nf4 = capture_model("llama-2-7b", batch_size=1, seq_length=16, num_hidden_layers=1, weight_dtype="nf4")
    int8 = capture_model("llama-2-7b", batch_size=1, seq_length=16, num_hidden_layers=1, weight_dtype="int8")
    q = "model.layers.0.self_attn.q_proj.weight"
    size = {t: frame.loc[frame["tensor_id"] == q, "size_mb"].iloc[0] * 2**20 for t, frame in
            (("bf16", bf16), ("nf4", nf4), ("int8", int8))}
    elements = 4096 * 4096
    assert size["bf16"] == 2 * elements
    assert size["nf4"] == elements / 2 + 4 * elements / 64
    assert size["int8"] == elements + 4 * 4096
    embed = "model.embed_tokens.weight"
    assert (nf4.loc[nf4["tensor_id"] == embed, "size_mb"] == bf16.loc[bf16["tensor_id"] == embed, "size_mb"]).all()
    assert nf4.loc[nf4["tensor_id"] == q, "dtype"].iloc[0] == "nf4"
    assert packed_bytes(np.array([128]), np.array([64]), "fp32").tolist() == [512]


def test_a_repeated_capture_comes_from_the_cache(tmp_path):
    first = capture_model("gpt2", batch_size=1, seq_length=16, n_layer=2)
    files = list((tmp_path / "captures").glob("gpt2-*.parquet"))
    assert len(files) == 1
    again = capture_model("gpt2", batch_size=1, seq_length=16, n_layer=2)
    pd.testing.assert_frame_equal(first, again)
    other = capture_model("gpt2", batch_size=2, seq_length=16, n_layer=2)
    assert len(list((tmp_path / "captures").glob("gpt2-*.parquet"))) == 2 and not other.equals(first)


def test_a_cached_capture_is_read_back_without_torch_or_transformers(tmp_path):
    """A new process (a report's kernel, the app's) reading a capture cached before imports neither torch nor
    transformers (seconds each); the same call on a configuration not cached yet captures it."""
    import subprocess
    import sys

    first = capture_model("gpt2", batch_size=1, seq_length=16, n_layer=1)
    script = ("import sys, lab\n"
              "trace = lab.capture_model('gpt2', batch_size=1, seq_length=16, num_layers=1)\n"
              "print(len(trace), trace.attrs['capture']['name'], 'torch' in sys.modules, "
              "'transformers' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(len(first)), "gpt2", "False", "False"], done.stdout
    assert len(list((tmp_path / "captures").glob("gpt2-*.parquet"))) == 1  # read back, not captured again


def test_a_captured_trace_simulates_with_reads_and_writes():
    trace = capture_model("gpt2", batch_size=1, seq_length=64, training=True, n_layer=2)
    m = lab.simulate(trace, "LRU", capacity_mb=32).metrics
    assert m["dram_writes_mb"] > 0 and m["dead_drops"] > 0
    marks = int((trace["access"] == "persist").sum())  # rows that say what must reach DRAM, not accesses
    assert marks > 0 and m["accesses"] == len(trace) - marks
    assert m["cache_hits"] + m["write_allocations"] + m["dram_accesses"] == m["accesses"]
    assert m["persist_writeback_mb"] > 0  # updated weights and optimizer state still dirty at the end


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "gpt-5"}, r"unknown model preset 'gpt-5'; known: \['gpt2', 'bert-base'"),
        ({"name": "gpt2", "batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"name": "gpt2", "seq_length": -5}, "seq_length must be an integer >= 1"),
        ({"name": "gpt2", "dtype": "fp8"}, r"dtype must be one of \['bf16', 'fp16', 'fp32'\]"),
        ({"name": "gpt2", "dtype": ["bf16"]}, r"dtype must be one of .*, got \['bf16'\]"),  # not a TypeError of a dict
        ({"name": "gpt2", "weight_dtype": "int4"}, r"weight_dtype must be one of"),
        ({"name": "gpt2", "routing": "random"}, "routing must be one of"),
        ({"name": "gpt2", "n_layers": 2}, "unknown override 'n_layers'"),
        ({"name": "gpt2", "persist": ("logits",)}, "persist must name only"),
        ({"name": "gpt2", "training": True, "use_cache": True}, "use_cache must be False"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        capture_model(**kwargs)
    with pytest.raises(TypeError, match="use_cache must be a bool or None"):
        capture_model("gpt2", use_cache="yes")


MIB = 2**20


def test_preset_views_and_gathers_count_the_bytes_they_touch():
    gpt2 = capture_model("gpt2", batch_size=1, seq_length=512, num_layers=1, use_cache=False)
    qkv = gpt2[(gpt2["op"] == "aten.scaled_dot_product_attention") & (gpt2["access"] == "read")
               & gpt2["tensor_id"].str.startswith("addmm#1")]
    assert (qkv["size_mb"] == 0.75).all() and len(qkv) == 3  # 512 x 768 bf16 each, not the 2.25 MiB storage
    llama = capture_model("llama-2-7b", batch_size=1, seq_length=512, num_layers=1)
    gather = llama[(llama["op"] == "aten.embedding") & (llama["kind"] == "weight")]
    assert gather["size_mb"].tolist() == [512 * 4096 * 2 / MIB]  # 4 MiB: 512 rows, not the 250 MiB table


def test_moe_routes_each_token_to_top_k_experts_and_moves_only_their_rows():
    tokens, d, k = 64, 4096, 2
    trace = capture_model("mixtral-8x7b", batch_size=1, seq_length=tokens, num_hidden_layers=1)
    experts = trace[trace["module"] == "model.layers.0.mlp.experts"]
    gathers = experts[(experts["op"] == "aten.index_select") & (experts["access"] == "read")
                      & (experts["shape"].str.endswith(f", {d})"))]
    assert round(gathers["size_mb"].sum() * MIB) == tokens * k * d * 2  # each token's row, once per expert
    scatter = experts[(experts["op"] == "aten.index_add_") & (experts["access"] == "write")]
    assert round(scatter["size_mb"].sum() * MIB) == tokens * k * d * 2
    hidden = gathers["tensor_id"].str.replace(r"\[[^\[\]]*\]$", "", regex=True).unique()
    assert len(hidden) == 1  # one tensor (the normalized hidden states), split in parts by expert pairs
    parts = gathers.drop_duplicates("tensor_id")
    assert round(parts["size_mb"].sum() * MIB) == tokens * d * 2  # every token read, by exactly top_k experts
    chosen = set()
    for seed in range(6):  # one token (a decode step), uniform routing: which 2 of 8 experts depends on the seed
        step = capture_model("mixtral-8x7b", batch_size=1, seq_length=1, num_hidden_layers=1, seed=seed)
        read = step.loc[step["tensor_id"].str.contains(r"experts\.down_proj\["), "tensor_id"].unique()
        assert len(read) == 2
        chosen.add(tuple(sorted(read)))
    assert len(chosen) > 1


def test_a_training_step_builds_no_kv_cache():
    step = capture_model("gpt2", batch_size=1, seq_length=64, training=True, num_layers=1)
    kv_cat = (step["op"] == "aten.cat") & step["module"].str.endswith(".attn") & (step["phase"] == "forward")
    assert not kv_cat.any()  # (a cat of position ids outside the layers is not a cache)
    forward = capture_model("gpt2", batch_size=1, seq_length=64, num_layers=1)
    persist = forward[forward["op"] == "persist"]
    assert persist["tensor_id"].str.startswith("cat#").sum() == 2  # keys and values: the cache persists
    cache_writes = (forward["op"] == "aten.cat") & forward["module"].str.endswith(".attn") & (forward["access"] == "write")
    assert round(forward.loc[cache_writes, "size_mb"].sum() * MIB) == 2 * 64 * 768 * 2  # keys and values, bf16
    plain = capture_model("gpt2", batch_size=1, seq_length=64, num_layers=1, use_cache=False)
    assert not ((plain["op"] == "aten.cat") & plain["module"].str.endswith(".attn")).any()
    with pytest.raises(ValueError, match="use_cache must be False"):
        capture_model("gpt2", training=True, use_cache=True)


def test_gpt2_saves_korthikanti_activations_per_layer():
    """Korthikanti et al. 2022, eq. 1 with fused attention: 34*s*b*h bytes saved per layer in 16-bit
    (attention 11sbh: LN1 output 2, Q and K 4, V 2, output-projection input 2, dropout mask 1; MLP 19sbh:
    LN2 output 2, GeLU input 8, GeLU output 8, dropout mask 1; layer-norm inputs 4), each deviation below."""
    b, s, h, heads = 2, 128, 768, 12
    trace = capture_model("gpt2", batch_size=b, seq_length=s, training=True, num_layers=2)
    read_back = set(trace.loc[(trace["phase"] == "backward") & (trace["access"] == "read"), "tensor_id"])
    written = trace[(trace["phase"] == "forward") & (trace["access"] == "write") & (trace["kind"] == "activation")]
    for layer in (0, 1):
        saved = written[(written["layer"] == layer) & written["tensor_id"].isin(read_back)].drop_duplicates("tensor_id")
        expected = (34 * s * b * h
                    # HF's gelu_new is an eager composite 0.5*x*(1+tanh(c*(x+0.044715x^3))): autograd also keeps
                    # 0.5*x, the tanh output and 1+tanh, 4h wide each (a fused GeLU keeps only its input)
                    + 3 * 8 * s * b * h
                    # the fused attention's log-sum-exp: fp32, one per head and query (the paper's 5as^2b term
                    # is gone: scores and probabilities are never stored)
                    + 4 * heads * s * b
                    # mean and reciprocal standard deviation of both layer norms, fp32 per token
                    + 2 * 2 * 4 * s * b)
        # the layer-norm inputs: LN2's is this layer's residual sum, LN1's is counted where it is written (the
        # previous layer's residual sum, or the embedding dropout for layer 0), one 2sbh tensor per layer either way
        assert round(saved["size_mb"].sum() * MIB) == expected
        masks = saved[saved["dtype"] == "bool"]
        assert round(masks["size_mb"].sum() * MIB) == 2 * s * b * h  # the two dropout masks, 1 byte per element


def test_with_room_for_everything_only_weights_inputs_and_state_come_from_dram():
    # data produced on chip, read through views (Q, K, V, rotary halves, expert rows) or not, never misses
    for name, training in (("llama-2-7b", False), ("gpt2", True)):
        trace = capture_model(name, batch_size=1, seq_length=128, training=training, num_layers=2, persist=())
        result = lab.simulate(trace, "LRU", capacity_mb=100_000)
        missed = trace[~result.hit & (trace["access"] == "read")]
        assert set(missed["kind"]) <= {"weight", "input", "buffer", "optimizer_state"}, name
        assert missed["tensor_id"].is_unique  # each once: compulsory misses only
