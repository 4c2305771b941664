"""A synthetic training step from a synthetic forward pass: ``training_step(lab.generate_trace(...))``.

The generator writes one forward pass. A captured training step (``capture_model(..., training=True)``) is
forward, backward and an AdamW step; to validate the generator against it, the synthetic side must be one too.
``training_step`` derives it from the forward trace, op by op:

- forward: the trace as generated (phase ``forward``);
- backward, the forward ops in reverse: each op reads the gradient of each tensor it wrote, re-reads each tensor
  it read (the saved activations and weights), and writes the gradient of each tensor it read (a weight's
  gradient kind ``gradient``; a gradient already written by a later op is read and accumulated first);
- optimizer (AdamW), each weight in order of first use: reads the weight, its gradient and its two moment
  estimates (kind ``optimizer_state``, the weight's size), writes the weight and both moments.

Re-reads the generator adds (op ``reload``) stay in the forward pass and are not differentiated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lab.trace.workload import reuse_distances


def training_step(forward: pd.DataFrame) -> pd.DataFrame:
    """The training step (forward, backward, AdamW) of a forward trace from ``lab.generate_trace``: a trace with
    the same columns and a ``phase`` column (forward, backward, optimizer); see the module docstring."""
    columns = ["tensor_id", "size_mb", "op", "layer", "kind", "access"]
    missing = [c for c in columns if c not in forward.columns]
    if missing:
        raise ValueError(f"training_step needs a trace with columns {columns}; missing {missing}")
    tensor = forward["tensor_id"].astype(str).to_numpy()
    size = forward["size_mb"].to_numpy(np.float64)
    op = forward["op"].astype(str).to_numpy()
    layer = forward["layer"].to_numpy()
    kind = forward["kind"].astype(str).to_numpy()
    access = forward["access"].astype(str).to_numpy()

    # forward op instances: consecutive rows of one op in one layer, reloads left out
    keep = op != "reload"
    rows = np.flatnonzero(keep)
    boundaries = np.flatnonzero((op[rows][1:] != op[rows][:-1]) | (layer[rows][1:] != layer[rows][:-1])) + 1
    instances = np.split(rows, boundaries)

    out: list[tuple] = []  # tensor, size, op, layer, kind, access, phase
    written_grads: set = set()
    for group in reversed(instances):
        name, at = f"{op[group[0]]}_backward", layer[group[0]]
        reads = [i for i in group if access[i] == "read"]
        writes = [i for i in group if access[i] == "write"]
        for i in writes:  # the gradient flowing in
            out.append((f"d{tensor[i]}", size[i], name, at, "gradient", "read", "backward"))
        for i in dict.fromkeys(reads, None):  # the saved inputs
            out.append((tensor[i], size[i], name, at, kind[i], "read", "backward"))
        for i in reads:  # the gradients flowing out (accumulated where a later op wrote one already)
            grad = f"d{tensor[i]}"
            if grad in written_grads:
                out.append((grad, size[i], name, at, "gradient", "read", "backward"))
            out.append((grad, size[i], name, at, "gradient", "write", "backward"))
            written_grads.add(grad)
    weights = dict.fromkeys(tensor[keep & (kind == "weight")])
    weight_size = dict(zip(tensor, size))
    weight_layer = dict(zip(tensor[::-1], layer[::-1]))
    for w in weights:
        mb, at = weight_size[w], weight_layer[w]
        for t, k, a in ((w, "weight", "read"), (f"d{w}", "gradient", "read"), (f"m_{w}", "optimizer_state", "read"),
                        (f"v_{w}", "optimizer_state", "read"), (w, "weight", "write"),
                        (f"m_{w}", "optimizer_state", "write"), (f"v_{w}", "optimizer_state", "write")):
            out.append((t, mb, "adamw", at, k, a, "optimizer"))

    extra = pd.DataFrame(out, columns=["tensor_id", "size_mb", "op", "layer", "kind", "access", "phase"])
    base = forward.copy()
    for column in ("tensor_id", "op", "kind", "access"):
        base[column] = base[column].astype(str)
    base["phase"] = "forward"
    for column in base.columns:
        if column not in extra.columns:
            fill = {"stride": 1, "expert": -1, "token_group": -1}.get(column)
            extra[column] = fill if fill is not None else (base[column].iloc[0] if len(base) else None)
    trace = pd.concat([base, extra[base.columns]], ignore_index=True)
    trace["reuse_distance"] = reuse_distances(trace["tensor_id"])
    # not attrs["generator"]: that describes a forward pass (validate would test sizes against it)
    trace.attrs = {k: v for k, v in forward.attrs.items() if k != "generator"}
    if "generator" in forward.attrs:
        trace.attrs["forward_generator"] = forward.attrs["generator"]
    trace.attrs["training_step"] = True
    return trace
