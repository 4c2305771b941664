"""Synthetic tensor-access traces of Transformer, CNN, MLP and MoE models.

Each layer's accesses follow the architecture: the operators a layer runs, in
order, each reading its inputs and weights and writing its output. Sizes follow
from the dimensions (batch, sequence length, hidden size, channels, dtype
bytes). On top of that graph, reuse (re-reads of tensors the layer already
touched, as a tiled kernel or a recomputation makes them) is drawn per layer:
``Binomial(accesses in the layer, reuse_probability)`` re-reads, each placed
at a uniform position and re-reading a uniform earlier access of the layer.
They are labelled ``op == "reload"``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from lab.checks import check_int, check_number
from lab.registry import Registry
from lab.trace.workload import reuse_distances_from_codes
from lab.units import BYTES_PER_MB, MAX_SIZE_MB

MODEL_TYPES = ("Transformer", "CNN", "MLP", "MoE")
_MODEL_TYPES: Registry[str] = Registry("model_type")
for _name in MODEL_TYPES:
    _MODEL_TYPES.add(_name, _name)

DEFAULT_DIMS = {
    "Transformer": {"hidden_size": 1024, "num_heads": 16, "ffn_mult": 4, "dtype_bytes": 2},
    "CNN": {"channels": 64, "image_size": 56, "kernel_size": 3, "dtype_bytes": 2},
    "MLP": {"hidden_size": 2048, "dtype_bytes": 2},
    "MoE": {
        "hidden_size": 1024,
        "num_heads": 16,
        "ffn_mult": 4,
        "num_experts": 8,
        "top_k": 2,
        "token_groups": 4,
        "expert_skew": 0.0,
        "dtype_bytes": 2,
    },
}
_FLOAT_DIMS = {"expert_skew"}

# Fixed vocabularies of the label columns (categorical: cheap to build, small to keep).
OPS = ("q_proj", "k_proj", "v_proj", "attn_scores", "softmax", "attn_context", "o_proj", "residual_add",
       "ffn_up", "gelu", "ffn_down", "router", "top_k", "dispatch", "combine", "linear", "relu", "conv2d",
       "batchnorm", "relu_residual", "reload")
OP_DTYPE = pd.CategoricalDtype(OPS)
KIND_DTYPE = pd.CategoricalDtype(("input", "weight", "activation"))
ACCESS_DTYPE = pd.CategoricalDtype(("read", "write"))
MODEL_TYPE_DTYPE = pd.CategoricalDtype(MODEL_TYPES)
_OP_CODE = {op: i for i, op in enumerate(OPS)}
_KIND_CODE = {kind: i for i, kind in enumerate(KIND_DTYPE.categories)}
READ, WRITE = 0, 1


class GeneratorParams(dict):
    """The arguments a trace was generated with, kept in ``trace.attrs["generator"]``.

    Read-only, so pandas, which deep-copies ``attrs`` on nearly every
    operation, can share it instead of copying it. A plain dict to JSON (and
    so to Parquet metadata).
    """

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):  # pickle (Dask moving a trace between processes) rebuilds it whole, not key by key
        return GeneratorParams, (dict(self),)

    def _read_only(self, *args, **kwargs):
        raise TypeError("generator parameters are read-only")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _read_only


class Tensor(NamedTuple):
    """A tensor of the model graph: its id, size in bytes and kind (weight, activation, input)."""

    name: str
    size_bytes: int
    kind: str


class _Layer:
    """Collects one layer's accesses in program order, as rows of the trace's columns (labels coded)."""

    def __init__(self, index: int):
        self.index = index
        # (layer, tensor name, bytes, kind code, op code, access code, stride, expert, token group)
        self.rows: list[tuple] = []

    def op(self, name, reads=(), writes=(), strides=None, expert=-1, group=-1):
        l, op, append = self.index, _OP_CODE[name], self.rows.append
        for t in reads:
            stride = strides.get(t.name, 1) if strides else 1
            append((l, t.name, t.size_bytes, _KIND_CODE[t.kind], op, READ, stride, expert, group))
        for t in writes:
            append((l, t.name, t.size_bytes, _KIND_CODE[t.kind], op, WRITE, 1, expert, group))


def _act(name, *shape, dtype_bytes, kind="activation"):
    return Tensor(name, int(math.prod(shape)) * dtype_bytes, kind)


def _attention(layer: _Layer, x: Tensor, batch, seq, d) -> Tensor:
    """Self-attention block; returns the residual stream after it."""
    l, h, b = layer.index, d["hidden_size"], d["dtype_bytes"]
    heads = d["num_heads"]
    w = {n: Tensor(f"{n}_{l}", h * h * b, "weight") for n in ("Wq", "Wk", "Wv", "Wo")}
    q, k, v = (_act(f"{n}_{l}", batch, seq, h, dtype_bytes=b) for n in ("Q", "K", "V"))
    scores = _act(f"S_{l}", batch, heads, seq, seq, dtype_bytes=b)
    probs = _act(f"P_{l}", batch, heads, seq, seq, dtype_bytes=b)
    ctx = _act(f"C_{l}", batch, seq, h, dtype_bytes=b)
    out = _act(f"O_{l}", batch, seq, h, dtype_bytes=b)
    resid = _act(f"R_{l}", batch, seq, h, dtype_bytes=b)
    layer.op("q_proj", [x, w["Wq"]], [q])
    layer.op("k_proj", [x, w["Wk"]], [k])
    layer.op("v_proj", [x, w["Wv"]], [v])
    # Q K^T reads K transposed: its innermost stride is the head dimension
    layer.op("attn_scores", [q, k], [scores], strides={k.name: h // heads})
    layer.op("softmax", [scores], [probs])
    layer.op("attn_context", [probs, v], [ctx])
    layer.op("o_proj", [ctx, w["Wo"]], [out])
    layer.op("residual_add", [x, out], [resid])
    return resid


def _ffn(layer: _Layer, x: Tensor, tokens, d, suffix="", weight_suffix="", **tags) -> Tensor:
    """Feed-forward block over ``tokens`` rows; returns its output."""
    l, h, b, f = layer.index, d["hidden_size"], d["dtype_bytes"], d["ffn_mult"]
    w1 = Tensor(f"W1_{l}{weight_suffix}", h * f * h * b, "weight")
    w2 = Tensor(f"W2_{l}{weight_suffix}", f * h * h * b, "weight")
    up = _act(f"F_{l}{suffix}", tokens, f * h, dtype_bytes=b)
    gelu = _act(f"G_{l}{suffix}", tokens, f * h, dtype_bytes=b)
    down = _act(f"D_{l}{suffix}", tokens, h, dtype_bytes=b)
    layer.op("ffn_up", [x, w1], [up], **tags)
    layer.op("gelu", [up], [gelu], **tags)
    layer.op("ffn_down", [gelu, w2], [down], **tags)
    return down


def _transformer_layer(layer, x, batch, seq, d, rng):
    resid = _attention(layer, x, batch, seq, d)
    down = _ffn(layer, resid, batch * seq, d)
    out = _act(f"X_{layer.index + 1}", batch, seq, d["hidden_size"], dtype_bytes=d["dtype_bytes"])
    layer.op("residual_add", [resid, down], [out])
    return out


def _moe_layer(layer, x, batch, seq, d, rng):
    """Attention, then a router picking exactly ``top_k`` experts for each token group."""
    l, h, b = layer.index, d["hidden_size"], d["dtype_bytes"]
    e, k, groups = d["num_experts"], d["top_k"], d["token_groups"]
    tokens = batch * seq
    resid = _attention(layer, x, batch, seq, d)
    router = Tensor(f"Wr_{l}", h * e * b, "weight")
    logits = _act(f"router_logits_{l}", tokens, e, dtype_bytes=b)
    routing = _act(f"routing_{l}", tokens, k, dtype_bytes=4)
    layer.op("router", [resid, router], [logits])
    layer.op("top_k", [logits], [routing])
    # Gumbel top-k: k distinct experts per group, expert i weighted (i+1)^-skew
    popularity = -d["expert_skew"] * np.log(np.arange(1, e + 1))
    group_tokens = [len(c) for c in np.array_split(np.arange(tokens), groups)]
    outputs = []
    for g, n_tok in enumerate(group_tokens):
        chosen = np.sort(np.argsort(-(popularity + rng.gumbel(size=e)))[:k])
        dispatched = _act(f"dispatch_{l}_g{g}", n_tok, h, dtype_bytes=b)
        layer.op("dispatch", [resid, routing], [dispatched], group=g)
        for expert in chosen:
            y = _ffn(layer, dispatched, n_tok, d, f"_e{expert}_g{g}", f"_e{expert}", expert=int(expert), group=g)
            outputs.append(y)
    combined = _act(f"moe_out_{l}", batch, seq, h, dtype_bytes=b)
    layer.op("combine", outputs + [routing], [combined])
    out = _act(f"X_{l + 1}", batch, seq, h, dtype_bytes=b)
    layer.op("residual_add", [resid, combined], [out])
    return out


def _mlp_layer(layer, x, batch, seq, d, rng):
    l, h, b = layer.index, d["hidden_size"], d["dtype_bytes"]
    w = Tensor(f"W_{l}", h * h * b, "weight")
    bias = Tensor(f"b_{l}", h * b, "weight")
    y = _act(f"Y_{l}", batch, seq, h, dtype_bytes=b)
    out = _act(f"X_{l + 1}", batch, seq, h, dtype_bytes=b)
    layer.op("linear", [x, w, bias], [y])
    layer.op("relu", [y], [out])
    return out


def _cnn_shapes(num_layers, d):
    """(in channels, out channels, in size, out size, conv stride) per layer: ResNet-like stages that halve
    the feature map and double the channels every quarter of the depth."""
    stage = max(1, math.ceil(num_layers / 4))
    c, s, shapes = d["channels"], d["image_size"], []
    for l in range(num_layers):
        down = l > 0 and l % stage == 0 and s > 1
        c_out, s_out = (2 * c, math.ceil(s / 2)) if down else (c, s)
        shapes.append((c, c_out, s, s_out, 2 if down else 1))
        c, s = c_out, s_out
    return shapes


def _cnn_layer(layer, x, batch, seq, d, rng, shape):
    l, b, ks = layer.index, d["dtype_bytes"], d["kernel_size"]
    c_in, c_out, _, s_out, stride = shape
    w = Tensor(f"conv_w_{l}", c_out * c_in * ks * ks * b, "weight")
    bn = Tensor(f"bn_{l}", 4 * c_out * 4, "weight")  # scale, shift, mean, var in fp32
    conv = _act(f"conv_{l}", batch, c_out, s_out, s_out, dtype_bytes=b)
    norm = _act(f"bn_out_{l}", batch, c_out, s_out, s_out, dtype_bytes=b)
    out = _act(f"X_{l + 1}", batch, c_out, s_out, s_out, dtype_bytes=b)
    layer.op("conv2d", [x, w], [conv], strides={x.name: stride})
    layer.op("batchnorm", [conv, bn], [norm])
    if stride == 1 and l % 2 == 1:  # basic block: residual around each pair of same-shape convs
        layer.op("relu_residual", [norm, x], [out])
    else:
        layer.op("relu", [norm], [out])
    return out


def _check_dims(model_type: str, dims: dict) -> dict:
    defaults = DEFAULT_DIMS[model_type]
    unknown = sorted(set(dims) - set(defaults))
    if unknown:
        raise ValueError(f"unknown dimension(s) {unknown} for {model_type}; accepted: {sorted(defaults)}")
    d = {**defaults, **dims}
    for name, value in d.items():
        if name in _FLOAT_DIMS:
            check_number(name, value, 0)
        else:
            check_int(name, value)
    if "num_heads" in d and d["hidden_size"] % d["num_heads"]:
        raise ValueError(f"hidden_size ({d['hidden_size']}) must be a multiple of num_heads ({d['num_heads']})")
    if model_type == "MoE" and d["top_k"] > d["num_experts"]:
        raise ValueError(f"top_k ({d['top_k']}) must be <= num_experts ({d['num_experts']})")
    return d


def canonical_model_type(model_type) -> str:
    """The canonical spelling of a model type (case-insensitive); ValueError listing MODEL_TYPES otherwise."""
    return _MODEL_TYPES.canonical(model_type)


def generate_trace(
    model_type: str,
    num_layers: int = 12,
    batch_size: int = 32,
    seq_length: int = 128,
    reuse_probability: float = 0.3,
    seed: int = 0,
    **dims,
) -> pd.DataFrame:
    """Generate the tensor-access trace of one forward pass.

    Takes the model type (``Transformer``, ``CNN``, ``MLP``, ``MoE``;
    case-insensitive), the number of layers, batch size, sequence length
    (tokens per sample; CNN uses ``image_size`` instead and ignores it), the
    reuse probability in [0, 1], a seed, and optional dimensions
    (``DEFAULT_DIMS[model_type]`` lists them and their defaults; sizes in
    elements, ``dtype_bytes`` per element). MoE accepts ``num_experts``,
    ``top_k`` (experts per token group), ``token_groups`` and ``expert_skew``
    (0 = uniform routing; s > 0 weights expert i by (i+1)^-s).

    Returns a trace DataFrame, one row per access: ``tensor_id``, ``size_mb``
    (MiB), ``reuse_distance`` (other accesses since the tensor's previous
    access; NaN on a first access), ``stride`` (innermost element stride, 1 =
    contiguous), ``op``, ``model_type``, ``layer``, ``kind`` (weight,
    activation, input), ``access`` (read, write); MoE adds ``expert`` and
    ``token_group`` (-1 outside the experts). The same arguments give the same
    trace. ``trace.attrs["generator"]`` records the arguments.
    """
    model_type = canonical_model_type(model_type)
    num_layers = check_int("num_layers", num_layers)
    batch_size = check_int("batch_size", batch_size)
    seq_length = check_int("seq_length", seq_length)
    seed = check_int("seed", seed, 0)
    check_number("reuse_probability", reuse_probability, 0, 1)
    d = _check_dims(model_type, dims)
    if model_type == "MoE" and d["token_groups"] > batch_size * seq_length:
        raise ValueError(f"token_groups ({d['token_groups']}) must be <= batch_size * seq_length")

    _check_trace_fits(model_type, num_layers, batch_size, seq_length, seed, d)
    # the graph has its own random stream (MoE routing), so reuse_probability does not move it
    columns = _architecture_of(model_type, num_layers, batch_size, seq_length, seed, d)
    order, reload = _reuse_order(columns["layer"], reuse_probability, np.random.default_rng([seed, 1]))
    params = dict(model_type=model_type, num_layers=num_layers, batch_size=batch_size, seq_length=seq_length,
                  reuse_probability=float(reuse_probability), seed=seed, **dims)
    return _to_frame(columns, order, reload, model_type, params)


MAX_GENERATED_ACCESSES = 50_000_000  # about 4 GiB as a DataFrame, more with the simulation's arrays
BYTES_PER_GENERATED_ACCESS = 90  # measured: 79-90 bytes per access of a generated DataFrame (deep)


def _check_trace_fits(model_type, num_layers, batch_size, seq_length, seed, d,
                      max_accesses: Optional[int] = None) -> None:
    """ValueError, before building anything large, for a trace whose sizes overflow or whose accesses would
    not fit in memory (estimated from one layer: accesses per layer x num_layers), or exceed ``max_accesses``."""
    try:
        one = _architecture(model_type, 1, batch_size, seq_length, tuple(sorted(d.items())),
                            seed if model_type == "MoE" else None)
    except (OverflowError, MemoryError, ValueError) as error:
        raise ValueError(f"batch_size={batch_size}, seq_length={seq_length} and the dimensions {d} give tensor "
                         f"sizes that do not fit 64-bit byte counts ({error})") from None
    sizes = np.asarray(one["size_bytes"], np.float64) / BYTES_PER_MB
    if (sizes > MAX_SIZE_MB).any():
        raise ValueError(f"batch_size={batch_size}, seq_length={seq_length} and the dimensions {d} give a tensor "
                         f"of {sizes.max():.3g} MB, more than lab counts ({MAX_SIZE_MB:g} MB)")
    accesses = len(sizes) * num_layers
    if accesses > MAX_GENERATED_ACCESSES:
        raise ValueError(f"num_layers={num_layers} would generate about {accesses:,} accesses "
                         f"(~{accesses * BYTES_PER_GENERATED_ACCESS / 2**30:.0f} GiB in memory), more than "
                         f"{MAX_GENERATED_ACCESSES:,}: use fewer layers")
    if max_accesses is not None and accesses > max_accesses:
        raise ValueError(f"these generator arguments imply {accesses:,} accesses, more than the trace's "
                         f"{max_accesses:,}: they do not describe this trace")


def _architecture_of(model_type, num_layers, batch_size, seq_length, seed, d) -> dict:
    return _architecture(model_type, num_layers, batch_size, seq_length, tuple(sorted(d.items())),
                         seed if model_type == "MoE" else None)


@functools.lru_cache(maxsize=32)
def _architecture(model_type, num_layers, batch_size, seq_length, dims: tuple, routing_seed) -> dict:
    """The architecture's accesses (no reuse) as read-only column arrays.

    A pure function of its arguments (``routing_seed``: the seed, for MoE
    routing; None for the other models), so it is memoized: an explorer that
    changes only the reuse probability, the policy or the capacity does not
    rebuild the graph.
    """
    d = dict(dims)
    graph_rng = np.random.default_rng([routing_seed or 0, 0])
    b = d["dtype_bytes"]
    if model_type == "CNN":
        x = _act("X_0", batch_size, d["channels"], d["image_size"], d["image_size"], dtype_bytes=b, kind="input")
        shapes = _cnn_shapes(num_layers, d)
    else:
        x = _act("X_0", batch_size, seq_length, d["hidden_size"], dtype_bytes=b, kind="input")
    builder = {"Transformer": _transformer_layer, "MLP": _mlp_layer, "MoE": _moe_layer}.get(model_type)
    rows = []
    for l in range(num_layers):
        layer = _Layer(l)
        if model_type == "CNN":
            x = _cnn_layer(layer, x, batch_size, seq_length, d, graph_rng, shapes[l])
        else:
            x = builder(layer, x, batch_size, seq_length, d, graph_rng)
        rows.extend(layer.rows)
    columns = _columns(rows)
    for array in columns.values():
        if isinstance(array, np.ndarray):
            array.flags.writeable = False
    return columns


def _columns(rows) -> dict:
    """The architecture's accesses as column arrays; tensor names coded in order of first access."""
    layer, names, size_bytes, kind, op, access, stride, expert, group = zip(*rows)
    first_seen: dict[str, int] = {}
    codes = np.fromiter((first_seen.setdefault(n, len(first_seen)) for n in names), np.int64, len(names))
    int_columns = dict(layer=layer, size_bytes=size_bytes, kind=kind, op=op, access=access, stride=stride,
                       expert=expert, group=group)
    return {"tensor": codes, "names": tuple(first_seen),
            **{key: np.array(values, dtype=np.int64) for key, values in int_columns.items()}}


