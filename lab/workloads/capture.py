"""Capture the tensor accesses a real PyTorch model makes, on shape-only tensors.

``capture_trace(module, example_inputs)`` runs the model's own code under
``FakeTensorMode`` (tensors with shapes, dtypes and strides but no data), so a
7B or 70B model is traced in about a second with no memory and no weights.
A ``TorchDispatchMode`` sees every aten operator the forward (and, with
``training=True``, the backward and an AdamW step) executes and records, for
each, the regions it reads (its tensor inputs) and writes (its outputs and the
inputs its schema marks as mutated: in-place and ``_foreach_`` ops).

Identity: an access touches a region of an underlying storage (storage,
byte offset, byte length), never ``data_ptr`` (0 on meta, reused on CPU).
View and alias operators (``t``, ``view``, ``_unsafe_view``, ``expand``,
``split``, ...) move no data and record nothing; tied weights share a storage
and so are one tensor. Two different views of one storage are two tensors
(their regions may overlap; the simulator treats them apart).

Attention: ``scaled_dot_product_attention`` is recorded as one operator that
reads Q, K, V (and the mask) and writes the output, as a fused attention
kernel (FlashAttention) runs on an accelerator; on CPU, PyTorch would
otherwise decompose it into matmuls and a softmax whose full score matrix an
accelerator never materializes in DRAM.

Torch is imported here only: the rest of ``lab`` never needs it.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from lab.trace.workload import reuse_distances
from lab.units import BYTES_PER_MB

KINDS = ("weight", "buffer", "activation", "gradient", "optimizer_state", "input")
PHASES = ("forward", "backward", "optimizer")
_LAYER_PATTERN = re.compile(r"\.(?:layers|layer|h|blocks|block|stages)\.(\d+)(?:\.|$)")
# operators that overwrite a mutated argument without reading it first
_OVERWRITES = {"copy_", "fill_", "zero_", "normal_", "uniform_", "bernoulli_", "random_", "exponential_",
               "_foreach_zero_", "_foreach_copy_", "index_put_", "masked_fill_", "scatter_"}
_NOISE_NAMESPACES = {"prim", "profiler"}
_NOISE_OPS = {"lift_fresh", "lift_fresh_copy", "detach", "alias", "_local_scalar_dense", "sym_size", "sym_stride",
              "sym_numel", "sym_storage_offset", "is_same_size", "_to_dense"}


@dataclass
class _Region:
    storage: int  # index of the storage, in order of first sight
    offset: int  # bytes
    nbytes: int
    dtype: str
    shape: tuple
    stride: int  # innermost element stride


@dataclass
class _Record:
    op: str
    region: _Region
    access: str
    module: str
    phase: str


@dataclass
class _State:
    phase: str = "forward"
    paused: int = 0
    module_stack: list = field(default_factory=lambda: [""])
    storages: dict = field(default_factory=dict)  # storage cdata -> (index, storage) (kept alive: no reuse)
    storage_bytes: dict = field(default_factory=dict)  # storage index -> its size in bytes
    leading_dim: dict = field(default_factory=dict)  # storage index -> first dimension of the named tensor
    first_writer: dict = field(default_factory=dict)  # storage index -> (op, phase)
    records: list = field(default_factory=list)

    def storage_index(self, tensor) -> int:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in self.storages:
            self.storages[key] = (len(self.storages), storage)
            self.storage_bytes[len(self.storages) - 1] = storage.nbytes()
        return self.storages[key][0]

    def module(self) -> str:
        if self.phase == "backward":
            import torch

            node = torch._C._current_autograd_node()
            return node.metadata.get("lab_module", "") if node is not None else ""
        return self.module_stack[-1] if self.phase == "forward" else "optimizer"


def _region(state: _State, tensor) -> Optional[_Region]:
    if tensor.numel() == 0:
        return None
    size = tensor.element_size()
    span = 1 + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride()))
    return _Region(
        storage=state.storage_index(tensor),
        offset=tensor.storage_offset() * size,
        nbytes=span * size,
        dtype=str(tensor.dtype).removeprefix("torch."),
        shape=tuple(tensor.shape),
        stride=int(tensor.stride()[-1]) if tensor.dim() else 1,
    )


def _tensors(value):
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _storage_keys(value) -> set:
    return {t.untyped_storage()._cdata for t in _tensors(value)}


def _is_view(schema, args, kwargs, out) -> bool:
    """A view or alias: its schema says every output aliases an input, or (for unannotated views such as
    ``_unsafe_view``) every output lives in an input's storage and nothing is written."""
    returns_alias = [r.alias_info is not None and not r.alias_info.is_write for r in schema.returns]
    if returns_alias and all(returns_alias):
        return True
    if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
        return False
    outputs = _storage_keys(out)
    return bool(outputs) and outputs <= _storage_keys(args) | _storage_keys(kwargs)


