"""The seed's LLM eviction scorer: a local causal language model rates how soon each tensor is needed again.

``LLMScorer`` describes each distinct tensor of a trace (not each access) in
a short prompt with its features (size, kind, ops, module, layer, phase,
dtype, shape, stride, access count, mean reuse distance, where in the trace
it is accessed: whichever of these the trace's columns hold), asks the model
how soon the tensor will be needed again on a 0-9 scale (0: at once, 9: not
for a long time, or never), reads the next-token logits over the digits
"0".."9" and takes the expected digit under their softmax as the tensor's
score. Every access of the tensor gets that score, so higher means evict
first, as the ML policy expects. Features describe the whole trace (access
count and mean reuse distance include later accesses): the scorer is offline,
like a compiler pass over a known schedule.

The model is loaded with transformers from a local folder only
(``local_files_only=True``, never ``trust_remote_code``): a path, or a Hugging
Face repository name found in the local Hugging Face cache. Nothing is ever
downloaded. ``quantization="nf4"`` (4-bit) or ``"int8"`` loads it through
bitsandbytes (``pip install lab[llm]``; CUDA on most bitsandbytes builds).
bitsandbytes 0.50 also runs both on CPU (slowly: for tests and small models).
Scoring is deterministic (eval mode, no sampling), batched (left padding)
and cached per (model identity, prompt), in memory and on disk under
``lab``'s cache directory.

The registered scorer ``llm`` (``lab.score(trace, "llm")``) uses the model
set by ``configure(model=...)``, else ``$LAB_LLM_MODEL``, else the default
Mistral-7B-Instruct when it is in the local Hugging Face cache; a ValueError
says how to point it at a local copy otherwise. It returns the expected
digit / 9, in [0, 1] as ``lab.score`` promises.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from lab.checks import check_bool, check_int, check_str
from lab.learn.features import LABEL_METHODS, optimum_labels
from lab.trace.workload import NEVER, Workload, encode_trace, reuse_distances_from_codes

DEFAULT_MODEL = "mistralai/Mistral-7B-Instruct-v0.2"
MODEL_ENV = "LAB_LLM_MODEL"
QUANTIZATIONS = ("nf4", "int8", None)
DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?")  # the torch devices a language model runs on
DIGITS = tuple(str(d) for d in range(10))
PROMPT_VERSION = "1"  # part of the cache key: bump when the prompt or the way it is read changes

QUESTION = ("Question: on a scale from 0 (needed again immediately) to 9 (not needed again for a long time, or "
            "never), how soon will this tensor be needed again? Reply with one digit.")
INTRO = ("An accelerator keeps tensors in a small on-chip buffer while a neural network runs; the tensor needed "
         "again last is the best one to evict.")

# One entry per (model identity, prompt): the expected digit. Shared by every LLMScorer of the process.
_MEMORY_CACHE: dict[tuple[str, str], float] = {}


@dataclass(frozen=True)
class FewShotExample:
    """One labelled example for the few-shot prompt: a tensor's ``description`` (``describe_tensors``) and the
    ``digit`` (0-9) the optimum implies: 0 when the optimum keeps every interval of the tensor on chip, 9 when it
    keeps none (or the tensor is never used again)."""

    description: str
    digit: int

    def __post_init__(self):
        check_str("FewShotExample.description", self.description)
        if isinstance(self.digit, bool) or not isinstance(self.digit, (int, np.integer)) or not 0 <= self.digit <= 9:
            raise ValueError(f"FewShotExample.digit must be an integer from 0 to 9, got {self.digit!r}")
        object.__setattr__(self, "digit", int(self.digit))


# ----------------------------------------------------------------------------------------------- descriptions


def _size_text(size_mb: float) -> str:
    if size_mb >= 1:
        return f"{size_mb:.4g} MB"
    if size_mb * 1024 >= 1:
        return f"{size_mb * 1024:.4g} KB"
    return f"{size_mb * 2**20:.4g} bytes"


def _values_text(values, limit: int = 3) -> str:
    values = [str(v) for v in values if not (isinstance(v, float) and np.isnan(v))]
    text = ", ".join(values[:limit])
    return text + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


_TEXT_COLUMNS = (("kind", "kind"), ("op", "ops"), ("module", "module"), ("phase", "phase"), ("dtype", "dtype"),
                 ("shape", "shape"), ("model_type", "model"))


def describe_tensors(trace) -> tuple[Workload, list[str]]:
    """One short description per distinct tensor of ``trace``, in the order of the tensor codes of
    ``encode_trace(trace)``.

    Takes a trace DataFrame (see ``lab.trace.schema``). Uses the columns
    present: size (``size_mb``, in MB, KB or bytes), ``kind``, ``op`` (the
    distinct ops, first three), ``module``, ``layer``, ``phase``, ``dtype``,
    ``shape``, ``stride``, ``model_type``, the access count (reads and writes
    with an ``access`` column), the mean reuse distance (accesses in between,
    from ``reuse_distance`` or the tensor order) and where the first and last
    access fall in the trace (% of its accesses). Returns the encoded trace
    and the descriptions (one line each, no tensor id: tensors alike share a
    prompt).
    """
    if not isinstance(trace, pd.DataFrame):
        raise ValueError(f"trace must be a pandas DataFrame, got {type(trace).__name__}")
    encoded = encode_trace(trace)
    n = encoded.n_tensors
    codes = np.asarray(encoded.codes)
    frame = pd.DataFrame({"code": codes})
    parts: list[list[str]] = [[f"size {_size_text(b / 2**20)}"] for b in np.asarray(encoded.tensor_bytes)]
    columns = trace.columns
    for column, label in _TEXT_COLUMNS:
        if column not in columns:
            continue
        values = pd.Series(trace[column].to_numpy(), index=frame.index)
        if column == "op":
            grouped = values.groupby(codes, sort=True).unique()
            for code, ops in zip(grouped.index, grouped.to_numpy()):
                parts[code].append(f"{label} {_values_text(list(ops))}")
        else:
            for code, value in values.groupby(codes, sort=True).first().items():
                if not (isinstance(value, float) and np.isnan(value)):
                    parts[code].append(f"{label} {value}")
    if "layer" in columns:
        layer = pd.to_numeric(trace["layer"], errors="coerce").to_numpy(np.float64)
        first = pd.Series(layer).groupby(codes, sort=True).first()
        for code, value in first.items():
            if np.isfinite(value):
                parts[code].append(f"layer {int(value)}")
    if "stride" in columns:
        stride = pd.to_numeric(trace["stride"], errors="coerce").to_numpy(np.float64)
        for code, value in pd.Series(stride).groupby(codes, sort=True).first().items():
            if np.isfinite(value):
                parts[code].append(f"stride {value:g}")
    counts = np.bincount(codes, minlength=n)
    writes = (np.bincount(codes[np.asarray(encoded.is_write)], minlength=n) if len(encoded.is_write)
              else None)
    if "reuse_distance" in columns and pd.api.types.is_numeric_dtype(trace["reuse_distance"].dtype) \
            and not pd.api.types.is_bool_dtype(trace["reuse_distance"].dtype):
        reuse = trace["reuse_distance"].to_numpy(np.float64, na_value=np.nan)
    else:
        reuse = reuse_distances_from_codes(codes, n)
    valid = np.isfinite(reuse)
    reuse_sum = np.bincount(codes[valid], weights=reuse[valid], minlength=n)
    reuse_count = np.bincount(codes[valid], minlength=n)
    positions = np.arange(len(codes), dtype=np.float64)
    first_at = np.full(n, np.inf)
    last_at = np.full(n, -np.inf)
    np.minimum.at(first_at, codes, positions)
    np.maximum.at(last_at, codes, positions)
    span = max(len(codes) - 1, 1)
    for code in range(n):
        accesses = f"{counts[code]} access{'es' if counts[code] != 1 else ''}"
        if writes is not None:
            reads = counts[code] - writes[code]
            accesses += (f" ({reads} read{'s' if reads != 1 else ''}, "
                         f"{writes[code]} write{'s' if writes[code] != 1 else ''})")
        parts[code].append(accesses)
        parts[code].append(f"mean reuse distance {reuse_sum[code] / reuse_count[code]:.4g} accesses"
                           if reuse_count[code] else "never reused")
        parts[code].append(f"first access at {100 * first_at[code] / span:.0f}% of the trace, "
                           f"last at {100 * last_at[code] / span:.0f}%")
    return encoded, ["Tensor: " + "; ".join(p) + "." for p in parts]


def build_prompt(description: str, examples: Sequence[FewShotExample] = ()) -> str:
    """The prompt for one tensor: an introduction, the few-shot ``examples`` (each a description and its answer),
    the tensor's ``description`` and the question; the answer (a digit) is read right after it."""
    lines = [INTRO]
    if examples:
        lines.append("Examples, answered by the optimal schedule:")
        for example in examples:
            lines.extend([example.description, QUESTION, f"Answer: {example.digit}"])
        lines.append("Now this tensor:")
    lines.extend([description, QUESTION, "Answer:"])
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- few-shot