def _reuse_order(layer: np.ndarray, p: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Where the re-reads go: ``Binomial(accesses in the layer, p)`` per layer, each after a uniform base
    access of the layer (a slot), re-reading a uniform access at or before it.

    Returns the source row of each output row (architecture rows and re-read targets, in trace order) and a
    flag marking the re-reads.
    """
    n_base = layer.shape[0]
    per_layer = np.bincount(layer)
    starts = np.concatenate(([0], np.cumsum(per_layer)[:-1]))
    n_reuse = rng.binomial(per_layer, p)
    reuse_layer = np.repeat(np.arange(per_layer.size), n_reuse)
    slots = 1 + (rng.random(reuse_layer.size) * per_layer[reuse_layer]).astype(np.int64)  # after access slot-1
    targets = (rng.random(reuse_layer.size) * slots).astype(np.int64)  # uniform over the layer's [0, slot)
    source = np.concatenate((np.arange(n_base), starts[reuse_layer] + targets))
    # a base row g sorts at 2g, a re-read after base row g at 2g + 1 (several: in the order drawn)
    key = np.concatenate((2 * np.arange(n_base), 2 * (starts[reuse_layer] + slots - 1) + 1))
    order = np.argsort(key, kind="stable")
    reload = np.zeros(source.size, bool)
    reload[n_base:] = True
    return source[order], reload[order]


def _to_frame(columns: dict, order: np.ndarray, reload: np.ndarray, model_type: str, params: dict) -> pd.DataFrame:
    def take(key):
        return columns[key][order]

    codes = take("tensor")  # still in order of first access: a re-read always follows the access it repeats
    op = np.where(reload, _OP_CODE["reload"], take("op"))
    trace = pd.DataFrame(
        {
            # categorical: the tensors are already coded, and coded ids make every later pass cheaper
            "tensor_id": pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(
                pd.Index(np.array(columns["names"], dtype=object), dtype=object))),
            "size_mb": take("size_bytes") / BYTES_PER_MB,
            "reuse_distance": reuse_distances_from_codes(codes, len(columns["names"])),
            "stride": np.where(reload, 1, take("stride")),
            "op": pd.Categorical.from_codes(op, dtype=OP_DTYPE),
            "model_type": pd.Categorical.from_codes(np.full(order.size, MODEL_TYPES.index(model_type)),
                                                    dtype=MODEL_TYPE_DTYPE),
            "layer": take("layer"),
            "kind": pd.Categorical.from_codes(take("kind"), dtype=KIND_DTYPE),
            "access": pd.Categorical.from_codes(np.where(reload, READ, take("access")), dtype=ACCESS_DTYPE),
        }
    )
    if model_type == "MoE":
        trace["expert"] = take("expert")
        trace["token_group"] = take("group")
    trace.attrs["generator"] = GeneratorParams(params)
    return trace


def implied_sizes_mb(params, max_accesses: Optional[int] = None) -> np.ndarray:
    """Sizes (MB) the generator's parameters imply: those of the architecture's accesses without reuse.

    Takes the ``trace.attrs["generator"]`` dict of a generated trace: read
    from a file it is untrusted, so it is checked as ``generate_trace``'s
    arguments are, and with ``max_accesses`` (the trace's length: reuse only
    adds accesses) an architecture larger than that is refused before it is
    built. ValueError for a malformed or oversized one.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"trace.attrs['generator'] must be a mapping of generate_trace's arguments, got "
                         f"{type(params).__name__}")
    p = dict(params)
    known = ("model_type", "num_layers", "batch_size", "seq_length", "reuse_probability", "seed")
    missing = [k for k in known if k not in p]
    if missing:
        raise ValueError(f"trace.attrs['generator'] lacks {missing}: not the arguments of a generated trace")
    model_type = canonical_model_type(p.pop("model_type"))
    num_layers, batch_size, seq_length = (check_int(k, p.pop(k)) for k in ("num_layers", "batch_size", "seq_length"))
    check_number("reuse_probability", p.pop("reuse_probability"), 0, 1)
    seed = check_int("seed", p.pop("seed"), 0)
    d = _check_dims(model_type, p)
    _check_trace_fits(model_type, num_layers, batch_size, seq_length, seed, d, max_accesses)
    return _architecture_of(model_type, num_layers, batch_size, seq_length, seed, d)["size_bytes"] / BYTES_PER_MB