def _recorder(state: _State):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        """Records each aten operator's reads and writes (see the module docstring)."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if state.paused:
                return out
            namespace, name = func.namespace, func._schema.name.split("::")[-1]
            if namespace in _NOISE_NAMESPACES or name in _NOISE_OPS:
                return out
            schema = func._schema
            if _is_view(schema, args, kwargs, out):
                return out  # no data moves
            _record_op(state, f"{namespace}.{name}", schema, args, kwargs, out)
            return out

    return Recorder()


def _record_op(state: _State, op: str, schema, args, kwargs, out) -> None:
    module, phase = state.module(), state.phase
    bound = list(zip(schema.arguments, args)) + [(a, kwargs[a.name]) for a in schema.arguments if a.name in kwargs]
    mutated, reads = [], []
    for argument, value in bound:
        writes = argument.alias_info is not None and argument.alias_info.is_write
        for tensor in _tensors(value):
            region = _region(state, tensor)
            if region is None:
                continue
            if writes:
                mutated.append(region)
                if op.split(".")[-1] not in _OVERWRITES and argument.name != "out":
                    reads.append(region)
            else:
                reads.append(region)
    written = {(r.storage, r.offset, r.nbytes) for r in mutated}
    for region in reads:
        state.records.append(_Record(op, region, "read", module, phase))
    for region in mutated:
        state.records.append(_Record(op, region, "write", module, phase))
    for tensor in _tensors(out):
        region = _region(state, tensor)
        if region is not None and (region.storage, region.offset, region.nbytes) not in written:
            written.add((region.storage, region.offset, region.nbytes))
            state.records.append(_Record(op, region, "write", module, phase))
            state.first_writer.setdefault(region.storage, (op.split(".")[-1], phase))


def _annotator(state: _State):
    """Fuses scaled_dot_product_attention into one recorded op and tags autograd nodes with their module."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class Annotator(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention and not state.paused:
                state.paused += 1
                try:
                    out = func(*args, **kwargs)
                    if out.dim() == 4:  # the (batch, seq, heads, dim) layout fused kernels write, fake or real
                        out = out.transpose(1, 2).contiguous().transpose(1, 2)
                finally:
                    state.paused -= 1
                inputs = list(_tensors(args)) + list(_tensors(kwargs))
                module, phase = state.module(), state.phase
                for tensor in inputs:
                    region = _region(state, tensor)
                    if region is not None:
                        state.records.append(_Record("aten.scaled_dot_product_attention", region, "read", module, phase))
                region = _region(state, out)
                state.records.append(_Record("aten.scaled_dot_product_attention", region, "write", module, phase))
                state.first_writer.setdefault(region.storage, ("scaled_dot_product_attention", phase))
            else:
                out = func(*args, **kwargs)
            if state.phase == "forward" and torch.is_grad_enabled():
                for tensor in _tensors(out):
                    if tensor.grad_fn is not None and "lab_module" not in tensor.grad_fn.metadata:
                        tensor.grad_fn.metadata["lab_module"] = state.module_stack[-1]
            return out

    return Annotator()