def _tensor_digits(trace, capacity_mb: Optional[float], labels: str) -> tuple[Workload, np.ndarray]:
    """Digit per tensor: 9 x (1 - the share of its intervals (access to next access) the optimum keeps), rounded,
    from ``optimum_labels(trace, capacity_mb, method=labels)``: the learned scorer's labels, one way of labelling."""
    if not isinstance(labels, str) or labels not in LABEL_METHODS:
        raise ValueError(f"labels must be one of {list(LABEL_METHODS)} (lab.learn.features.optimum_labels' "
                         f"methods), got {labels!r}")
    if capacity_mb is None:
        raise ValueError(f"capacity_mb (MB, MiB) is needed for labels={labels!r}")
    encoded = encode_trace(trace)
    n = encoded.n_tensors
    kept = optimum_labels(encoded, capacity_mb, method=labels)["kept"].to_numpy()
    reused = encoded.next_use != NEVER
    owner = np.asarray(encoded.codes)[reused]
    total = np.bincount(owner, minlength=n)
    share = np.divide(np.bincount(owner, weights=kept[reused], minlength=n), total, out=np.zeros(n),
                      where=total > 0)
    return encoded, np.rint(9 * (1 - share)).astype(np.int64)


def few_shot_examples(trace, capacity_mb: Optional[float] = None, n_examples: int = 4, labels="belady",
                      seed: int = 0) -> list[FewShotExample]:
    """A handful of tensors of ``trace`` labelled by the optimum, for the few-shot prompt of another trace
    (``LLMScorer(few_shot=...)``).

    ``labels``: how ``lab.learn.features.optimum_labels`` labels each
    access with ``capacity_mb`` MB (MiB) on chip, as for the learned scorer:
    ``"optimum"`` (the share of the tensor the optimum's byte-granular flow
    keeps until its next access), ``"belady"`` (whether Belady's MIN serves
    the next access from the buffer; fast, for traces too large for the
    optimum, the default) or ``"auto"`` (the optimum up to
    ``MAX_OPTIMUM_ACCESSES`` accesses, else Belady). A tensor's digit is 9 x
    (1 - the mean of its intervals' labels), rounded: 0 kept throughout, 9
    never kept or never reused. ``n_examples`` distinct
    descriptions are drawn with ``seed``, spread over the digits (lowest and
    highest first). Returns a list of FewShotExample.
    """
    n_examples = check_int("n_examples", n_examples)
    check_int("seed", seed, low=0)
    _, descriptions = describe_tensors(trace)
    _, digits = _tensor_digits(trace, capacity_mb, labels)
    rng = np.random.default_rng(seed)
    unique: dict[str, int] = {}
    for code in rng.permutation(len(descriptions)):
        unique.setdefault(descriptions[code], int(digits[code]))
    by_digit: dict[int, list[str]] = {}
    for description, digit in unique.items():
        by_digit.setdefault(digit, []).append(description)
    chosen: list[FewShotExample] = []
    order = sorted(by_digit)
    while len(chosen) < n_examples and any(by_digit.values()):
        # alternate lowest and highest digits, then work inwards: the examples span the scale
        for digit in [d for pair in zip(order, reversed(order)) for d in pair][:len(order)]:
            if by_digit[digit] and len(chosen) < n_examples:
                chosen.append(FewShotExample(by_digit[digit].pop(), digit))
    return chosen


