"""Capture the tensor accesses a real PyTorch model makes, on shape-only tensors.

``capture_trace(module, example_inputs)`` runs the model's own code under
``FakeTensorMode`` (tensors with shapes, dtypes and strides but no data), so a
7B or 70B model is traced in about a second with no memory and no weights.
A ``TorchDispatchMode`` sees every aten operator the forward (and, with
``training=True``, the backward and an AdamW step) executes and records, for
each, the regions it reads (its tensor inputs) and writes (its outputs and the
inputs its schema marks as mutated: in-place and ``_foreach_`` ops). The aim
is the bytes the same operator's GPU kernel moves, not what the CPU does.

Identity and bytes: an access touches a region of an underlying storage: the
bytes its tensor's elements occupy (sizes, strides, offset), never its span and
never ``data_ptr`` (0 on meta, reused on CPU). View and alias operators (``t``,
``view``, ``_unsafe_view``, ``expand``, ``split``, ...) move no data and record
nothing; tied weights share a storage and so are one tensor. Since
``lab.simulate`` needs one size per tensor id, each storage's accessed bytes
are split into atoms, the bytes touched by exactly the same recorded regions,
and an access is recorded as one row per atom it covers: the write of GPT-2's
fused QKV projection is three rows (Q, K and V parts, 1/3 each) and a read of
the Q view is one row, the Q part, so a view is charged its own bytes and a
read of a slice just written hits on chip. A storage accessed only whole keeps
one row per access and its plain name.

Gathers: an embedding lookup reads one table row per index (the indices are
fake, so this is the count for distinct tokens, an upper bound, placed at rows
``0..n-1``), not the table. MoE expert banks are dispatched by a fixed seeded
routing (``routing_counts``, ``route_tokens``: each token to exactly ``top_k``
experts) whose gathers and scatter-adds move only the routed tokens' rows.

Attention: ``scaled_dot_product_attention`` is recorded as one fused
(FlashAttention) kernel: forward reads Q, K, V (and the mask), writes the
output and, when training, the fp32 log-sum-exp per query row; backward reads
Q, K, V, O, dO and the log-sum-exp and writes dQ, dK, dV. The s x s scores and
probabilities a CPU's math path would store never reach DRAM on an
accelerator. FlashAttention-2's backward scratch (the fp32 dQ accumulator and
rowsum(dO*O)) is not modelled.

GPU kernels, not CPU artefacts: training dropout is ``native_dropout`` (one
kernel writing the output and a 1-byte bool mask; the CPU path builds a mask in
the activation dtype with bernoulli_ and div_); allocation-only operators
(``empty_like``, ``new_empty``, ...) record nothing and fills (``zeros_like``,
``ones_like``, ...) only write, their input giving just a shape; layer-norm
statistics (mean, 1/std) are fp32 as a GPU keeps them, not the CPU's 16-bit;
a causal mask is not materialized when nothing is padded (transformers passes
SDPA ``is_causal=True`` on a GPU, but cannot tell on fake tensors).

Persistence: results that must outlive the step (``persist``: by default the
model's outputs and loss, the KV cache, updated parameters and optimizer
state; only those the step wrote) get one final row each, ``op ==
"persist"`` and ``access == "persist"``, after every other access: the next
step or the host reads them, so a simulator must not drop them as dead. The
row moves no data itself: a buffer that holds such a tensor dirty at its mark
writes it back, and one that evicted it dirty wrote it back then
(``lab.simulate`` and ``lab.optimal`` follow these semantics).

Ops: every recorded aten call (and each fused attention, gather or scatter)
is one kernel-level op with an ``op_index`` (0, 1, ... in trace order), and
each row of the op repeats its ``flops`` (executed floating-point operations,
by torch's own formulas: ``torch.utils.flop_counter``'s registry for matrix
products and convolutions, ``attention_flops`` for fused attention; 0 for
elementwise ops, norms, reductions and copies), ``launches`` (kernels: 1, or
torch's multi_tensor_apply chunking for a ``_foreach_`` op), ``host_calls``
(aten calls the host dispatched since the previous op, the op's own included:
views, aliases, allocations and scalar reads move no data but cost host time)
and ``grad_mode`` (autograd records the op: a training forward, or the
backward). The optimizer is AdamW (``foreach=True``, not capturable), as torch
runs it by default: its step counts are host scalars, whose updates run no
kernel and are not recorded.

Torch is imported here only: the rest of ``lab`` never needs it.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from lab.checks import first_line
from lab.workloads import lowering as _lowering
from lab.trace.workload import reuse_distances
from lab.units import BYTES_PER_MB

KINDS = ("weight", "buffer", "activation", "gradient", "optimizer_state", "input")
_LAYER_PATTERN = re.compile(r"\.(?:layers|layer|h|blocks|block|stages)\.(\d+)(?:\.|$)")
# operators that overwrite a mutated argument without reading it first
_OVERWRITES = {"copy_", "fill_", "zero_", "normal_", "uniform_", "bernoulli_", "random_", "exponential_",
               "_foreach_zero_", "_foreach_copy_", "index_put_", "masked_fill_", "scatter_"}
# operators that only allocate (no kernel) and operators whose tensor input gives only a shape and dtype
_ALLOCATES = {"empty_like", "new_empty", "new_empty_strided", "empty", "empty_strided", "empty_permuted"}
_FILLS_LIKE = {"zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "randint_like", "new_zeros",
               "new_ones", "new_full"}
# arguments an operator updates in place though its schema does not say so (batch norm's running statistics,
# when training)
_UNANNOTATED_UPDATES = {"native_batch_norm": ("running_mean", "running_var"),
                        "cudnn_batch_norm": ("running_mean", "running_var")}
_NOISE_NAMESPACES = {"prim", "profiler"}
_NOISE_OPS = {"lift_fresh", "lift_fresh_copy", "detach", "alias", "_local_scalar_dense", "sym_size", "sym_stride",
              "sym_numel", "sym_storage_offset", "is_same_size", "_to_dense"}


@dataclass
class _Region:
    """The bytes of one storage that an access touches: ``offset + sum(i_k * strides[k])`` for every index,
    each ``itemsize`` bytes, with ``rows`` (when set) the only indices of the first dimension touched."""

    storage: int  # index of the storage, in order of first sight
    offset: int  # bytes
    nbytes: int  # distinct bytes touched (not the span)
    dtype: str
    shape: tuple
    stride: int  # innermost element stride
    sizes: tuple = ()
    strides: tuple = ()  # bytes
    itemsize: int = 1
    rows: Optional[np.ndarray] = None  # int64 indices of the first dimension, when only some rows are touched

    @property
    def key(self) -> tuple:
        rows = None if self.rows is None else self.rows.tobytes()
        return self.storage, self.offset, self.sizes, self.strides, self.itemsize, rows


@dataclass
class _Record:
    op: str
    region: _Region
    access: str
    module: str
    phase: str
    op_index: int = -1  # the recorded op this access belongs to (``_State.ops``); -1: none (a persist row)


@dataclass(frozen=True)
class _OpInfo:
    """What one recorded kernel-level op costs beyond its bytes (see ``capture_trace``'s per-op columns)."""

    flops: float = 0.0
    launches: int = 1
    host_calls: int = 1
    grad_mode: bool = False


@dataclass
class _State:
    phase: str = "forward"
    paused: int = 0
    module_stack: list = field(default_factory=lambda: [""])
    storages: dict = field(default_factory=dict)  # storage cdata -> (index, storage) (kept alive: no reuse)
    storage_bytes: dict = field(default_factory=dict)  # storage index -> its size in bytes
    leading_dim: dict = field(default_factory=dict)  # storage index -> first dimension of the named tensor
    first_writer: dict = field(default_factory=dict)  # storage index -> (op, phase)
    widened: dict = field(default_factory=dict)  # storage index -> element-size factor (fp32 where a GPU keeps it)
    records: list = field(default_factory=list)
    ops: list = field(default_factory=list)  # _OpInfo per recorded op, indexed by op_index
    calls: int = 0  # aten calls dispatched since the last recorded op (views, noise and allocations included)
    host: set = field(default_factory=set)  # storages kept on the host (AdamW's step counts): no kernel touches them
    lowering: Optional[str] = None  # rule set of lab.workloads.lowering applied to each call (None: pure aten)

    def add_op(self, records: list, flops: float = 0.0, launches: int = 1, own_call: int = 0,
               grad_mode: Optional[bool] = None) -> None:
        """Append ``records`` as one recorded op (nothing when empty: an op moving no bytes is no kernel): its
        op_index, the host calls since the previous op (``own_call``: the op's own, when the dispatcher did not
        count it), whether autograd records it (``grad_mode``; default: grad mode in the forward, always in the
        backward)."""
        if not records:
            return
        import torch

        index = len(self.ops)
        for record in records:
            record.op_index = index
        if grad_mode is None:
            grad_mode = self.phase == "backward" or (self.phase == "forward" and torch.is_grad_enabled())
        self.ops.append(_OpInfo(float(flops), int(launches), self.calls + own_call, bool(grad_mode)))
        self.calls = 0
        self.records.extend(records)

    def storage_index(self, tensor) -> int:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in self.storages:
            self.storages[key] = (len(self.storages), storage)
            self.storage_bytes[len(self.storages) - 1] = storage.nbytes()
        return self.storages[key][0]

    def new_storage(self, nbytes: int) -> int:
        """A storage no tensor of the model holds (a library's temporary), of ``nbytes`` bytes: its index."""
        index = len(self.storages)
        self.storages[("lowering", index)] = (index, None)
        self.storage_bytes[index] = int(nbytes)
        return index

    def module(self) -> str:
        if self.phase == "backward":
            import torch

            node = torch._C._current_autograd_node()
            return node.metadata.get("lab_module", "") if node is not None else ""
        return self.module_stack[-1] if self.phase == "forward" else "optimizer"


def _region(state: _State, tensor, rows: Optional[np.ndarray] = None) -> Optional[_Region]:
    """The region ``tensor`` touches: its own elements (a broadcast dimension, stride 0, touches its elements
    once), or with ``rows`` only those indices of its first dimension (a gather)."""
    if tensor.numel() == 0:
        return None
    size = tensor.element_size()
    storage = state.storage_index(tensor)
    factor = state.widened.get(storage, 1)
    size *= factor
    sizes = tuple(int(n) for n in tensor.shape)
    strides = tuple(int(st) * size for st in tensor.stride())
    if rows is not None:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if not sizes or rows.size == 0:
            return None
    elements = 1
    for k, (n, st) in enumerate(zip(sizes, strides)):
        if k == 0 and rows is not None:
            elements *= int(rows.size) if st else 1
        elif st:
            elements *= n
    return _Region(
        storage=storage,
        offset=tensor.storage_offset() * size,
        nbytes=elements * size,
        dtype="float32" if factor > 1 else str(tensor.dtype).removeprefix("torch."),
        shape=(int(rows.size),) + sizes[1:] if rows is not None else sizes,
        stride=int(tensor.stride()[-1]) if tensor.dim() else 1,
        sizes=sizes,
        strides=strides,
        itemsize=size,
        rows=rows,
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
            if namespace in _NOISE_NAMESPACES:
                return out
            state.calls += 1  # host work whether or not a kernel runs (views, aliases, allocations too)
            if name in _NOISE_OPS:
                return out
            schema = func._schema
            if _is_view(schema, args, kwargs, out):
                return out  # no data moves
            _record_op(state, f"{namespace}.{name}", schema, args, kwargs, out, func)
            return out

    return Recorder()


def _record_op(state: _State, op: str, schema, args, kwargs, out, func=None) -> None:
    name = op.split(".")[-1]
    if name in _ALLOCATES:
        return  # allocation only: a GPU runs no kernel and moves no data
    if state.host and _on_host(state, args, kwargs):
        return  # a CPU op on host scalars (AdamW's step counts): no kernel
    module, phase = state.module(), state.phase
    bound = list(zip(schema.arguments, args)) + [(a, kwargs[a.name]) for a in schema.arguments if a.name in kwargs]
    mutated, reads = [], []
    updates = ()
    if name in _UNANNOTATED_UPDATES and any(a.name == "training" and v for a, v in bound):
        updates = _UNANNOTATED_UPDATES[name]
    for argument, value in bound:
        writes = (argument.alias_info is not None and argument.alias_info.is_write) or argument.name in updates
        for tensor in _tensors(value):
            if name in _FILLS_LIKE and not writes:
                continue  # the input gives only the shape and dtype of the filled output
            rows = None
            if name == "embedding" and argument.name == "weight":
                rows = _gathered_rows(tensor, bound)
            region = _region(state, tensor, rows)
            if region is None:
                continue
            if writes:
                mutated.append(region)
                if name not in _OVERWRITES and argument.name != "out":
                    reads.append(region)
            else:
                reads.append(region)
    if name == "native_layer_norm":  # a GPU keeps the mean and 1/std in fp32 (the accumulation type)
        for tensor in list(_tensors(out))[1:]:
            if tensor.element_size() == 2 and tensor.is_floating_point():
                index = state.storage_index(tensor)
                if index not in state.widened:
                    state.widened[index] = 2
                    state.storage_bytes[index] *= 2
    written = {r.key for r in mutated}
    records = [_Record(op, region, "read", module, phase) for region in reads]
    records += [_Record(op, region, "write", module, phase) for region in mutated]
    for tensor in _tensors(out):
        region = _region(state, tensor)
        if region is not None and region.key not in written:
            written.add(region.key)
            records.append(_Record(op, region, "write", module, phase))
            state.first_writer.setdefault(region.storage, (name, phase))
    if records:
        flops = _flops(func, args, kwargs, out) if func is not None else 0.0
        rule = None if state.lowering is None else _lowering.match(state.lowering, name, {a.name: v for a, v in bound},
                                                                   out)
        if rule is not None:
            _lowered(state, rule, op, bound, out, records, flops)
            return
        launches = _foreach_launches(schema, bound, out) if name.startswith("_foreach_") else 1
        state.add_op(records, flops, launches)


def _lowered(state: _State, rule, op: str, bound, out, records: list, flops: float) -> None:
    """Record one call as the kernels ``rule`` (a ``lab.workloads.lowering.Lowering``) expands it to: each step
    its own op, reading and writing the regions of its roles (arguments, ``out``, all of the call's own reads or
    writes, or the rule's temporaries: new storages, dead after their last reader). ``records`` are the call's
    own records, ``flops`` its FLOPs (carried by the steps that say so)."""
    module, phase = state.module(), state.phase
    roles: dict = {_lowering.ALL: ([r.region for r in records if r.access == "read"],
                                  [r.region for r in records if r.access == "write"])}
    for argument, value in bound:
        regions = [_region(state, t) for t in _tensors(value)]
        roles[argument.name] = [r for r in regions if r is not None]
    roles[_lowering.OUT] = [r for r in (_region(state, t) for t in _tensors(out)) if r is not None]
    for temporary in rule.temporaries:
        like = roles[temporary.like][0]
        shape = like.shape
        if temporary.layout == "nhwc" and len(shape) == 4:
            shape = (shape[0], shape[2], shape[3], shape[1])
        index = state.new_storage(like.nbytes)
        strides, step = [], like.itemsize
        for n in reversed(shape):
            strides.insert(0, step)
            step *= n
        roles[temporary.name] = [_Region(storage=index, offset=0, nbytes=like.nbytes, dtype=like.dtype, shape=shape,
                                         stride=1, sizes=shape, strides=tuple(strides), itemsize=like.itemsize)]
        state.first_writer[index] = (temporary.name, phase)
    for step in rule.steps:
        name = step.op or op
        reads = [region for role in step.reads
                 for region in (roles[role][0] if role == _lowering.ALL else roles.get(role, []))]
        writes = [region for role in step.writes
                  for region in (roles[role][1] if role == _lowering.ALL else roles.get(role, []))]
        step_records = [_Record(name, region, "read", module, phase) for region in reads]
        step_records += [_Record(name, region, "write", module, phase) for region in writes]
        state.add_op(step_records, flops if step.flops else 0.0, step.launches)


def _on_host(state: _State, args, kwargs) -> bool:
    """Whether an op's tensors are all host scalars (0-d), one of them a storage in ``state.host``."""
    tensors = list(_tensors(args)) + list(_tensors(kwargs))
    return (any(t.untyped_storage()._cdata in state.host for t in tensors)
            and all(t.dim() == 0 for t in tensors))


def _flops(func, args, kwargs, out) -> float:
    """Floating-point operations of one aten call by torch's own formulas (``torch.utils.flop_counter``'s
    registry: matrix products, convolutions and their backward, attention kernels), on the shapes alone; 0 for
    every other op (elementwise, norms, reductions, copies: memory-bound at every size here)."""
    from torch.utils.flop_counter import flop_registry

    formula = flop_registry.get(func._overloadpacket)
    return float(formula(*args, **kwargs, out_val=out)) if formula is not None else 0.0


# torch's multi_tensor_apply (ATen/native/cuda/MultiTensorApply.cuh), 4 KB kernel-argument tables, which the
# measured H200 run used (ground_truth/h200: blocks of at most 320 chunks): tensors per launch by depth (the
# number of tensor lists), for ops with one scalar per tensor, blocks per launch and elements per chunk
_MTA_MAX_TENSORS = (110, 64, 48, 36, 30)
_MTA_MAX_TENSORS_SCALARLIST = (96, 64, 48, 36, 30)
_MTA_MAX_BLOCKS = 320
_MTA_CHUNK = 65536


def _foreach_launches(schema, bound, out) -> int:
    """Kernels a ``_foreach_`` op launches, as torch's multi_tensor_apply chunks its lists: one block per chunk
    of 65,536 elements of each tensor, a new launch when a launch's blocks (320) or tensors (by depth: the
    tensor lists read, plus the output list of an op that is not in place) are full. Empty tensors are
    skipped; at least 1."""
    lists = [v for a, v in bound if isinstance(v, (list, tuple)) and v and all(hasattr(t, "numel") for t in v)]
    if not lists:
        return 1
    in_place = any(a.alias_info is not None and a.alias_info.is_write for a, _ in bound)
    depth = min(len(lists) + (0 if in_place or not isinstance(out, (list, tuple)) or not out else 1), 5)
    scalar_list = any(str(a.type).startswith(("Scalar[]", "float[]", "complex[]")) for a, _ in bound)
    return multi_tensor_launches([int(t.numel()) for t in lists[0]], depth, scalar_list)


def multi_tensor_launches(numels, depth: int, scalar_list: bool = False) -> int:
    """Kernels torch's multi_tensor_apply launches (CUDA, 4 KB argument tables) for a ``_foreach_`` op over
    tensors of ``numels`` elements with ``depth`` tensor lists (1-5), one scalar per tensor when
    ``scalar_list``: a launch holds at most 320 blocks of 65,536 elements and, by depth, 110, 64, 48, 36 or 30
    tensors (96 for depth 1 with a scalar list); a tensor's chunks may span launches; empty tensors are
    skipped. At least 1."""
    max_tensors = (_MTA_MAX_TENSORS_SCALARLIST if scalar_list else _MTA_MAX_TENSORS)[depth - 1]
    launches = blocks = tensors = 0
    for numel in numels:
        if numel == 0:
            continue
        tensors += 1
        full, blocks = divmod(blocks + -(-int(numel) // _MTA_CHUNK), _MTA_MAX_BLOCKS)  # launches with all blocks used
        launches += full
        if blocks == 0:  # the last full launch ended with this tensor's last chunk
            tensors = 0
        elif full:  # this tensor's remaining chunks open the next launch
            tensors = 1
        if tensors == max_tensors:
            launches, blocks, tensors = launches + 1, 0, 0
    return max(launches + (blocks > 0), 1)


def _gathered_rows(weight, bound) -> Optional[np.ndarray]:
    """Rows of an embedding table a gather reads: one per index, at most the table's rows. The indices are
    fake (no values), so this is the count for distinct indices (an upper bound; repeated tokens read
    fewer rows), placed at rows ``0..n-1`` of the table."""
    indices = next((v for a, v in bound if a.name == "indices"), None)
    if indices is None or not weight.dim():
        return None
    return np.arange(min(int(indices.numel()), int(weight.shape[0])), dtype=np.int64)


def _append(state: _State, op: str, reads=(), writes=(), flops: float = 0.0,
            grad_mode: Optional[bool] = None) -> None:
    """Record ``op`` reading and writing these regions (None entries skipped), in the current module and phase,
    as one op of ``flops`` whose own call the dispatcher did not see (its kernels ran paused)."""
    module, phase = state.module(), state.phase
    records = []
    for access, regions in (("read", reads), ("write", writes)):
        for region in regions:
            if region is not None:
                records.append(_Record(op, region, access, module, phase))
                if access == "write":
                    state.first_writer.setdefault(region.storage, (op.split(".")[-1], phase))
    state.add_op(records, flops, own_call=1, grad_mode=grad_mode)


def attention_flops(q_shape, k_shape, v_shape, is_causal: bool = False, backward: bool = False) -> float:
    """Executed floating-point operations of a fused (flash) attention kernel, by torch's formulas
    (``torch.utils.flop_counter.sdpa_flop_count``, ``sdpa_backward_flop_count``: Q K^T and P V, and the
    backward's five products): shapes (batch, heads, seq, dim), K and V with fewer heads (grouped queries)
    counted at Q's heads. Causal attention over a square score matrix executes half of it (a flash kernel
    skips the fully masked blocks; the diagonal blocks' extra is not counted), so it is halved."""
    from torch.utils import flop_counter

    *lead, h, s_q, _ = q_shape
    k_shape = (*lead, h, *tuple(k_shape)[-2:])
    v_shape = (*lead, h, *tuple(v_shape)[-2:])
    q_shape = tuple(q_shape)
    if len(q_shape) == 3:  # (heads, seq, dim): one batch
        q_shape, k_shape, v_shape = (1, *q_shape), (1, *k_shape), (1, *v_shape)
    if backward:
        o_shape = (*q_shape[:-1], v_shape[-1])
        flops = flop_counter.sdpa_backward_flop_count(o_shape, q_shape, k_shape, v_shape)
    else:
        flops = flop_counter.sdpa_flop_count(q_shape, k_shape, v_shape)
    return flops / 2 if is_causal and s_q == k_shape[-2] else float(flops)


_SDPA_ARGUMENTS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _fused_attention(state: _State):
    """An autograd function recording what a fused (flash) attention kernel moves.

    Forward: reads Q, K, V (and the mask), writes O in the (batch, seq, heads, dim) layout fused kernels write
    and, when a gradient will be needed, the log-sum-exp of each query row (fp32, batch x heads x queries).
    Backward: reads Q, K, V, O, dO and the log-sum-exp (and the mask), writes dQ, dK, dV; the s x s scores
    and probabilities are recomputed on chip, never stored (Dao et al., FlashAttention-2, 2023)."""
    import torch
    import torch.nn.functional as F

    op = "aten.scaled_dot_product_attention"

    class FusedAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, mask, options):
            needs_lse = any(ctx.needs_input_grad[:3])
            state.paused += 1
            try:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **options)
                if out.dim() == 4:  # the (batch, seq, heads, dim) layout fused kernels write, fake or real
                    out = out.transpose(1, 2).contiguous().transpose(1, 2)
                lse = q.new_empty(tuple(q.shape[:-1]), dtype=torch.float32) if needs_lse else None
            finally:
                state.paused -= 1
            causal = bool(options.get("is_causal", False)) and mask is None
            _append(state, op, reads=[_region(state, t) for t in (q, k, v, mask) if t is not None],
                    writes=[_region(state, out)] + ([_region(state, lse)] if lse is not None else []),
                    flops=attention_flops(q.shape, k.shape, v.shape, causal),
                    grad_mode=needs_lse)  # an autograd Function's forward runs with grad mode off
            ctx.save_for_backward(q, k, v, out, lse, mask)
            ctx.causal = causal
            return out

        @staticmethod
        def backward(ctx, grad_out):
            q, k, v, out, lse, mask = ctx.saved_tensors
            state.paused += 1
            try:
                grads = [torch.empty_like(t) for t in (q, k, v)]
            finally:
                state.paused -= 1
            _append(state, "aten._scaled_dot_product_flash_attention_backward",
                    reads=[_region(state, t) for t in (q, k, v, out, grad_out, lse, mask) if t is not None],
                    writes=[_region(state, g) for g in grads],
                    flops=attention_flops(q.shape, k.shape, v.shape, ctx.causal, backward=True))
            return (*grads, None, None)

    return FusedAttention


def _annotator(state: _State):
    """Records scaled_dot_product_attention as one fused op (``_fused_attention``), runs training dropout as
    the GPU's fused kernel (``native_dropout``: a 1-byte bool mask, not the CPU path's mask in the
    activation dtype) and tags autograd nodes with their module."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    fused = _fused_attention(state)

    class Annotator(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention and not state.paused:
                bound = dict(zip(_SDPA_ARGUMENTS, args), **kwargs)
                q, k, v = bound.pop("query"), bound.pop("key"), bound.pop("value")
                mask = bound.pop("attn_mask", None)
                out = fused.apply(q, k, v, mask, bound)
            elif func is F.dropout and not state.paused and _fused_dropout(args, kwargs):
                p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
                out = torch.ops.aten.native_dropout(args[0] if args else kwargs["input"], float(p), True)[0]
            else:
                out = func(*args, **kwargs)
            if state.phase == "forward" and torch.is_grad_enabled():
                for tensor in _tensors(out):
                    if tensor.grad_fn is not None and "lab_module" not in tensor.grad_fn.metadata:
                        tensor.grad_fn.metadata["lab_module"] = state.module_stack[-1]
            return out

    return Annotator()


def _fused_dropout(args, kwargs) -> bool:
    """Whether an ``F.dropout`` call drops anything (training, p > 0, not in place)."""
    names = ("input", "p", "training", "inplace")
    bound = {"p": 0.5, "training": True, "inplace": False, **dict(zip(names, args)), **kwargs}
    return bool(bound["training"]) and float(bound["p"]) > 0 and not bound["inplace"]


@contextlib.contextmanager
def _causal_mask_skipped():
    """Build attention masks as a GPU run does. With no padding mask and one sequence per batch row,
    transformers hands SDPA ``is_causal=True`` instead of a materialized s x s mask (no mask kernels run), but on
    fake or meta tensors it cannot read the position ids or ``q_offset`` and builds the mask. Here, position
    ids that cannot be read are taken as one sequence per row (not packed: the presets' inputs), and a causal
    mask with no padding mask is skipped, as on real tensors."""
    import sys

    module = sys.modules.get("transformers.masking_utils")
    ignore_causal = getattr(module, "_ignore_causal_mask_sdpa", None)
    find_packed = getattr(module, "find_packed_sequence_indices", None)
    if ignore_causal is None or find_packed is None:
        yield
        return

    def ignore(padding_mask, q_length, kv_length, q_offset, kv_offset, local_attention_size=None):
        if (padding_mask is None and (q_length == 1 or kv_length == q_length)
                and (local_attention_size is None or kv_length < local_attention_size)):
            return True
        return ignore_causal(padding_mask, q_length, kv_length, q_offset, kv_offset, local_attention_size)

    def packed(position_ids):
        import torch

        if position_ids.is_meta or isinstance(position_ids, torch._subclasses.FakeTensor):
            return None  # the values cannot be read: one sequence per row
        return find_packed(position_ids)

    module._ignore_causal_mask_sdpa, module.find_packed_sequence_indices = ignore, packed
    try:
        yield
    finally:
        module._ignore_causal_mask_sdpa, module.find_packed_sequence_indices = ignore_causal, find_packed


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


_MAX_BLOCKS = 1 << 22  # blocks per storage beyond which its views are kept apart instead of partitioned


def _runs(region: _Region, limit: int):
    """The region as equal runs of contiguous bytes: (sorted int64 start offsets, run length in bytes, the gcd of
    the steps between starts (0 for one run)), or None when it has more than ``limit`` runs."""
    # (length, stride) first: a dimension of 10**12 elements must be refused before it is spelled out
    dims = [(int(n), st) for k, (n, st) in enumerate(zip(region.sizes, region.strides))
            if st and n > 1 and not (k == 0 and region.rows is not None)]
    dims.sort(key=lambda d: d[1])
    run = region.itemsize
    while dims and dims[0][1] == run:
        run *= dims[0][0]
        dims.pop(0)
    if region.rows is not None and region.rows.size > 1 and region.strides and region.strides[0]:
        dims.append((region.rows, region.strides[0]))
        dims.sort(key=lambda d: d[1])
    if np.prod([float(n if isinstance(n, int) else len(n)) for n, _ in dims]) > limit:
        return None
    dims = [(np.arange(n, dtype=np.int64) if isinstance(n, int) else n, st) for n, st in dims]
    starts = np.array([region.offset], np.int64)
    if region.rows is not None and (region.rows.size == 1 or not region.strides or not region.strides[0]):
        starts += int(region.rows[0]) * (region.strides[0] if region.strides else 0)
    step = 0
    for values, st in reversed(dims):  # outermost first: starts come out in increasing order
        starts = (starts[:, None] + values * st).ravel()
        step = int(np.gcd(step, int(np.gcd.reduce(np.diff(values) * st)) if len(values) > 1 else 0))
    if len(starts) > 1 and not (starts[1:] >= starts[:-1]).all():
        starts = np.sort(starts)
    return starts, run, step


def _partition(regions: list, limit: int = _MAX_BLOCKS):
    """Split one storage's accessed bytes into atoms: maximal sets of bytes touched by exactly the same regions.

    Returns (atoms, members): ``atoms`` a list of (first byte, end byte, bytes, contiguous) in order of first
    byte, ``members[i]`` the atom indices making up ``regions[i]``; None when the storage is too fragmented
    (more than ``limit`` blocks of the common block size)."""
    runs = [_runs(r, limit) for r in regions]
    if any(r is None for r in runs):
        return None
    block = 0
    for starts, run, step in runs:
        block = int(np.gcd.reduce([block, run, step, int(starts[0])]))
    end = max(int(starts[-1]) + run for starts, run, _ in runs)
    n_blocks = -(-end // block)
    if n_blocks > limit:
        return None
    keys = np.random.default_rng(0).integers(1, 2**63, size=len(regions), dtype=np.int64).astype(np.uint64) | 1
    signature = np.zeros(n_blocks, np.uint64)
    blocks = []
    for (starts, run, _), key in zip(runs, keys):
        b = ((starts // block)[:, None] + np.arange(run // block, dtype=np.int64)).ravel()
        signature[b] += key
        blocks.append(b)
    # a pattern repeated every `period` blocks (halves of every head of a projection): atoms from one period
    period = 0
    for _, _, step in runs:
        period = int(np.gcd(period, step))
    period //= block
    reps = 1
    if 0 < period < n_blocks and n_blocks % period == 0 and np.array_equal(signature[period:], signature[:-period]):
        reps, signature = n_blocks // period, signature[:period]
        blocks = [b[b < period] for b in blocks]
    touched = np.flatnonzero(signature)
    _, first, inverse = np.unique(signature[touched], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # atoms in order of their first byte
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    atom_of_block = np.full(signature.size, -1, np.int64)
    atom_of_block[touched] = rank[inverse.ravel()]
    counts = np.bincount(atom_of_block[touched], minlength=order.size)
    lo = np.full(order.size, signature.size, np.int64)
    hi = np.zeros(order.size, np.int64)
    np.minimum.at(lo, atom_of_block[touched], touched)
    np.maximum.at(hi, atom_of_block[touched], touched + 1)
    last = (reps - 1) * signature.size  # first block of the last period
    atoms = [(int(lo[a]) * block, (int(hi[a]) + last) * block, int(counts[a]) * reps * block,
              int(hi[a] - lo[a]) == int(counts[a]) and (reps == 1 or int(counts[a]) == signature.size))
             for a in range(order.size)]
    members = [np.flatnonzero(np.bincount(atom_of_block[b], minlength=order.size)).tolist() for b in blocks]
    return atoms, members


def _atoms(state: _State) -> dict:
    """Region key -> list of (name suffix, bytes): the parts of its storage each recorded region is made of.

    Every storage's accessed bytes are split into atoms, the bytes touched by exactly the same recorded
    regions (``_partition``): a write of GPT-2's fused QKV projection is three writes (Q, K, V parts) and a
    read of the Q view is a read of the Q part, so a view is charged its own bytes and shares identity with
    the data it aliases. A storage accessed only as a whole keeps its plain name; a part is named by the rows
    (``[i]``, ``[i:j]``) or bytes (``[bytes a:b]``) of a contiguous atom, or ``[part k]`` (k-th in order of
    first byte) of a strided one. A storage too fragmented to partition (over ``_MAX_BLOCKS`` blocks) keeps
    each distinct region apart (``[view k]``), charged its own bytes."""
    by_storage: dict = {}
    for record in state.records:
        by_storage.setdefault(record.region.storage, {}).setdefault(record.region.key, record.region)
    parts = {}
    partitions: dict = {}  # the same views of same-shaped storages (every layer's) are partitioned once
    for storage, regions in by_storage.items():
        total = state.storage_bytes[storage]
        rows = state.leading_dim.get(storage)
        keys, values = list(regions), list(regions.values())
        if all(r.offset == 0 and r.nbytes == total for r in values):
            parts.update({k: [("", total)] for k in keys})
            continue
        pattern = (total, tuple(key[1:] for key in keys))
        if pattern not in partitions:
            partitions[pattern] = _partition(values, _MAX_BLOCKS)
        result = partitions[pattern]
        if result is None:
            for k, (key, region) in enumerate(regions.items()):
                whole = region.offset == 0 and region.nbytes == total
                parts[key] = [("" if whole else f"[view {k}]", region.nbytes)]
            continue
        atoms, members = result
        names = []
        for k, (lo, hi, nbytes, contiguous) in enumerate(atoms):
            if len(atoms) == 1 and lo == 0 and nbytes == total:
                names.append("")
            elif contiguous:
                names.append(f"[{_part(lo, hi, total, rows)}]")
            else:
                names.append(f"[part {k}]")
        for key, member in zip(keys, members):
            parts[key] = [(names[a], atoms[a][2]) for a in member]
    return parts


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
    parts = _atoms(state)
    rows = []  # (record, tensor id, bytes)
    for r in records:
        name, _ = names[r.region.storage]
        for suffix, nbytes in parts[r.region.key]:
            rows.append((r, name + suffix, nbytes))
    ids = [tensor_id for _, tensor_id, _ in rows]
    modules = [r.module for r, _, _ in rows]
    trace = pd.DataFrame({
        "tensor_id": ids,
        "size_mb": np.array([nbytes for _, _, nbytes in rows], dtype=np.float64) / BYTES_PER_MB,
        "reuse_distance": reuse_distances(ids),
        "stride": np.array([r.region.stride for r, _, _ in rows], dtype=np.int64),
        "op": [r.op for r, _, _ in rows],
        "model_type": model_type,
        "access": [r.access for r, _, _ in rows],
        "kind": [names[r.region.storage][1] for r, _, _ in rows],
        "module": modules,
        "layer": np.array([_layer_of(m) for m in modules], dtype=np.int64),
        "phase": [r.phase for r, _, _ in rows],
        "dtype": [r.region.dtype for r, _, _ in rows],
        "shape": [str(r.region.shape) for r, _, _ in rows],
    })
    return trace.assign(**_op_columns(state, np.array([r.op_index for r, _, _ in rows], dtype=np.int64)))


def _op_columns(state: _State, op_index: np.ndarray) -> dict:
    """The per-op columns of each row (``op_index``, ``flops``, ``launches``, ``host_calls``, ``grad_mode``),
    from its op's ``_OpInfo``; a row of no op (op_index -1: a persist row) gets 0 and False."""
    info = state.ops
    flops = np.array([0.0] + [o.flops for o in info], dtype=np.float64)
    launches = np.array([0] + [o.launches for o in info], dtype=np.int64)
    host_calls = np.array([0] + [o.host_calls for o in info], dtype=np.int64)
    grad_mode = np.array([False] + [o.grad_mode for o in info], dtype=np.bool_)
    at = op_index + 1  # row 0 of each table: no op
    if launches.max() > np.iinfo(np.int16).max:
        raise ValueError(f"an op would launch {int(launches.max()):,} kernels, more than the launches column "
                         f"(int16) holds")
    return {"op_index": op_index, "flops": flops[at], "launches": launches[at].astype(np.int16),
            "host_calls": host_calls[at].astype(np.int32), "grad_mode": grad_mode[at]}


def _part(lo: int, hi: int, total: int, rows: Optional[int]) -> str:
    """Bytes ``lo:hi`` of a storage: rows ``i`` or ``i:j`` of a named tensor's first dimension when they are
    whole rows (an expert of a stacked expert bank), else the byte range ``bytes a:b``."""
    if rows:
        row = total // rows
        if row and lo % row == 0 and hi % row == 0:
            start, stop = lo // row, hi // row
            return f"{start}" if stop == start + 1 else f"{start}:{stop}"
    return f"bytes {lo}:{hi}"


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
        rng = rng or np.random.default_rng(0)
        weights = rng.permutation(weights)
    elif not isinstance(routing, str):
        weights = np.asarray(routing, dtype=np.float64)
        if weights.shape != (num_experts,) or not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() == 0:
            raise ValueError(f"routing histogram must hold {num_experts} non-negative weights, not all 0; got {routing!r}")
    else:
        raise ValueError(f"routing must be 'uniform', 'zipf' or a histogram of {num_experts} weights; got {routing!r}")
    total = tokens * top_k
    tie_break = (rng or np.random.default_rng(0)).permutation(num_experts)
    counts = np.zeros(num_experts, np.int64)
    remaining, open_ = total, np.ones(num_experts, bool)
    while remaining > 0 and open_.any():  # proportional shares, capped at one assignment per token
        share = np.where(open_, weights, 0.0)
        ideal = remaining * share / share.sum() if share.sum() > 0 else np.where(open_, remaining / open_.sum(), 0)
        add = np.floor(ideal).astype(np.int64)
        leftover = remaining - add.sum()
        order = tie_break[np.argsort(-(ideal - add)[tie_break], kind="stable")]  # ties: a seeded order
        add[order[:leftover]] += 1
        add = np.minimum(add, tokens - counts)
        counts += add
        remaining = total - counts.sum()
        open_ = counts < tokens
    return counts


def _is_expert_bank(module) -> bool:
    params = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return all(getattr(p, "dim", lambda: 0)() == 3 for p in params) and hasattr(module, "num_experts")


def route_tokens(counts: np.ndarray, tokens: int, top_k: int, rng: Optional[np.random.Generator] = None) -> list:
    """Which tokens each expert receives, given ``counts`` (``routing_counts``): a list, one sorted int64
    array of token indices per expert, such that every token goes to exactly ``top_k`` distinct experts.

    The ``tokens * top_k`` slots, token-major in a seeded random order of the tokens (``rng``, default seed 0),
    are dealt to the experts in blocks of ``counts[e]`` consecutive slots, column by column; a block holds at
    most ``tokens`` slots, so it never gives one token the same expert twice."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != tokens * top_k or (counts > tokens).any() or (counts < 0).any():
        raise ValueError(f"counts must hold {tokens * top_k} assignments, at most {tokens} per expert; "
                         f"got {counts.tolist()}")
    order = (rng or np.random.default_rng(0)).permutation(tokens)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [np.sort(order[np.arange(bounds[e], bounds[e + 1]) % tokens]) for e in range(len(counts))]


_ACTIVE: list = []  # the capture state of the capture_trace running now (innermost last)


def _gather_rows(source, rows: np.ndarray):
    """``source.index_select(0, rows)`` recorded as the gather kernel moves it: reads the index and only the
    gathered rows, writes the result."""
    import torch

    index = torch.arange(len(rows), device=source.device)  # the values do not matter on shape-only tensors
    state = _ACTIVE[-1] if _ACTIVE else None
    if state is None or state.paused:
        return source.index_select(0, index)
    state.paused += 1
    try:
        out = source.index_select(0, index)
    finally:
        state.paused -= 1
    _append(state, "aten.index_select", reads=[_region(state, source, rows), _region(state, index)],
            writes=[_region(state, out)])
    return out


def _scatter_add_rows(target, rows: np.ndarray, source):
    """``target.index_add_(0, rows, source)`` recorded as the scatter kernel moves it: reads the index, the
    source and the target's rows ``rows``, writes those rows."""
    import torch

    index = torch.arange(len(rows), device=target.device)
    state = _ACTIVE[-1] if _ACTIVE else None
    if state is None or state.paused:
        return target.index_add_(0, index, source)
    state.paused += 1
    try:
        target.index_add_(0, index, source)
    finally:
        state.paused -= 1
    rows_region = _region(state, target, rows)
    _append(state, "aten.index_add_", reads=[_region(state, index), _region(state, source), rows_region],
            writes=[rows_region])
    return target


@contextlib.contextmanager
def _routed_experts(model, routing, skew: float, seed: int):
    """Replace each expert bank's data-dependent dispatch by a fixed, seeded routing: ``routing_counts`` tokens
    per expert, each token sent to exactly ``top_k`` experts (``route_tokens``); each expert gathers its
    tokens' rows, runs its MLP on them and scatter-adds them back (only those rows are moved)."""
    import torch
    import torch.nn.functional as F

    banks = [(name, m) for name, m in model.named_modules() if _is_expert_bank(m)]

    def routed(bank, layer_seed):
        def forward(hidden_states, top_k_index, top_k_weights):
            tokens, k = top_k_index.shape
            rng = np.random.default_rng(layer_seed)
            counts = routing_counts(bank.num_experts, tokens, k, routing, skew, rng)
            assigned = route_tokens(counts, tokens, k, rng)
            final = torch.zeros_like(hidden_states)
            for expert, rows in enumerate(assigned):
                if rows.size == 0:
                    continue  # no token routed here: this expert's weights are not read
                current = _gather_rows(hidden_states, rows)
                gate, up = F.linear(current, bank.gate_up_proj[expert]).chunk(2, dim=-1)
                out = F.linear(bank.act_fn(gate) * up, bank.down_proj[expert])
                out = out * _gather_rows(top_k_weights, rows)[:, :1]
                _scatter_add_rows(final, rows, out.to(final.dtype))
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
    """The model's code could not run on shape-only tensors, or not on the example inputs given."""


@contextlib.contextmanager
def _fake_tensor_log_quiet():
    """Keep torch's fake-tensor logger from printing a traceback for an operator that fails on the inputs:
    the failure reaches the caller as one CaptureError."""
    import logging

    logger = logging.getLogger("torch._subclasses.fake_tensor")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


_STEADY_STEP = 2.0  # AdamW steps taken before the recorded one (the measured runs' two warm-up steps)


def _default_loss(output):
    loss = getattr(output, "loss", None)
    if loss is not None:
        return loss
    first = next(_tensors(output.values() if isinstance(output, dict) else output))
    return first.float().mean()


PERSIST_KINDS = ("outputs", "parameters", "optimizer_state", "kv_cache", "gradients")
DEFAULT_PERSIST = ("outputs", "parameters", "optimizer_state", "kv_cache")


def check_persist(persist) -> tuple:
    """``persist`` as a tuple of names from ``PERSIST_KINDS`` (a single name is accepted); TypeError or
    ValueError naming ``persist`` otherwise."""
    if isinstance(persist, str):
        persist = (persist,)
    try:
        names = tuple(persist)
    except TypeError:
        raise TypeError(f"persist must be a collection of names from {list(PERSIST_KINDS)}, "
                        f"got {type(persist).__name__}") from None
    unknown = [n for n in names if n not in PERSIST_KINDS]
    if unknown:
        raise ValueError(f"persist must name only {list(PERSIST_KINDS)}; got {unknown!r}")
    return tuple(n for n in PERSIST_KINDS if n in names)


def _cache_tensors(output):
    """The tensors of a transformers KV cache in ``output.past_key_values`` (none when there is no cache)."""
    cache = None
    for name in ("cache", "past_key_values"):  # transformers 5 renamed past_key_values to cache
        if isinstance(output, dict) and name in output.keys():
            cache = dict.__getitem__(output, name)
            break
    if cache is None:
        return
    for layer in getattr(cache, "layers", None) or ():
        for attr in ("keys", "values"):
            yield from _tensors(getattr(layer, attr, None))
    for attr in ("key_cache", "value_cache"):
        yield from _tensors(getattr(cache, attr, None))


def _persist(state: _State, persist: tuple, output, loss, params: dict, buffers: dict, optimizer) -> None:
    """Append a ``persist`` read of every tensor in ``persist`` that the step wrote (see the module docstring)."""
    candidates = []
    if "outputs" in persist:
        candidates += list(_tensors(list(output.values()) if isinstance(output, dict) else output))
        candidates += list(_tensors(loss))
    if "kv_cache" in persist:
        candidates += list(_cache_tensors(output))
    trainable = [p for p in params.values() if p.requires_grad]
    if "parameters" in persist:  # model state: the parameters and buffers (batch-norm running statistics)
        candidates += trainable + list(buffers.values())
    if "optimizer_state" in persist and optimizer is not None:
        for p in trainable:
            candidates += list(_tensors(optimizer.state.get(p, {})))
    if "gradients" in persist:
        candidates += [p.grad for p in trainable if p.grad is not None]
    written = {r.region.storage for r in state.records if r.access == "write"}
    seen = set()
    for tensor in candidates:
        if tensor.untyped_storage()._cdata not in state.storages:
            continue  # never touched by the step
        region = _region(state, tensor)
        if region is None or region.storage not in written or region.key in seen:
            continue
        seen.add(region.key)
        state.records.append(_Record("persist", region, "persist", "", state.phase))


def capture_trace(module, example_inputs, training: bool = False, *, model_type: str = "custom",
                  device: str = "fake", loss_fn: Optional[Callable] = None, lr: float = 1e-4,
                  persist=DEFAULT_PERSIST, lowering: Optional[str] = None) -> pd.DataFrame:
    """Capture every tensor access of ``module``'s forward pass, or of a training step.

    Takes any ``torch.nn.Module``, its example inputs (a tuple of positional
    arguments, or a dict of keyword arguments; tensors may be real, meta or
    fake), ``training`` (False: forward under ``no_grad`` in eval mode; True:
    forward in train mode, ``loss_fn(output)`` (default: ``output.loss``, else
    the mean of the first output; ``use_cache=False`` unless given, when the
    forward takes it), backward, and one AdamW step with foreach
    updates (not capturable: step counts on the host) and optimizer state
    already initialized, as in a steady state),
    a ``model_type`` label, ``device``: ``"fake"`` (default: shape-only
    tensors under FakeTensorMode), ``"meta"`` (the fallback for code that
    fake tensors cannot run) or ``"real"`` (run on the tensors as given), and
    ``persist``: which results of the step must be in DRAM after it, among
    ``PERSIST_KINDS`` (``outputs``: the model's output tensors and the loss;
    ``parameters``: updated weights and buffers (batch-norm running
    statistics); ``optimizer_state``: AdamW's moments and
    step; ``kv_cache``; ``gradients``); default ``DEFAULT_PERSIST`` (all but
    gradients), ``()`` for none. Each one the step wrote gets a final
    ``persist`` access (see the module docstring). ``lowering``: None (default:
    pure aten, one op per call) or a rule set of ``lab.workloads.lowering.LOWERINGS``
    (``"cuda-sm90"``: the kernels cuDNN 9 and torch run on an H100/H200, e.g. the
    NHWC layout transforms around an NCHW bf16 convolution, each its own op).

    Returns a trace DataFrame, one row per access: ``tensor_id`` (parameter
    names for weights, ``grad:``/``adamw.exp_avg:`` prefixes, ``input:i``,
    ``<op>#n`` for intermediates; a part of a storage (an atom: see the
    module docstring) adds ``[i]`` or ``[i:j]`` (rows of the first
    dimension, e.g. one expert of a stacked expert bank), ``[bytes a:b]``
    or ``[part k]`` (a strided part, k-th by first byte)), ``size_mb`` (MiB
    the access moves: its atom's bytes), ``reuse_distance``, ``stride``
    (innermost element stride), ``op`` (aten operator, or ``persist``),
    ``model_type``, ``access`` (read/write), ``kind`` (weight, buffer, activation, gradient,
    optimizer_state, input), ``module`` (owning module path), ``layer``
    (index parsed from the path, -1 outside layers), ``phase``
    (forward/backward/optimizer), ``dtype`` and ``shape``; per op (see the
    module docstring; the same value on every row of one op): ``op_index``
    (int64, -1 on a persist row), ``flops`` (float64), ``launches`` (int16),
    ``host_calls`` (int32) and ``grad_mode`` (bool); a persist row has 0
    flops, launches and host calls.

    Raises CaptureError (a ValueError) naming the failing operator when the
    model cannot run on fake tensors, with the ``device="meta"`` hint;
    ValueError or TypeError for a bad ``device`` or ``persist``.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}: wrap a function in a "
                        "Module whose forward calls it")
    if not isinstance(example_inputs, (torch.Tensor, tuple, list, dict)):
        raise TypeError("example_inputs must be a tensor, a tuple of positional arguments or a dict of keyword "
                        f"arguments, got {type(example_inputs).__name__}")
    if device not in ("fake", "meta", "real"):
        raise ValueError(f"device must be 'fake', 'meta' or 'real', got {device!r}")
    persist = check_persist(persist)
    lowering = _lowering.check_lowering(lowering)
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

    if training and not args and "use_cache" not in kwargs and _accepts(module, "use_cache"):
        kwargs["use_cache"] = False  # a training step builds no KV cache
    state = _State(lowering=lowering)
    optimizer = None
    loss = None
    module.train(training)
    _ACTIVE.append(state)
    try:
        with contextlib.ExitStack() as stack:
            if fake_mode is not None:
                stack.enter_context(fake_mode)
            trainable = [p for p in state_params.values() if p.requires_grad]
            if training and trainable:
                optimizer = torch.optim.AdamW(trainable, lr=lr, foreach=True)
                for p in trainable:  # steady state: the moments exist before the recorded step
                    # the step count is a host scalar, as torch keeps it (not capturable): made in the fake mode
                    # it keeps its value, so AdamW's bias corrections read it as on a real run
                    step = torch.tensor(_STEADY_STEP, dtype=torch.float32)
                    state.host.add(step.untyped_storage()._cdata)
                    optimizer.state[p] = {"step": step,
                                          "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                          "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            stack.enter_context(_module_tracking(module, state))
            stack.enter_context(_causal_mask_skipped())
            if not training:
                stack.enter_context(torch.no_grad())
            stack.enter_context(_annotator(state))
            stack.enter_context(_recorder(state))
            stack.enter_context(_fake_tensor_log_quiet())
            output = torch.func.functional_call(module, {**state_params, **state_buffers}, args, kwargs)
            if training:
                loss = (loss_fn or _default_loss)(output)
                state.phase = "backward"
                loss.backward()
                if optimizer is not None:
                    state.phase = "optimizer"
                    optimizer.step()
    except Exception as error:  # report the operator fake tensors could not run, not a deep traceback
        if device == "fake" and isinstance(error, _fake_errors()):
            op = getattr(error, "func", None)
            raise CaptureError(
                f"the model cannot run on fake tensors: operator {op} failed ({type(error).__name__}: "
                f"{first_line(error)}); try capture_trace(..., device='meta')"
            ) from error
        if isinstance(error, (RuntimeError, TypeError, IndexError)) and not isinstance(error, CaptureError):
            raise CaptureError(f"the model failed on these example inputs ({type(error).__name__}: "
                               f"{first_line(error)}): "
                               "check their shapes and types against the model's forward") from error
        raise
    finally:
        _ACTIVE.remove(state)
        module.train(was_training)
    _persist(state, persist, output, loss, state_params, state_buffers, optimizer)
    names = _names_from(state, state_params, state_buffers, args, kwargs, optimizer)
    trace = _to_frame(state, names, model_type)
    trace.attrs["lowering"] = lowering
    return trace


def _accepts(module, name: str) -> bool:
    """Whether ``module.forward`` takes an argument called ``name``."""
    import inspect

    try:
        return name in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


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