@contextlib.contextmanager
def _module_tracking(model, state: _State):
    """Keep ``state.module_stack`` on the module whose forward is running."""
    handles = []
    for name, submodule in model.named_modules():
        def enter(mod, args, name=name):
            state.module_stack.append(name)

        def leave(mod, args, output):
            state.module_stack.pop()

        handles.append(submodule.register_forward_pre_hook(enter))
        handles.append(submodule.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _to_frame(state: _State, names: dict, model_type: str) -> pd.DataFrame:
    records = state.records
    counters: dict = {}
    for index, (op, phase) in sorted(state.first_writer.items()):
        if index not in names:
            counters[op] = counters.get(op, 0) + 1
            kind = {"forward": "activation", "backward": "gradient", "optimizer": "optimizer_state"}[phase]
            names[index] = (f"{op}#{counters[op]}", kind)
    for index in {r.region.storage for r in records} - names.keys():
        names[index] = (f"storage#{index}", "activation")  # created outside the recorded ops
    ids, kinds = [], []
    for r in records:
        name, kind = names[r.region.storage]
        total = state.storage_bytes[r.region.storage]
        if r.region.offset or r.region.nbytes != total:
            name = f"{name}[{_part(r.region, total, state.leading_dim.get(r.region.storage))}]"
        ids.append(name)
        kinds.append(kind)
    modules = [r.module for r in records]
    trace = pd.DataFrame({
        "tensor_id": ids,
        "size_mb": np.array([r.region.nbytes for r in records], dtype=np.float64) / BYTES_PER_MB,
        "reuse_distance": reuse_distances(ids),
        "stride": np.array([r.region.stride for r in records], dtype=np.int64),
        "op": [r.op for r in records],
        "model_type": model_type,
        "access": [r.access for r in records],
        "kind": kinds,
        "module": modules,
        "layer": np.array([_layer_of(m) for m in modules], dtype=np.int64),
        "phase": [r.phase for r in records],
        "dtype": [r.region.dtype for r in records],
        "shape": [str(r.region.shape) for r in records],
    })
    return trace


def _part(region: _Region, total: int, rows: Optional[int]) -> str:
    """A part of a storage: rows ``i`` or ``i:j`` of a named tensor's first dimension when the part is made of
    whole rows (an expert of a stacked expert bank), else the byte range ``bytes a:b``."""
    if rows:
        row = total // rows
        if row and region.offset % row == 0 and region.nbytes % row == 0:
            start, stop = region.offset // row, (region.offset + region.nbytes) // row
            return f"{start}" if stop == start + 1 else f"{start}:{stop}"
    return f"bytes {region.offset}:{region.offset + region.nbytes}"


def _layer_of(module: str) -> int:
    match = _LAYER_PATTERN.search("." + module)
    return int(match.group(1)) if match else -1


# --- MoE routing ---------------------------------------------------------------------------------


def routing_counts(num_experts: int, tokens: int, top_k: int, routing="uniform", skew: float = 1.0,
                   rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Tokens routed to each expert: ``tokens * top_k`` assignments, at most ``tokens`` per expert.

    ``routing``: ``"uniform"`` (as even as integers allow), ``"zipf"`` (expert
    of popularity rank r gets a share proportional to r^-skew; ``rng``
    shuffles which expert has which rank) or a histogram (one non-negative
    weight per expert). Shares are turned into integers by largest remainder.
    Real routing depends on real weights and data, which we do not load.
    """
    if isinstance(routing, str) and routing == "uniform":
        weights = np.ones(num_experts)
    elif isinstance(routing, str) and routing == "zipf":
        weights = 1.0 / np.arange(1, num_experts + 1) ** skew
        weights = (rng or np.random.default_rng(0)).permutation(weights)
    elif not isinstance(routing, str):
        weights = np.asarray(routing, dtype=np.float64)
        if weights.shape != (num_experts,) or not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() == 0:
            raise ValueError(f"routing histogram must hold {num_experts} non-negative weights, not all 0; got {routing!r}")
    else:
        raise ValueError(f"routing must be 'uniform', 'zipf' or a histogram of {num_experts} weights; got {routing!r}")
    total = tokens * top_k
    counts = np.zeros(num_experts, np.int64)
    remaining, open_ = total, np.ones(num_experts, bool)
    while remaining > 0 and open_.any():  # proportional shares, capped at one assignment per token
        share = np.where(open_, weights, 0.0)
        ideal = remaining * share / share.sum() if share.sum() > 0 else np.where(open_, remaining / open_.sum(), 0)
        add = np.floor(ideal).astype(np.int64)
        leftover = remaining - add.sum()
        add[np.argsort(-(ideal - add), kind="stable")[:leftover]] += 1
        add = np.minimum(add, tokens - counts)
        counts += add
        remaining = total - counts.sum()
        open_ = counts < tokens
    return counts


def _is_expert_bank(module) -> bool:
    params = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return all(getattr(p, "dim", lambda: 0)() == 3 for p in params) and hasattr(module, "num_experts")


@contextlib.contextmanager
def _routed_experts(model, routing, skew: float, seed: int):
    """Replace each expert bank's data-dependent dispatch by a fixed routing (``routing_counts``)."""
    import torch
    import torch.nn.functional as F

    banks = [(name, m) for name, m in model.named_modules() if _is_expert_bank(m)]

    def routed(bank, layer_seed):
        def forward(hidden_states, top_k_index, top_k_weights):
            tokens, k = top_k_index.shape
            counts = routing_counts(bank.num_experts, tokens, k, routing, skew, np.random.default_rng(layer_seed))
            final = torch.zeros_like(hidden_states)
            for expert, n in enumerate(counts.tolist()):
                if n == 0:
                    continue  # no token routed here: this expert's weights are not read
                token_idx = torch.arange(n, device=hidden_states.device)
                current = hidden_states.index_select(0, token_idx)
                gate, up = F.linear(current, bank.gate_up_proj[expert]).chunk(2, dim=-1)
                out = F.linear(bank.act_fn(gate) * up, bank.down_proj[expert])
                out = out * top_k_weights.index_select(0, token_idx)[:, :1]
                final.index_add_(0, token_idx, out.to(final.dtype))
            return final

        return forward

    for i, (_, bank) in enumerate(banks):
        bank.forward = routed(bank, [seed, i])
    try:
        yield len(banks)
    finally:
        for _, bank in banks:
            del bank.forward


# --- capture ---------------------------------------------------------------------------------------


class CaptureError(ValueError):
    """The model's code could not run on shape-only tensors."""


@contextlib.contextmanager
def _compiling():
    """``capturable`` AdamW keeps its step count a tensor (no ``.item()`` on a fake tensor); torch checks its
    device only outside compilation, which this reports."""
    import torch
    from unittest import mock

    with mock.patch.object(torch.compiler, "is_compiling", return_value=True):
        yield


def _default_loss(output):
    loss = getattr(output, "loss", None)
    if loss is not None:
        return loss
    first = next(_tensors(output.values() if isinstance(output, dict) else output))
    return first.float().mean()


def capture_trace(module, example_inputs, training: bool = False, *, model_type: str = "custom",
                  device: str = "fake", loss_fn: Optional[Callable] = None, lr: float = 1e-4) -> pd.DataFrame:
    """Capture every tensor access of ``module``'s forward pass, or of a training step.

    Takes any ``torch.nn.Module``, its example inputs (a tuple of positional
    arguments, or a dict of keyword arguments; tensors may be real, meta or
    fake), ``training`` (False: forward under ``no_grad`` in eval mode; True:
    forward in train mode, ``loss_fn(output)`` (default: ``output.loss``, else
    the mean of the first output), backward, and one AdamW step with foreach
    updates and optimizer state already initialized, as in a steady state),
    a ``model_type`` label, and ``device``: ``"fake"`` (default: shape-only
    tensors under FakeTensorMode), ``"meta"`` (the fallback for code that
    fake tensors cannot run) or ``"real"`` (run on the tensors as given).

    Returns a trace DataFrame, one row per access: ``tensor_id`` (parameter
    names for weights, ``grad:``/``adamw.exp_avg:`` prefixes, ``input:i``,
    ``<op>#n`` for intermediates; a part of a storage adds ``[i]`` or
    ``[i:j]`` (rows of the first dimension, e.g. one expert of a stacked
    expert bank) or ``[bytes a:b]``), ``size_mb``, ``reuse_distance``, ``stride`` (innermost element
    stride), ``op`` (aten operator), ``model_type``, ``access``
    (read/write), ``kind`` (weight, buffer, activation, gradient,
    optimizer_state, input), ``module`` (owning module path), ``layer``
    (index parsed from the path, -1 outside layers), ``phase``
    (forward/backward/optimizer), ``dtype`` and ``shape``.

    Raises CaptureError (a ValueError) naming the failing operator when the
    model cannot run on fake tensors, with the ``device="meta"`` hint.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    if device not in ("fake", "meta", "real"):
        raise ValueError(f"device must be 'fake', 'meta' or 'real', got {device!r}")
    was_training = module.training
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    fake_mode = FakeTensorMode(allow_non_fake_inputs=False) if device == "fake" else None

    def convert(tensor):
        if device == "fake":
            if isinstance(tensor, torch._subclasses.FakeTensor):
                return tensor
            return fake_mode.from_tensor(tensor)
        if device == "meta":
            moved = tensor.detach().to("meta")
            return moved.requires_grad_(tensor.requires_grad) if tensor.is_floating_point() else moved
        return tensor

    already_fake = device == "fake" and all(isinstance(p, torch._subclasses.FakeTensor) for p in params.values())
    if already_fake:
        fake_mode = next(iter(params.values())).fake_mode if params else fake_mode
    state_params = {n: convert(p) for n, p in params.items()}
    state_buffers = {n: convert(b) for n, b in buffers.items()}
    if device == "fake" and not already_fake:
        state_params = {n: p.detach().requires_grad_(params[n].requires_grad) for n, p in state_params.items()}
    if isinstance(example_inputs, dict):
        args, kwargs = (), {k: convert(v) if isinstance(v, torch.Tensor) else v for k, v in example_inputs.items()}
    else:
        inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        args, kwargs = tuple(convert(v) if isinstance(v, torch.Tensor) else v for v in inputs), {}

    state = _State()
    optimizer = None
    module.train(training)
    try:
        with contextlib.ExitStack() as stack:
            if fake_mode is not None:
                stack.enter_context(fake_mode)
            trainable = [p for p in state_params.values() if p.requires_grad]
            if training and trainable:
                optimizer = torch.optim.AdamW(trainable, lr=lr, foreach=True, capturable=True)
                for p in trainable:  # steady state: the moments exist before the recorded step
                    optimizer.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                          "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                          "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            stack.enter_context(_module_tracking(module, state))
            if not training:
                stack.enter_context(torch.no_grad())
            stack.enter_context(_annotator(state))
            stack.enter_context(_recorder(state))
            output = torch.func.functional_call(module, {**state_params, **state_buffers}, args, kwargs)
            if training:
                loss = (loss_fn or _default_loss)(output)
                state.phase = "backward"
                loss.backward()
                if optimizer is not None:
                    state.phase = "optimizer"
                    with _compiling():
                        optimizer.step()
    except Exception as error:  # report the operator fake tensors could not run, not a deep traceback
        if device == "fake" and isinstance(error, _fake_errors()):
            op = getattr(error, "func", None)
            raise CaptureError(
                f"the model cannot run on fake tensors: operator {op} failed ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); try capture_trace(..., device='meta')"
            ) from error
        raise
    finally:
        module.train(was_training)
    names = _names_from(state, state_params, state_buffers, args, kwargs, optimizer)
    return _to_frame(state, names, model_type)


def _fake_errors():
    from torch._subclasses import fake_tensor

    return tuple(getattr(fake_tensor, n) for n in ("DataDependentOutputException", "DynamicOutputShapeException",
                                                   "UnsupportedOperatorException", "UnsupportedFakeTensorException")
                 if hasattr(fake_tensor, n))


def _names_from(state: _State, params: dict, buffers: dict, args, kwargs, optimizer) -> dict:
    names = {}

    def claim(tensor, name, kind):
        key = tensor.untyped_storage()._cdata
        if key in state.storages:
            index = state.storages[key][0]
            names.setdefault(index, (name, kind))
            if tensor.dim() and tensor.nbytes == state.storage_bytes[index]:
                state.leading_dim.setdefault(index, int(tensor.shape[0]))

    for name, parameter in params.items():
        claim(parameter, name, "weight")
        if parameter.grad is not None:
            claim(parameter.grad, f"grad:{name}", "gradient")
        if optimizer is not None:
            for slot, value in optimizer.state.get(parameter, {}).items():
                if hasattr(value, "untyped_storage"):
                    claim(value, f"adamw.{slot}:{name}", "optimizer_state")
    for name, buffer in buffers.items():
        claim(buffer, name, "buffer")
    for i, tensor in enumerate(list(_tensors(args)) + list(_tensors(kwargs))):
        claim(tensor, f"input:{i}", "input")
    return names