def _check_examples(few_shot) -> tuple[FewShotExample, ...]:
    if few_shot is None:
        return ()
    if isinstance(few_shot, (str, bytes, pd.DataFrame)) or not isinstance(few_shot, Sequence):
        raise TypeError("few_shot must be None or a list of FewShotExample (or (description, digit) pairs; see "
                        f"lab.learn.llm.few_shot_examples), got {type(few_shot).__name__}")
    examples = []
    for item in few_shot:
        if not isinstance(item, FewShotExample):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"few_shot items must be FewShotExample or (description, digit) pairs, got {item!r}")
            try:
                item = FewShotExample(*item)
            except (TypeError, ValueError) as error:
                raise ValueError(f"few_shot examples need a str description and a digit 0-9, got {item!r}: "
                                 f"{error}") from None
        examples.append(item)
    return tuple(examples)


# ----------------------------------------------------------------------------------------------- model files

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model_path(model) -> Path:
    """The local folder of ``model``: a path to a folder holding a transformers model, or a Hugging Face
    repository name found in the local Hugging Face cache (``local_files_only``: nothing is downloaded).
    ValueError saying how to point the scorer at a local copy when neither is on disk."""
    if isinstance(model, Path):
        model = str(model)
    if not isinstance(model, str) or not model:
        raise TypeError(f"model must be a path to a local model folder or a Hugging Face name (str), got {model!r}")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"model folder {str(path)!r} holds no config.json: point model at a folder saved by "
                             "transformers (save_pretrained) or downloaded from the Hugging Face Hub")
        return path.resolve()
    if _REPO_ID.match(model) and not path.is_absolute():
        try:
            from huggingface_hub import snapshot_download

            found = Path(snapshot_download(repo_id=model, local_files_only=True))
            if (found / "config.json").is_file():
                return found.resolve()
        except Exception:  # not in the cache (LocalEntryNotFoundError), or not a valid repository name
            pass
    raise ValueError(
        f"LLM model {model!r} is not on disk (looked for a folder of that name and in the local Hugging Face cache; "
        "lab never downloads models). Point the scorer at a local copy: LLMScorer(model='/path/to/"
        "Mistral-7B-Instruct-v0.2'), lab.learn.llm.configure(model='/path/to/...'), or set "
        f"{MODEL_ENV}=/path/to/... (a folder with config.json, the tokenizer and the weights, e.g. fetched once "
        f"with `hf download {DEFAULT_MODEL} --local-dir /path/to/Mistral-7B-Instruct-v0.2`)")


