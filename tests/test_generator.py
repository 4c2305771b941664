import json

import numpy as np
import pandas as pd
import pytest

import lab
from lab.workloads.generator import DEFAULT_DIMS, implied_sizes_mb


def test_seed_example_has_the_seeds_size_and_scale():
    trace = lab.generate_trace("Transformer", num_layers=12, batch_size=32, seq_length=128, reuse_probability=0.3)
    assert 400 <= len(trace) <= 750  # the seed: about 576 accesses
    assert set(trace["size_mb"].unique()) == {2.0, 8.0, 16.0, 32.0}
    assert list(trace.columns) == ["tensor_id", "size_mb", "reuse_distance", "stride", "op", "model_type", "layer",
                                   "kind", "access"]
    assert (trace["model_type"] == "Transformer").all()
    assert sorted(trace["layer"].unique()) == list(range(12))


@pytest.mark.parametrize("model_type", ["transformer", "CNN", "mlp", "MoE"])
def test_same_seed_same_trace_and_other_seed_other_trace(model_type):
    a = lab.generate_trace(model_type, num_layers=4, seed=3)
    b = lab.generate_trace(model_type, num_layers=4, seed=3)
    c = lab.generate_trace(model_type, num_layers=4, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


@pytest.mark.parametrize("model_type", lab.MODEL_TYPES)
def test_reuse_distance_is_other_accesses_since_the_previous_access(model_type):
    trace = lab.generate_trace(model_type, num_layers=3)
    last = {}
    for i, tensor in enumerate(trace["tensor_id"]):
        expected = i - last[tensor] - 1 if tensor in last else np.nan
        np.testing.assert_equal(trace["reuse_distance"].iloc[i], expected)
        last[tensor] = i


def _sizes(trace):
    return trace.drop_duplicates("tensor_id").set_index("tensor_id")[["size_mb", "kind"]]


@pytest.mark.parametrize("model_type", lab.MODEL_TYPES)
def test_doubling_batch_doubles_activations_not_weights(model_type):
    small = _sizes(lab.generate_trace(model_type, num_layers=4, batch_size=8, reuse_probability=0.0))
    large = _sizes(lab.generate_trace(model_type, num_layers=4, batch_size=16, reuse_probability=0.0))
    ratio = large["size_mb"] / small["size_mb"]
    weights = small["kind"] == "weight"
    assert (ratio[weights] == 1).all()
    data = ~weights & ~small.index.str.startswith("routing_") & ~small.index.str.startswith("dispatch_")
    assert (ratio[data] == 2).all()


def test_sequence_length_scales_activations_linearly_and_attention_quadratically():
    short = _sizes(lab.generate_trace("Transformer", num_layers=2, seq_length=64, reuse_probability=0.0))
    long = _sizes(lab.generate_trace("Transformer", num_layers=2, seq_length=128, reuse_probability=0.0))
    ratio = long["size_mb"] / short["size_mb"]
    assert ratio["Q_0"] == 2 and ratio["F_1"] == 2
    assert ratio["S_0"] == 4 and ratio["P_1"] == 4
    assert ratio["Wq_0"] == 1


def test_sizes_follow_the_dimensions():
    trace = lab.generate_trace("Transformer", num_layers=1, batch_size=2, seq_length=16, reuse_probability=0.0,
                               hidden_size=64, num_heads=4, ffn_mult=4, dtype_bytes=4)
    size_bytes = _sizes(trace)["size_mb"] * 2**20
    assert size_bytes["Wq_0"] == 64 * 64 * 4
    assert size_bytes["Q_0"] == 2 * 16 * 64 * 4
    assert size_bytes["S_0"] == 2 * 4 * 16 * 16 * 4
    assert size_bytes["F_0"] == 2 * 16 * 256 * 4
    # Q K^T reads K transposed: stride = head dimension
    assert trace.loc[(trace["tensor_id"] == "K_0") & (trace["op"] == "attn_scores"), "stride"].item() == 16


def test_architecture_order_of_a_transformer_layer():
    trace = lab.generate_trace("Transformer", num_layers=1, reuse_probability=0.0)
    ops = trace["op"].astype(str).tolist()
    assert list(dict.fromkeys(ops)) == ["q_proj", "k_proj", "v_proj", "attn_scores", "softmax", "attn_context",
                                        "o_proj", "residual_add", "ffn_up", "gelu", "ffn_down"]
    assert trace["access"].iloc[:3].tolist() == ["read", "read", "write"]  # X_0, Wq_0 in; Q_0 out


def test_cnn_stages_halve_the_map_and_double_the_channels():
    trace = lab.generate_trace("CNN", num_layers=8, batch_size=1, reuse_probability=0.0, channels=8, image_size=16)
    sizes = _sizes(trace)["size_mb"] * 2**20
    assert sizes["X_0"] == 8 * 16 * 16 * 2
    assert sizes["X_2"] == 8 * 16 * 16 * 2
    assert sizes["X_3"] == 16 * 8 * 8 * 2  # first downsample at layer 2: half the map, twice the channels
    assert sizes["conv_w_2"] == 16 * 8 * 3 * 3 * 2
    assert trace.loc[(trace["tensor_id"] == "X_2") & (trace["op"] == "conv2d"), "stride"].item() == 2


@pytest.mark.parametrize("num_experts, top_k, groups", [(8, 2, 4), (16, 4, 3), (4, 1, 7), (3, 3, 2)])
def test_moe_picks_exactly_k_experts_per_token_group(num_experts, top_k, groups):
    trace = lab.generate_trace("MoE", num_layers=3, num_experts=num_experts, top_k=top_k, token_groups=groups,
                               seed=11)
    experts = trace[trace["expert"] >= 0]
    picked = experts.groupby(["layer", "token_group"])["expert"].nunique()
    assert len(picked) == 3 * groups
    assert (picked == top_k).all()
    assert experts["expert"].between(0, num_experts - 1).all()
    # expert weights are per expert: a weight read by two groups is one tensor
    weights = experts[experts["kind"] == "weight"]
    assert weights.groupby("tensor_id", observed=True)["expert"].nunique().eq(1).all()
    assert weights["tensor_id"].astype(str).str.fullmatch(r"W[12]_\d+_e\d+").all()


def test_moe_skew_concentrates_routing_on_the_first_experts():
    counts = np.zeros(8)
    for seed in range(20):
        trace = lab.generate_trace("MoE", num_layers=2, expert_skew=3.0, seed=seed)
        chosen = trace[trace["expert"] >= 0].drop_duplicates(["layer", "token_group", "expert"])["expert"]
        counts += np.bincount(chosen, minlength=8)
    assert counts[:2].sum() > 0.6 * counts.sum()


def test_reuse_count_is_binomial_in_the_layer_size():
    p, per_layer = 0.3, 34  # a Transformer layer makes 34 architecture accesses
    trace = lab.generate_trace("Transformer", num_layers=400, batch_size=1, seq_length=8, reuse_probability=p)
    reloads = (trace["op"] == "reload").groupby(trace["layer"]).sum()
    assert abs(reloads.mean() - per_layer * p) < 4 * np.sqrt(per_layer * p * (1 - p) / 400)
    assert abs(reloads.var() - per_layer * p * (1 - p)) < 0.35 * per_layer * p * (1 - p)
    assert (lab.generate_trace("MLP", reuse_probability=0.0)["op"] != "reload").all()


def test_reloads_reread_a_tensor_already_touched_in_the_layer():
    trace = lab.generate_trace("Transformer", num_layers=3, reuse_probability=0.9, seed=2)
    for i in np.flatnonzero((trace["op"] == "reload").to_numpy()):
        earlier = trace.iloc[:i]
        same = earlier[(earlier["tensor_id"] == trace["tensor_id"].iloc[i])]
        assert len(same) and same["layer"].iloc[-1] == trace["layer"].iloc[i]


def test_parameters_are_recorded_read_only_and_json_ready(tmp_path):
    trace = lab.generate_trace("MoE", num_layers=2, top_k=1)
    params = trace.attrs["generator"]
    assert params["top_k"] == 1 and params["model_type"] == "MoE"
    with pytest.raises(TypeError):
        params["seed"] = 5
    assert json.loads(json.dumps(params)) == dict(params)
    back = lab.read_trace(lab.write_trace(trace, tmp_path / "t.parquet"))
    assert back.attrs["generator"] == dict(params)
    assert lab.validate(back).size_distribution is not None


def test_implied_sizes_are_the_architecture_accesses():
    trace = lab.generate_trace("CNN", num_layers=6, reuse_probability=0.5)
    implied = implied_sizes_mb(trace.attrs["generator"])
    architecture = trace.loc[trace["op"] != "reload", "size_mb"].to_numpy()
    np.testing.assert_array_equal(implied, architecture)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model_type": "RNN"}, r"unknown model_type 'RNN'; known: \['Transformer', 'CNN', 'MLP', 'MoE'\]"),
        ({"num_layers": 0}, "num_layers must be an integer >= 1"),
        ({"batch_size": -2}, "batch_size must be an integer >= 1"),
        ({"seq_length": 2.5}, "seq_length must be an integer >= 1"),
        ({"reuse_probability": 1.5}, r"reuse_probability must be a number in \[0, 1\]"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"channels": 8}, r"unknown dimension\(s\) \['channels'\] for Transformer; accepted: "),
        ({"hidden_size": 100, "num_heads": 16}, "hidden_size .* must be a multiple of num_heads"),
        ({"model_type": "MoE", "top_k": 9}, r"top_k \(9\) must be <= num_experts \(8\)"),
        ({"model_type": "MoE", "expert_skew": -1.0}, "expert_skew must be a finite number >= 0"),
        ({"dtype_bytes": 0}, "dtype_bytes must be an integer >= 1"),
    ],
)
def test_bad_parameters(kwargs, match):
    kwargs = {"model_type": "Transformer", **kwargs}
    with pytest.raises(ValueError, match=match):
        lab.generate_trace(**kwargs)


def test_default_dims_are_documented_for_every_model_type():
    assert set(DEFAULT_DIMS) == set(lab.MODEL_TYPES)
