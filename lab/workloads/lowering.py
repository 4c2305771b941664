"""Library lowering: the kernels a GPU library really runs for an aten operator.

An aten call is not always one kernel. On an H200 (cuDNN 9, sm90), a bf16 convolution on an NCHW-contiguous
tensor usually runs cuDNN's NHWC tensor-core kernels: the input is copied to NHWC (``nchwToNhwcKernel``), the
filter too when it is larger than 1x1, the convolution reads and writes NHWC temporaries and
``nhwcToNchwKernel`` writes the real NCHW output. Only a 1x1 stride-1 convolution whose output is larger than
7x7 runs as one GEMM directly on NCHW. Eval batch norm launches three kernels (a copy, the 1/std elementwise and
the transform), with the bytes of one. ``ground_truth/h200/resnet50-fwd-b32.csv`` pins these rules: on
ResNet-50's 53 convolutions they give 42 ``nchwToNhwc`` and 25 ``nhwcToNchw`` launches and 347 launches in all,
ncu's counts.

A ``Lowering`` is one rule: the aten operator it matches, a predicate on the call (its bound arguments by schema
name and its output: shapes, dtype, memory format) and the ``Step`` records it expands to, each one op of its own
(own ``op_index``; host calls are charged to the first, the aten call itself). A step names what it reads and
writes by role: an argument of the call (``input``, ``weight``, ``bias``), ``out`` (the call's outputs), ``*``
(all the call's own reads, or writes) or a temporary declared by the rule (``Temporary``: the bytes of a role, in
a new storage that is dead after its last reader, as the caching allocator frees a workspace). ``LOWERINGS``
holds one ordered rule set per library and architecture (first matching rule wins); ``capture_trace(...,
lowering="cuda-sm90")`` applies it, ``None`` records pure aten (one op per call).

These rules are library heuristics, not physics: cuDNN picks engines by shape, batch, version and GPU. They are
named after the library and architecture and pinned to the measured b32 step only; a smaller batch may pick
other engines.

Torch is not imported here: predicates see tensors only through ``shape``, ``stride`` and ``dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

ALL = "*"  # role: every region the call itself reads (in ``reads``) or writes (in ``writes``)
OUT = "out"  # role: the call's outputs


@dataclass(frozen=True)
class Temporary:
    """A scratch tensor a lowering writes and reads: ``like``'s bytes (a role with one tensor), laid out as
    ``layout`` (``"nhwc"``: the shape recorded as N, H, W, C; ``"same"``)."""

    name: str
    like: str
    layout: str = "same"


@dataclass(frozen=True)
class Step:
    """One kernel record of a lowering: ``op`` (None: the aten op itself), the roles it reads and writes,
    whether it carries the call's FLOPs (``flops``) and how many kernels it launches."""

    op: Optional[str]
    reads: tuple
    writes: tuple
    flops: bool = False
    launches: int = 1


@dataclass(frozen=True)
class Lowering:
    """A rule: aten ``ops`` (names without namespace) whose call satisfies ``applies(args, out)`` (``args``:
    argument name -> value, ``out``: the output tensor or tuple) run as ``steps``, with ``temporaries``."""

    name: str
    ops: tuple
    applies: Callable
    steps: tuple
    temporaries: tuple = ()


_HALF = ("torch.bfloat16", "torch.float16")


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def _nchw_half_conv(args: dict, out) -> bool:
    """A 2-D forward convolution in bf16/fp16 on an NCHW-contiguous input (a channels-last input runs NHWC
    kernels directly)."""
    x, w = args.get("input"), args.get("weight")
    out = _first(out)
    if x is None or w is None or out is None or args.get("transposed"):
        return False
    if len(x.shape) != 4 or len(w.shape) != 4 or str(x.dtype) not in _HALF:
        return False
    return _contiguous(x.shape, x.stride())


def _contiguous(shape, stride) -> bool:
    expected = 1
    for n, st in zip(reversed(tuple(shape)), reversed(tuple(stride))):
        if n != 1 and st != expected:
            return False
        expected *= n
    return True


