"""Named model presets for capture: built from transformers configs in code, never downloaded.

``capture_model(name, batch_size, seq_length, ...)`` builds the preset under
FakeTensorMode with ``no_init_weights`` (no memory, no initialization, weights
re-tied), makes its example inputs, and captures its trace with
``lab.workloads.capture.capture_trace``. A Parquet cache keyed by every parameter makes
a repeated capture instant.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import warnings
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from lab.checks import check_bool, check_int, check_number, check_str, first_line, memory_budget_bytes
from lab.files import file_lock
from lab.registry import Registry
from lab.units import BYTES_PER_MB

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
WEIGHT_DTYPES = ("bf16", "fp16", "fp32", "int8", "nf4")
NF4_BLOCK = 64  # elements per absmax scale (fp32), as bitsandbytes packs NF4
ROUTINGS = ("uniform", "zipf")


@dataclass(frozen=True)
class Preset:
    """A model family at one size: its transformers config (or a plain-torch builder), inputs and label."""

    name: str
    model_type: str
    build_config: Callable[[], object]
    model_class: str  # transformers class name, or "mlp" for the plain-torch MLP
    vision: bool = False

    def __post_init__(self):
        from lab.workloads.generator import MODEL_TYPES

        check_str("Preset.name", self.name)
        check_str("Preset.model_type", self.model_type, MODEL_TYPES)
        if not callable(self.build_config):
            raise TypeError(f"Preset.build_config must be a function returning the config, got "
                            f"{type(self.build_config).__name__}")
        check_str("Preset.model_class", self.model_class)
        check_bool("Preset.vision", self.vision)


def _config(class_name: str, **kwargs):
    def build():
        import transformers

        return getattr(transformers, class_name)(**kwargs)

    return build


PRESETS: Registry[Preset] = Registry("model preset")
for _preset in (
    Preset("gpt2", "Transformer", _config("GPT2Config"), "GPT2LMHeadModel"),
    Preset("bert-base", "Transformer", _config("BertConfig"), "BertForMaskedLM"),
    # Llama 2 (Touvron et al., 2023, table 1 and the released configs)
    Preset("llama-2-7b", "Transformer", _config(
        "LlamaConfig", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5),
        "LlamaForCausalLM"),
    Preset("llama-2-70b", "Transformer", _config(
        "LlamaConfig", hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
        num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5),
        "LlamaForCausalLM"),
    # Mixtral 8x7B (Jiang et al., 2024): 8 experts, 2 per token
    Preset("mixtral-8x7b", "MoE", _config(
        "MixtralConfig", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2, vocab_size=32000,
        max_position_embeddings=32768), "MixtralForCausalLM"),
    Preset("vit-base", "Transformer", _config("ViTConfig"), "ViTForImageClassification", vision=True),
    Preset("resnet-50", "CNN", _config("ResNetConfig"), "ResNetForImageClassification", vision=True),
    Preset("mlp", "MLP", lambda: {"hidden_size": 4096, "num_hidden_layers": 8, "ffn_mult": 4}, "mlp"),
):
    PRESETS.add(_preset.name, _preset)


def _check_dtype(dtype) -> str:
    """``dtype`` if it names one of ``DTYPES``, else ValueError naming it (without importing torch)."""
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return dtype


def _torch_dtype(dtype: str):
    import torch

    return getattr(torch, DTYPES[_check_dtype(dtype)])


def _plain_mlp(config: dict):
    import torch

    h, f = config["hidden_size"], config["ffn_mult"]

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.Linear(h, f * h)
            self.act = torch.nn.GELU()
            self.down = torch.nn.Linear(f * h, h)

        def forward(self, x):
            return x + self.down(self.act(self.up(x)))

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList(Block() for _ in range(config["num_hidden_layers"]))

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    return MLP()


def build_model(name: str, dtype: str = "bf16", **overrides):
    """Build preset ``name`` on fake tensors (no memory, no init); returns (model, preset, config).

    ``overrides`` replace config fields (e.g. ``num_hidden_layers=2``).
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    preset = preset_named(name)
    config = preset.build_config()
    check_overrides(name, config, overrides)
    for key, value in overrides.items():
        if isinstance(config, dict):
            if key not in config:
                raise ValueError(f"unknown override {key!r} for {name}; accepted: {sorted(config)}")
            config[key] = value
        elif not hasattr(config, key):
            raise ValueError(f"unknown override {key!r} for {name}: {type(config).__name__} has no such field")
        else:
            setattr(config, key, value)
    torch_dtype = _torch_dtype(dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # parameters are born in dtype: fake tensors cannot be converted in place
    try:
        with FakeTensorMode(allow_non_fake_inputs=False):
            model = _construct(preset, config)
    finally:
        torch.set_default_dtype(previous)
    return model, preset, config


# Lower bounds per layer, measured on every preset (forward 13-384 accesses, training step 223-1,607; about
# 200 bytes per captured access in the frame) and, per preset, the bytes of Python and torch objects one layer of
# the model built on fake tensors holds (resident memory per layer of a 100-layer build, rounded down; 13 KB for
# a preset not measured): refusing on these bounds never refuses a capture that would fit.
MIN_ACCESSES_PER_LAYER = {False: 10, True: 200}
BYTES_PER_CAPTURED_ACCESS = 200
MIN_MODEL_BYTES_PER_LAYER = {"gpt2": 31_000, "bert-base": 55_000, "llama-2-7b": 31_000, "llama-2-70b": 38_000,
                             "mixtral-8x7b": 33_000, "vit-base": 43_000, "mlp": 13_000}
DEFAULT_MODEL_BYTES_PER_LAYER = 13_000
MAX_CAPTURED_ACCESSES = 50_000_000  # as lab.generate_trace: about 10 GiB as a captured frame


def check_overrides(name: str, config, overrides: dict) -> None:
    """ValueError naming an override of preset ``name``'s config that is not of its field's kind: an integer
    field (a width, a depth, a count of heads or experts) takes an integer >= 1, or >= 0 where the preset's
    own value is 0; a real-valued field takes a finite number."""
    defaults = config if isinstance(config, dict) else None
    for key, value in overrides.items():
        default = defaults.get(key) if defaults is not None else getattr(config, key, None)
        where = f"override {key} of {name}"
        if isinstance(default, bool):
            check_bool(where, value)
        elif isinstance(default, int) and not key.endswith("_token_id"):
            check_int(where, value, 1 if default >= 1 else 0)
        elif isinstance(default, float):
            check_number(where, value, float("-inf") if default < 0 else 0)


def check_capture_fits(name: str, num_layers: int, training: bool) -> None:
    """ValueError, before building anything, when a capture of ``num_layers`` layers could not fit in memory
    (``lab.checks.memory_budget_bytes``: half the machine, within this process's limits): the estimate uses
    lower bounds per layer (``MIN_ACCESSES_PER_LAYER``, ``MIN_MODEL_BYTES_PER_LAYER``), so what is refused is
    certainly too large."""
    accesses = num_layers * MIN_ACCESSES_PER_LAYER[bool(training)]
    per_layer = MIN_MODEL_BYTES_PER_LAYER.get(name, DEFAULT_MODEL_BYTES_PER_LAYER)
    needed = accesses * BYTES_PER_CAPTURED_ACCESS + num_layers * per_layer
    budget = memory_budget_bytes()
    if accesses > MAX_CAPTURED_ACCESSES or needed > budget:
        raise ValueError(f"{name} with {num_layers:,} layers would capture at least {accesses:,} accesses and "
                         f"need at least {needed / 2**30:,.1f} GiB of memory (this machine allows "
                         f"{budget / 2**30:,.1f} GiB, at most {MAX_CAPTURED_ACCESSES:,} accesses): use fewer layers")


def _construct(preset: Preset, config):
    if preset.model_class == "mlp":
        return _plain_mlp(config)
    import transformers
    from transformers.initialization import no_init_weights

    model_class = getattr(transformers, preset.model_class)
    if getattr(model_class, "_supports_sdpa", False):
        config._attn_implementation = "sdpa"  # one fused attention op, as on an accelerator
    with no_init_weights():
        model = model_class(config)
    model.tie_weights()
    return model


def preset_named(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive); ValueError listing the known ones otherwise."""
    return PRESETS.get(name)


def example_inputs(model, preset: Preset, config, batch_size: int, seq_length: int, dtype: str, training: bool):
    """Fake example inputs for ``model``: token ids (batch, seq) for language models, images for vision
    models (their config's image size; ``seq_length`` unused), activations for the plain MLP."""
    import torch

    fake_mode = next(model.parameters()).fake_mode
    with fake_mode:
        if preset.model_class == "mlp":
            return (torch.empty(batch_size, seq_length, config["hidden_size"], dtype=_torch_dtype(dtype)),)
        if preset.vision:
            size = getattr(config, "image_size", 224)
            inputs = {"pixel_values": torch.empty(batch_size, 3, size, size, dtype=_torch_dtype(dtype))}
            if training:
                inputs["labels"] = torch.zeros(batch_size, dtype=torch.long)
            return inputs
        ids = torch.zeros(batch_size, seq_length, dtype=torch.long)
        return {"input_ids": ids, **({"labels": ids} if training else {})}


def _quantized_linear_weights(model) -> dict:
    """Parameter name -> elements per scale row, for the weights a 4/8-bit path quantizes: matrices of
    linear layers (nn.Linear, transformers' Conv1D, stacked expert banks); not embeddings, norms or biases."""
    import torch

    names = {}
    for module_name, module in model.named_modules():
        linear = isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"
        for param_name, param in module.named_parameters(recurse=False):
            if (linear and param_name == "weight") or (param.dim() == 3 and param_name in ("gate_up_proj", "down_proj")):
                names[f"{module_name}.{param_name}" if module_name else param_name] = int(param.shape[-1])
    return names


def packed_bytes(elements: np.ndarray, row: np.ndarray, weight_dtype: str) -> np.ndarray:
    """Bytes of ``elements`` weights stored as ``weight_dtype``: bf16/fp16 2, fp32 4; int8 1 per element plus
    one fp32 scale per row of ``row`` elements (vector-wise, as LLM.int8); nf4 half a byte plus one fp32
    absmax per block of 64 (bitsandbytes NF4 without double quantization)."""
    if weight_dtype in ("bf16", "fp16"):
        return elements * 2
    if weight_dtype == "fp32":
        return elements * 4
    if weight_dtype == "int8":
        return elements + 4 * np.ceil(elements / row).astype(np.int64)
    return np.ceil(elements / 2).astype(np.int64) + 4 * np.ceil(elements / NF4_BLOCK).astype(np.int64)


def _apply_weight_dtype(trace: pd.DataFrame, model, weight_dtype: str) -> pd.DataFrame:
    rows = _quantized_linear_weights(model)
    base = trace["tensor_id"].str.replace(r"\[[^\[\]]*\]$", "", regex=True)  # a part of a weight: its tensor
    quantized = (trace["kind"] == "weight") & base.isin(rows.keys())
    if not quantized.any():
        return trace
    itemsize = trace.loc[quantized, "dtype"].map({"bfloat16": 2, "float16": 2, "float32": 4}).to_numpy()
    elements = np.rint(trace.loc[quantized, "size_mb"].to_numpy() * BYTES_PER_MB / itemsize).astype(np.int64)
    row = base[quantized].map(rows).to_numpy()
    trace = trace.copy()
    trace.loc[quantized, "size_mb"] = packed_bytes(elements, row, weight_dtype) / BYTES_PER_MB
    trace.loc[quantized, "dtype"] = weight_dtype
    return trace


# what a capture records changed (2: view bytes and atoms, row gathers, fused attention backward, GPU dropout,
# persist accesses, exact top-k routing; 3: persist rows as access "persist"; 4: the per-op columns op_index,
# flops, launches, host_calls, grad_mode, and AdamW with host step counts (not capturable), as torch runs it):
# older cached captures are not reused
CAPTURE_FORMAT = 4


def cache_dir() -> Path:
    """Where captures are cached: ``$LAB_CACHE_DIR`` or ``~/.cache/lab/captures``."""
    return Path(os.environ.get("LAB_CACHE_DIR", Path.home() / ".cache" / "lab" / "captures"))


@functools.lru_cache(maxsize=None)
def _installed_version(package: str) -> str:
    """``package``'s installed version (its ``__version__``), read from its metadata: importing torch and
    transformers only to key a cached capture took seconds."""
    return importlib.metadata.version(package)


def _cache_key(params: dict) -> str:
    from lab.version import __version__

    blob = json.dumps({**params, "lab": __version__, "capture_format": CAPTURE_FORMAT,
                       "torch": _installed_version("torch"), "transformers": _installed_version("transformers")},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


LAYER_FIELDS = {"gpt2": "n_layer", "resnet-50": None}  # config field holding the depth (default below)


def depth_override(name: str, num_layers: Optional[int]) -> dict:
    """Config override that sets preset ``name``'s number of layers (``num_hidden_layers``, GPT-2's
    ``n_layer``); ResNet-50's fixed stages take none. Empty when ``num_layers`` is None."""
    if num_layers is None:
        return {}
    check_int("num_layers", num_layers)
    field = LAYER_FIELDS.get(preset_named(name).name, "num_hidden_layers")
    if field is None:
        raise ValueError(f"{name} has a fixed depth: num_layers does not apply")
    return {field: num_layers}


def capture_model(name: str, batch_size: int = 1, seq_length: int = 512, dtype: str = "bf16",
                  training: bool = False, weight_dtype: Optional[str] = None, routing="uniform",
                  routing_skew: float = 1.0, seed: int = 0, cache: bool = True, num_layers: Optional[int] = None,
                  use_cache: Optional[bool] = None, persist=None, lowering: Optional[str] = None,
                  **overrides) -> pd.DataFrame:
    """Capture a named preset's trace (see ``PRESETS``): a forward pass, or a training step.

    Takes the preset name (``gpt2``, ``bert-base``, ``llama-2-7b``,
    ``llama-2-70b``, ``mixtral-8x7b``, ``vit-base``, ``resnet-50``, ``mlp``),
    batch size, sequence length (tokens; vision presets use their config's
    image size), ``dtype`` of activations and weights (bf16, fp16, fp32),
    ``training``, ``weight_dtype`` (bf16, fp16, fp32, int8, nf4: the stored
    size of linear-layer weights; default ``dtype``), MoE ``routing``
    (``uniform``, ``zipf`` with ``routing_skew``, or one weight per expert)
    and its ``seed``, ``cache`` (reuse an identical earlier capture),
    ``num_layers`` (a shallower or deeper model of the family) and config
    ``overrides``, ``use_cache`` (language models: build the KV cache;
    default True for a forward pass, as a generation's prefill does, and
    False for a training step, where True is refused) and ``persist`` (which
    results must reach DRAM after the step: see
    ``lab.workloads.capture.capture_trace``; default ``DEFAULT_PERSIST``) and
    ``lowering`` (None: pure aten; ``"cuda-sm90"``: the kernels an H100/H200's
    libraries run, see ``lab.workloads.lowering``).
    Routing is a parameter because real routing needs
    real weights and data, which we do not load.

    Returns the trace (see ``lab.workloads.capture.capture_trace``), ``model_type``
    set to the preset's family. ``trace.attrs["capture"]`` records the arguments (``lowering`` only when not
    None: a pure-aten capture keeps its cache key), ``trace.attrs["lowering"]`` the lowering.
    """
    from lab.workloads.capture import DEFAULT_PERSIST, check_persist
    from lab.workloads.lowering import check_lowering

    preset = preset_named(name)
    overrides = {**depth_override(preset.name, num_layers), **overrides}
    check_int("batch_size", batch_size)
    check_int("seq_length", seq_length)
    check_int("seed", seed, 0)
    check_bool("training", training)
    check_bool("cache", cache)
    routing_skew = check_number("routing_skew", routing_skew, 0)
    _check_dtype(dtype)
    weight_dtype = weight_dtype or dtype
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {list(WEIGHT_DTYPES)}, got {weight_dtype!r}")
    if isinstance(routing, str) and routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {list(ROUTINGS)} or a histogram of weights per expert, "
                         f"got {routing!r}")
    if not isinstance(routing, str) and (not isinstance(routing, (list, tuple, np.ndarray))
                                         or not all(isinstance(w, Real) and not isinstance(w, bool) for w in routing)):
        raise TypeError(f"routing must be one of {list(ROUTINGS)} or a histogram of weights per expert (a list of "
                        f"numbers), got {routing!r}")
    if use_cache is None:
        use_cache = not training
    if not isinstance(use_cache, bool):
        raise TypeError(f"use_cache must be a bool or None, got {type(use_cache).__name__}")
    if use_cache and training:
        raise ValueError("use_cache must be False (or None) for a training step: training builds no KV cache")
    persist = check_persist(DEFAULT_PERSIST if persist is None else persist)
    lowering = check_lowering(lowering)
    params = dict(name=preset.name, batch_size=batch_size, seq_length=seq_length, dtype=dtype, training=training,
                  weight_dtype=weight_dtype, routing=routing if isinstance(routing, str) else list(routing),
                  routing_skew=routing_skew, seed=seed, overrides=overrides, use_cache=use_cache,
                  persist=list(persist))
    if lowering is not None:  # pure-aten captures keep the cache key they had before lowering existed
        params["lowering"] = lowering
    path = cache_dir() / f"{preset.name}-{_cache_key(params)}.parquet"
    # a configuration cached before was checked then (its overrides are in the key): read back, it needs neither
    # torch nor transformers, whose imports cost a few seconds in each new process (a report's kernel, the app's);
    # a file that cannot be read is left to the locked lookup below, which says so
    cached = _read_cached(path if cache else None, params, lowering, warn=False)
    if cached is not None:
        return cached
    _check_capture_config(preset, overrides, training)
    with _capture_lock(path if cache else None):
        cached = _read_cached(path if cache else None, params, lowering, warn=True)  # another process's, perhaps
        if cached is not None:
            return cached
        return _capture_uncached(preset, params, path, cache, batch_size, seq_length, dtype, training,
                                 weight_dtype, routing, routing_skew, seed, use_cache, persist, overrides)


def _read_cached(path: Optional[Path], params: dict, lowering, warn: bool) -> Optional[pd.DataFrame]:
    """The capture cached at ``path`` with its ``attrs``, or None: no path (caching off), no file, or a file that
    cannot be read (truncated or corrupt: it is captured again; with ``warn``, a warning says so)."""
    if path is None or not path.exists():
        return None
    try:
        trace = pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001 (pyarrow, OSError: a truncated or corrupt file)
        if warn:
            warnings.warn(f"the cached capture {path} cannot be read ({type(error).__name__}); capturing again",
                          stacklevel=3)
        return None
    trace.attrs["capture"] = params
    trace.attrs["lowering"] = lowering
    return trace


@contextlib.contextmanager
def _capture_lock(path: Optional[Path]):
    """Hold an exclusive lock on ``path``'s configuration (``<path>.lock``, fcntl) while it is looked up,
    captured and cached, so that concurrent processes (Dask workers) capture one configuration once: the
    others wait, then read the cached file. Without a path, or where the lock file cannot be made (an
    unusable cache directory), no lock."""
    if path is None:
        yield
        return
    with file_lock(path.with_name(path.name + ".lock"), optional=True):
        yield


def _capture_uncached(preset, params, path, cache, batch_size, seq_length, dtype, training, weight_dtype, routing,
                      routing_skew, seed, use_cache, persist, overrides) -> pd.DataFrame:
    """The capture itself (``capture_model`` past its cache lookup), written to the cache at ``path``
    (atomically) when ``cache``."""
    from lab.workloads.capture import CaptureError, _routed_experts, capture_trace

    with _quiet_transformers():  # the same report whether or not the cache was warm
        try:
            model, preset, config = build_model(preset.name, dtype, **overrides)
        except (RuntimeError, ValueError, ZeroDivisionError, AssertionError) as error:
            if not overrides:
                raise
            raise ValueError(f"the overrides {overrides} do not make a valid {preset.name}: "
                             f"{first_line(error)}") from None
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if preset.model_type != "CNN" and isinstance(positions, int) and seq_length > positions:
            raise ValueError(f"seq_length={seq_length} is longer than {preset.name}'s {positions} positions")
        inputs = example_inputs(model, preset, config, batch_size, seq_length, dtype, training)
        if isinstance(inputs, dict) and "use_cache" in inspect.signature(model.forward).parameters:
            inputs["use_cache"] = use_cache
        try:
            with _routed_experts(model, routing, routing_skew, seed):
                trace = capture_trace(model, inputs, training=training, model_type=preset.model_type,
                                      persist=persist, lowering=params.get("lowering"))
        except (RuntimeError, IndexError, ZeroDivisionError, AssertionError, CaptureError) as error:
            if "overflow" in str(error):
                raise ValueError(f"batch_size={batch_size} and seq_length={seq_length} give {preset.name} tensors "
                                 f"too large to count: {first_line(error)}") from None
            if not overrides:
                raise
            raise ValueError(f"the overrides {overrides} do not make a model {preset.name} can run: "
                             f"{first_line(error)}") from None
    if weight_dtype != dtype:
        trace = _apply_weight_dtype(trace, model, weight_dtype)
    trace.attrs["capture"] = params
    if cache:
        from lab.trace.io import write_trace

        try:
            write_trace(trace, path)
        except OSError as error:  # an unusable cache directory costs the cache, not the capture
            warnings.warn(f"the capture could not be cached at {path} ({error})", stacklevel=3)
    return trace


def _check_capture_config(preset: Preset, overrides: dict, training: bool) -> None:
    """The overrides' kinds, and whether the capture's depth could fit in memory (before anything is built)."""
    with _quiet_transformers():
        config = preset.build_config()
    check_overrides(preset.name, config, overrides)
    field = LAYER_FIELDS.get(preset.name, "num_hidden_layers")
    if field is None:
        return
    aliases = {alias for alias, target in getattr(config, "attribute_map", {}).items() if target == field}
    depth = config[field] if isinstance(config, dict) else getattr(config, field)
    for name in (field, *aliases):
        depth = overrides.get(name, depth)
    check_capture_fits(preset.name, depth, training)


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' logging at error level while a model is built and traced (its config warnings would
    otherwise appear only on a cold capture cache)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def synthetic_counterpart(name: str, batch_size: int, seq_length: int, num_layers: Optional[int] = None,
                          reuse_probability: float = 0.3, seed: int = 0, training: bool = False) -> pd.DataFrame:
    """A ``lab.generate_trace`` of the preset's family with the preset's dimensions, to validate the generator
    against the captured model (``lab.validate(synthetic, reference=captured)``). With ``training``, as the
    capture of a training step: the generated forward pass followed by its backward pass and an AdamW step
    (``lab.workloads.training.training_step``)."""
    check_bool("training", training)
    forward = _synthetic_forward(name, batch_size, seq_length, num_layers, reuse_probability, seed)
    if not training:
        return forward
    from lab.workloads.training import training_step

    return training_step(forward)


def _synthetic_forward(name: str, batch_size: int, seq_length: int, num_layers: Optional[int],
                       reuse_probability: float, seed: int) -> pd.DataFrame:
    from lab.workloads.generator import generate_trace

    preset = preset_named(name)
    config = preset.build_config()
    get = (config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default))
    layers = num_layers or get("num_hidden_layers") or get("n_layer") or 16
    common = dict(num_layers=layers, batch_size=batch_size, seq_length=seq_length,
                  reuse_probability=reuse_probability, seed=seed)
    if preset.model_type == "CNN":
        return generate_trace("CNN", **common)
    hidden = get("hidden_size") or get("n_embd")
    if preset.model_type == "MLP":
        return generate_trace("MLP", **common, hidden_size=hidden)
    if preset.vision:
        common["seq_length"] = (get("image_size") // get("patch_size")) ** 2 + 1
    heads = get("num_attention_heads") or get("n_head")
    ffn = get("intermediate_size") or get("n_inner") or 4 * hidden
    dims = dict(hidden_size=hidden, num_heads=heads, ffn_mult=max(1, round(ffn / hidden)))
    if preset.model_type == "MoE":
        dims.update(num_experts=get("num_local_experts"), top_k=get("num_experts_per_tok"))
    return generate_trace(preset.model_type, **common, **dims)