def _model_identity(path: Path, quantization: Optional[str]) -> str:
    """What a cached score depends on: the model folder, its files (name, size, modification time), the
    quantization and the prompt version."""
    files = sorted((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in path.rglob("*") if p.is_file())
    blob = json.dumps([str(path), files, quantization, PROMPT_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def score_cache_dir() -> Path:
    """Where LLM scores are cached on disk: ``llm-scores`` under lab's cache directory (``$LAB_CACHE_DIR``)."""
    from lab.workloads.models import cache_dir

    return cache_dir() / "llm-scores"


def _read_disk_cache(identity: str) -> dict[str, float]:
    path = score_cache_dir() / f"{identity}.json"
    try:
        with open(path) as file:
            data = json.load(file)
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}  # absent or unreadable: score again


def _write_disk_cache(identity: str, scores: dict[str, float]) -> None:
    """Merge ``scores`` (prompt hash -> expected digit) into the model's cache file, atomically (a temporary file
    renamed over it). A cache that cannot be written is skipped: scores are recomputed next time."""
    folder = score_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        merged = {**_read_disk_cache(identity), **scores}
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{identity}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(merged, file)
            os.replace(temporary, folder / f"{identity}.json")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        pass


def _prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- the scorer


class LLMScorer:
    """Eviction scores from a local causal language model (see the module docstring).

    ``model``: a local folder or a Hugging Face name in the local cache
    (default Mistral-7B-Instruct-v0.2). ``quantization``: ``"nf4"`` (4-bit,
    bitsandbytes), ``"int8"`` (8-bit, bitsandbytes) or None (the model's own
    weights: bfloat16 on CUDA, float32 on CPU). ``device``: ``"cuda"``,
    ``"cpu"`` or a torch device string (None: CUDA when available, else CPU).
    ``batch_size``: prompts per forward pass. ``few_shot``: None, or labelled
    examples from another trace (``few_shot_examples``) put in every prompt.
    ``cache``: reuse scores of earlier (model, prompt) pairs, in memory and on
    disk. The model loads on the first prompt not in the cache.

    ``predict(trace)`` returns one float64 score per access in [0, 9] (the
    expected digit: higher = needed later = evict first), equal for accesses
    of the same tensor.
    """

    def __init__(self, model: str = DEFAULT_MODEL, quantization: Optional[str] = "nf4", device: Optional[str] = None,
                 batch_size: int = 16, few_shot=None, cache: bool = True):
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {list(QUANTIZATIONS)}, got {quantization!r}")
        if device is not None and (not isinstance(device, str) or not DEVICE.fullmatch(device)):
            raise ValueError(f"device must be None (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:N', 'mps', "
                             f"'xpu' or 'xpu:N', got {device!r}")
        if isinstance(model, Path):
            model = str(model)
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a path to a local model folder or a Hugging Face name (str), "
                            f"got {model!r}")
        self.model = model
        self.quantization = quantization
        self.device = device
        self.batch_size = check_int("batch_size", batch_size)
        self.few_shot = _check_examples(few_shot)
        self.cache = check_bool("cache", cache)
        self._path: Optional[Path] = None
        self._identity: Optional[str] = None
        self._loaded = None  # (tokenizer, model, digit token ids, device) once loaded

    def get_params(self) -> dict:
        """The constructor's arguments (estimator style)."""
        return dict(model=self.model, quantization=self.quantization, device=self.device,
                    batch_size=self.batch_size, few_shot=list(self.few_shot) or None, cache=self.cache)

    def __repr__(self) -> str:
        return f"LLMScorer(model={self.model!r}, quantization={self.quantization!r})"

    @property
    def path(self) -> Path:
        """The model's local folder (ValueError when it is not on disk)."""
        if self._path is None:
            self._path = resolve_model_path(self.model)
        return self._path

    @property
    def identity(self) -> str:
        """The model part of the cache key (folder, its files, quantization, prompt version)."""
        if self._identity is None:
            self._identity = _model_identity(self.path, self.quantization)
        return self._identity

    def prompts(self, trace) -> tuple[Workload, list[str]]:
        """The encoded trace and one prompt per distinct tensor (in tensor-code order)."""
        encoded, descriptions = describe_tensors(trace)
        return encoded, [build_prompt(d, self.few_shot) for d in descriptions]

    def predict(self, trace) -> np.ndarray:
        """One score per access of ``trace``: the expected digit (0-9, float64) of the access's tensor."""
        self.path  # a missing model fails before any work
        encoded, prompts = self.prompts(trace)
        scores = self.score_prompts(prompts)
        return scores[np.asarray(encoded.codes)] if len(prompts) else np.zeros(0)

    def score_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """The expected digit for each prompt (float64 in [0, 9]), through the cache."""
        identity = self.identity
        unique = sorted(set(prompts))
        found: dict[str, float] = {}
        if self.cache:
            disk = None
            for prompt in unique:
                if (identity, prompt) in _MEMORY_CACHE:
                    found[prompt] = _MEMORY_CACHE[identity, prompt]
                    continue
                if disk is None:
                    disk = _read_disk_cache(identity)
                key = _prompt_key(prompt)
                if key in disk:
                    found[prompt] = _MEMORY_CACHE[identity, prompt] = disk[key]
        missing = [p for p in unique if p not in found]
        if missing:
            computed = self._expected_digits(missing)
            found.update(computed)
            if self.cache:
                for prompt, value in computed.items():
                    _MEMORY_CACHE[identity, prompt] = value
                _write_disk_cache(identity, {_prompt_key(p): v for p, v in computed.items()})
        return np.array([found[p] for p in prompts], dtype=np.float64)

    # -- the model

    def _load(self):
        if self._loaded is not None:
            return self._loaded
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.path
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        kwargs = dict(local_files_only=True, trust_remote_code=False)
        if self.quantization is None:
            kwargs["dtype"] = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as error:
                raise ImportError(f"quantization={self.quantization!r} needs bitsandbytes and accelerate: "
                                  "pip install 'lab[llm]' (or quantization=None)") from error
            from transformers import BitsAndBytesConfig

            if self.quantization == "nf4":
                config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                            bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
            else:
                config = BitsAndBytesConfig(load_in_8bit=True)
            kwargs.update(quantization_config=config, device_map={"": device})
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if self.quantization is None:
            model = model.to(device)
        model.eval()
        self._loaded = (tokenizer, model, self._digit_ids(tokenizer), device)
        return self._loaded

    @staticmethod
    def _digit_ids(tokenizer) -> list[int]:
        """The token of each digit as the answer after "Answer:" (the last token of "Answer: d")."""
        ids = [tokenizer(f"Answer: {d}", add_special_tokens=False)["input_ids"][-1] for d in DIGITS]
        if len(set(ids)) != 10:
            raise ValueError("the model's tokenizer does not give each digit 0-9 its own token after 'Answer: '; "
                             "the LLM scorer reads the answer from the logits of those ten tokens")
        return ids

    def _encode(self, tokenizer, prompt: str, digit_ids: list[int]) -> list[int]:
        """The prompt's tokens as they precede an answer digit: those of ``prompt + " 0"`` less the digit (so the
        space before the answer is tokenized as the model saw it in training)."""
        text = prompt
        template = getattr(tokenizer, "chat_template", None)
        special = True
        if template:
            body, _, answer = prompt.rpartition("\n")
            text = tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                                 add_generation_prompt=True) + answer
            special = False  # the template holds the special tokens
        ids = tokenizer(text + " 0", add_special_tokens=special)["input_ids"]
        if ids and ids[-1] == digit_ids[0]:
            return ids[:-1]
        return tokenizer(text, add_special_tokens=special)["input_ids"]

    def _digit_logits(self, input_ids, attention_mask):
        """Next-token logits over the ten digits for one left-padded batch (float32, batch x 10)."""
        import torch

        tokenizer, model, digit_ids, device = self._load()
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                           position_ids=position_ids.to(device)).logits[:, -1, :]
        return logits[:, digit_ids].float().cpu()

    def _expected_digits(self, prompts: Sequence[str]) -> dict[str, float]:
        """Score ``prompts`` with the model, in batches of prompts of similar length (shortest first)."""
        import torch

        tokenizer, _, digit_ids, _ = self._load()
        encoded = {p: self._encode(tokenizer, p, digit_ids) for p in prompts}
        order = sorted(prompts, key=lambda p: (len(encoded[p]), p))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        digits = torch.arange(10, dtype=torch.float64)
        result: dict[str, float] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(encoded[p]) for p in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, prompt in enumerate(batch):
                ids = encoded[prompt]
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids):] = 1
            probabilities = torch.softmax(self._digit_logits(input_ids, attention_mask).double(), dim=-1)
            for prompt, expected in zip(batch, (probabilities * digits).sum(-1).tolist()):
                result[prompt] = float(min(max(expected, 0.0), 9.0))
        return result