def _gemm_direct(args: dict, out) -> bool:
    """cuDNN 9 on sm90 runs a 1x1 stride-1 convolution with output larger than 7x7 as one GEMM on NCHW."""
    w, out = args["weight"], _first(out)
    stride = tuple(args.get("stride") or (1, 1))
    return tuple(w.shape[-2:]) == (1, 1) and all(s == 1 for s in stride) and min(out.shape[-2:]) > 7


def _transformed_with_filter(args: dict, out) -> bool:
    return _nchw_half_conv(args, out) and not _gemm_direct(args, out) and tuple(args["weight"].shape[-2:]) != (1, 1)


def _transformed_1x1(args: dict, out) -> bool:
    return _nchw_half_conv(args, out) and not _gemm_direct(args, out) and tuple(args["weight"].shape[-2:]) == (1, 1)


def _eval_batch_norm(args: dict, out) -> bool:
    """Batch norm in eval (running statistics, not updated): torch's CUDA path launches three kernels."""
    return not args.get("training", False)  # _native_batch_norm_legit_no_training has no such argument


_TO_NHWC, _TO_NCHW, _CONV = "cudnn.nchwToNhwc", "cudnn.nhwcToNchw", "aten.convolution"
_BIAS = ("bias",)  # read by the convolution kernel itself (absent: no bytes)

CUDNN9_SM90_CONV = Lowering(
    "cudnn9-sm90-conv-nchw", ("convolution",), _transformed_with_filter,
    steps=(Step(_TO_NHWC, ("input",), ("nhwc_in",)),
           Step(_TO_NHWC, ("weight",), ("nhwc_w",)),
           Step(_CONV, ("nhwc_in", "nhwc_w") + _BIAS, ("nhwc_out",), flops=True),
           Step(_TO_NCHW, ("nhwc_out",), (OUT,))),
    temporaries=(Temporary("nhwc_in", "input", "nhwc"), Temporary("nhwc_w", "weight", "nhwc"),
                 Temporary("nhwc_out", OUT, "nhwc")))
CUDNN9_SM90_CONV_1X1 = Lowering(
    "cudnn9-sm90-conv-nchw-1x1", ("convolution",), _transformed_1x1,
    steps=(Step(_TO_NHWC, ("input",), ("nhwc_in",)),
           Step(_CONV, ("nhwc_in", "weight") + _BIAS, ("nhwc_out",), flops=True),
           Step(_TO_NCHW, ("nhwc_out",), (OUT,))),
    temporaries=(Temporary("nhwc_in", "input", "nhwc"), Temporary("nhwc_out", OUT, "nhwc")))
CUDA_BATCH_NORM_EVAL = Lowering(
    "cuda-batch-norm-eval", ("native_batch_norm", "_native_batch_norm_legit_no_training"), _eval_batch_norm,
    steps=(Step(None, (ALL,), (ALL,), flops=True, launches=3),))

# rule sets by name: library and architecture (ground_truth/h200: cuDNN 9, sm90)
LOWERINGS = {"cuda-sm90": (CUDNN9_SM90_CONV, CUDNN9_SM90_CONV_1X1, CUDA_BATCH_NORM_EVAL)}


def check_lowering(lowering) -> Optional[str]:
    """``lowering`` checked: None (pure aten) or the name of a rule set in ``LOWERINGS``."""
    if lowering is None:
        return None
    if not isinstance(lowering, str) or lowering not in LOWERINGS:
        raise ValueError(f"lowering must be None (pure aten) or one of {sorted(LOWERINGS)}, got {lowering!r}")
    return lowering


def match(lowering: Optional[str], name: str, args: dict, out) -> Optional[Lowering]:
    """The first rule of the set ``lowering`` for aten op ``name`` (no namespace) that applies to this call,
    or None (the call is recorded as it is)."""
    if lowering is None:
        return None
    for rule in LOWERINGS[lowering]:
        if name in rule.ops and rule.applies(args, out):
            return rule
    return None
