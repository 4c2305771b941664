"""A synthetic training step: the generator's forward pass, its backward pass and an AdamW step."""

import pytest

import lab
from lab.workloads.training import training_step


def test_a_training_step_follows_its_forward_pass():
    forward = lab.generate_trace("Transformer", num_layers=2, batch_size=2, seq_length=8)
    step = training_step(forward)
    assert list(step["phase"].unique()) == ["forward", "backward", "optimizer"]
    assert (step.iloc[:len(forward)]["tensor_id"].astype(str).to_numpy() == forward["tensor_id"].astype(str)).all()
    weights = forward.loc[forward["kind"] == "weight", "tensor_id"].astype(str).unique()
    optimizer = step[step["phase"] == "optimizer"]
    assert len(optimizer) == 7 * len(weights)  # read w, dw, m, v; write w, m, v
    assert set(optimizer["kind"]) == {"weight", "gradient", "optimizer_state"}
    backward = step[step["phase"] == "backward"]
    grads = {f"d{w}" for w in weights}
    written = set(backward.loc[(backward["access"] == "write") & (backward["kind"] == "gradient"), "tensor_id"])
    assert grads <= written  # every weight gets its gradient
    assert step["reuse_distance"].notna().sum() > forward["reuse_distance"].notna().sum()
    assert "generator" not in step.attrs  # it describes the forward pass only


def test_the_synthetic_counterpart_of_a_training_capture_is_a_training_step():
    pytest.importorskip("transformers")
    forward = lab.synthetic_counterpart("gpt2", 1, 16, 1)
    step = lab.synthetic_counterpart("gpt2", 1, 16, 1, training=True)
    assert "phase" not in forward and set(step["phase"]) == {"forward", "backward", "optimizer"}
    with pytest.raises(TypeError):
        lab.synthetic_counterpart("gpt2", 1, 16, 1, training="yes")