# ----------------------------------------------------------------------------------------------- the registered scorer

_CONFIGURED: dict = {}
_SCORER: Optional[LLMScorer] = None


def configure(model: Optional[str] = None, **kwargs) -> Optional[LLMScorer]:
    """Set the model (and other ``LLMScorer`` arguments) the registered scorer ``llm`` uses; ``configure()``
    with no arguments goes back to ``$LAB_LLM_MODEL`` or the default model. Returns the scorer (None after a
    reset); ValueError for bad arguments (the model is only looked for on first use)."""
    global _CONFIGURED, _SCORER
    if model is None and not kwargs:
        _CONFIGURED, _SCORER = {}, None
        return None
    arguments = dict(kwargs, model=model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL)
    _SCORER = LLMScorer(**arguments)
    _CONFIGURED = arguments
    return _SCORER


def configured_scorer() -> LLMScorer:
    """The scorer ``llm`` uses: ``configure``'s, else one for ``$LAB_LLM_MODEL`` or the default model (kept, so
    the model loads once)."""
    global _SCORER
    if _CONFIGURED:
        return _SCORER
    model = os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    if _SCORER is None or _SCORER.model != model:
        _SCORER = LLMScorer(model=model)
    return _SCORER


def llm_scores(trace: pd.DataFrame, encoded: Workload) -> np.ndarray:
    """The scorer ``llm`` (registered in ``lab.learn.scoring``, which imports this module on first use): each
    tensor's expected digit / 9 from ``configured_scorer()``, in [0, 1], higher = evict first. ValueError saying
    how to point it at a local model when none is on disk."""
    return configured_scorer().predict(trace) / 9.0
