"""A learned eviction scorer: gradient-boosted trees (LightGBM) that imitate the optimum.

``LearnedScorer`` is an estimator: ``fit(traces, capacity_mb=...)`` learns,
from the online features of each access (``lab.learn.features``), the share
of the tensor that the optimum (``lab.optimal``; Belady on traces too large
for it) does *not* keep until the tensor's next use; ``predict(trace)``
returns that probability as the eviction score (higher = evict first, as the
ML policy expects). The scorer ``learned`` (``lab.score(trace, "learned")``)
uses a default model trained reproducibly on small training-step and forward
captures of the presets, cached on first use under the capture cache
directory (``$LAB_CACHE_DIR`` or ``~/.cache/lab/captures``, subfolder
``learned``), keyed by a hash of the training configuration and the versions
of lab and LightGBM. lightgbm is imported on first use, never by ``import lab``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from numbers import Real
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from lab.checks import check_int, check_number, check_positive_mb
from lab.learn.features import CATEGORICAL, SOURCE_COLUMNS, access_features, feature_names, optimum_labels
from lab.learn.scoring import register_scorer
from lab.learn.trees import FlatTrees
from lab.trace.workload import Workload, encode_trace
from lab.units import bytes_to_mb

# Fewer examples leave LightGBM's bagging (80 % of the rows per tree) an empty sample, which it cannot train on.
MIN_TRAINING_EXAMPLES = 2
FORMAT = "lab.LearnedScorer"
FORMAT_VERSION = 2  # 2: a checksum of the content (sha256)
MAX_MODEL_BYTES = 256 * 2**20  # the default model's file is ~60 KB


def _digest(content: dict) -> str:
    """The SHA-256 of a model file's content (every key but ``sha256``), as canonical JSON."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _lightgbm():
    try:
        import lightgbm
    except ImportError as error:  # pragma: no cover - a dependency of lab
        raise ImportError("the learned scorer needs lightgbm: pip install lightgbm") from error
    return lightgbm


def _capacities(traces: list, capacity_mb, capacity_fraction) -> list[list[float]]:
    """Capacities (MB) per trace: ``capacity_mb`` (one or several, for every trace) or ``capacity_fraction``
    (shares of each trace's working set)."""
    if (capacity_mb is None) == (capacity_fraction is None):
        raise ValueError("give exactly one of capacity_mb (MB, one number or a list) and capacity_fraction "
                         "(shares of each trace's working set, one number or a list)")
    if capacity_mb is not None:
        values = [capacity_mb] if isinstance(capacity_mb, Real) else capacity_mb
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ValueError(f"capacity_mb must be a positive number of MB (MiB) or a list of them, "
                             f"got {capacity_mb!r}")
        values = [check_positive_mb("capacity_mb", v) for v in values]
        if not values:
            raise ValueError("capacity_mb must hold at least one capacity, got an empty list")
        return [values for _ in traces]
    shares = [capacity_fraction] if isinstance(capacity_fraction, Real) else capacity_fraction
    if isinstance(shares, (str, bytes)) or not hasattr(shares, "__iter__"):
        raise ValueError(f"capacity_fraction must be a number in (0, 1] or a list of them, got {capacity_fraction!r}")
    shares = [check_number("capacity_fraction", f, 0, 1) for f in shares]
    if not shares or min(shares) <= 0:
        raise ValueError(f"capacity_fraction must hold numbers in (0, 1], got {capacity_fraction!r}")
    out = []
    for trace in traces:
        working = float(bytes_to_mb(encode_trace(trace).tensor_bytes.sum()))
        out.append([working * f for f in shares])
    return out


class LearnedScorer:
    """Gradient-boosted trees (LightGBM) that score each access by how likely the optimum drops its tensor.

    Parameters: ``seed`` (every random choice of the training), ``n_estimators``
    (trees), ``num_leaves``, ``learning_rate``, ``min_child_samples``,
    ``num_threads`` (fixed, so training is reproducible; the default 2),
    ``label_method`` (``"auto"``, ``"optimum"`` or ``"belady"``: see
    ``lab.learn.features.optimum_labels``) and ``max_depth`` (each tree's depth: scoring walks every tree to
    its full depth, ``lab.learn.trees.CompleteTrees``, so trees x depth is the scoring cost; 30 trees of depth
    6 closed 59 % of the gap on held-out training steps against 61 % for 60, at half the cost). The scores
    are meant for the ML policy with bypass, compared at a resolution of 0.1 (``lab.get_policy("ML",
    bypass=True, resolution=0.1)``; see lab.analysis.scorer_evaluation.LEARNED_RESOLUTION). Training is
    deterministic (LightGBM's ``deterministic=True``, row-wise histograms, a fixed thread
    count): the same traces and parameters give the same model and scores.
    """

    def __init__(self, seed: int = 0, n_estimators: int = 30, num_leaves: int = 15, learning_rate: float = 0.2,
                 min_child_samples: int = 20, num_threads: int = 2, label_method: str = "auto",
                 max_depth: int = 6):
        self.seed = check_int("seed", seed, 0)
        self.n_estimators = check_int("n_estimators", n_estimators)
        self.num_leaves = check_int("num_leaves", num_leaves, 2)
        self.learning_rate = check_number("learning_rate", learning_rate, 0)
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r}")
        self.min_child_samples = check_int("min_child_samples", min_child_samples)
        self.num_threads = check_int("num_threads", num_threads)
        self.max_depth = check_int("max_depth", max_depth)
        if label_method not in ("auto", "optimum", "belady"):
            raise ValueError(f"label_method must be one of ['auto', 'optimum', 'belady'], got {label_method!r}")
        self.label_method = label_method
        self.booster_ = None
        self.columns_: list[str] = []
        self.features_: list[str] = []
        self.categories_: dict[str, list[str]] = {}
        self.fit_seconds_: Optional[float] = None
        self._model: Optional[tuple[str, FlatTrees]] = None  # LightGBM's text model and the trees predict walks

    def get_params(self) -> dict:
        """The constructor's parameters, as a dict (``LearnedScorer(**scorer.get_params())`` makes a twin)."""
        return dict(seed=self.seed, n_estimators=self.n_estimators, num_leaves=self.num_leaves,
                    learning_rate=self.learning_rate, min_child_samples=self.min_child_samples,
                    num_threads=self.num_threads, label_method=self.label_method, max_depth=self.max_depth)

    def _lgb_params(self) -> dict:
        return dict(objective="cross_entropy", learning_rate=self.learning_rate, num_leaves=self.num_leaves,
                    max_depth=self.max_depth,
                    min_data_in_leaf=self.min_child_samples, seed=self.seed, deterministic=True,
                    force_row_wise=True, num_threads=self.num_threads, verbosity=-1, max_bin=63,
                    feature_fraction=0.9, feature_fraction_seed=self.seed, bagging_fraction=0.8, bagging_freq=1,
                    bagging_seed=self.seed, data_random_seed=self.seed, max_cat_to_onehot=8,
                    cat_smooth=10.0)

    @property
    def fitted(self) -> bool:
        """Whether the scorer holds a model (fitted or loaded)."""
        return self._model is not None

    def fit(self, traces, capacity_mb=None, capacity_fraction=None) -> "LearnedScorer":
        """Learn from ``traces`` (a list of trace DataFrames, or one) labelled by the optimum at each capacity.

        Give ``capacity_mb`` (MB, MiB: one number or a list; every trace is
        labelled at each) or ``capacity_fraction`` (shares of each trace's
        working set in (0, 1]: one or a list). Every access of every trace at
        every capacity is one training example, weighted by the tensor's size
        (traffic is bytes) normalized per trace and capacity. The model uses
        the optional columns (see ``SOURCE_COLUMNS``) present in every
        training trace, and requires them of the traces it scores. Returns
        self. Raises ValueError for an empty list, a malformed trace or a bad
        capacity.
        """
        lgb = _lightgbm()
        if isinstance(traces, (pd.DataFrame, Workload)):
            traces = [traces]
        traces = list(traces) if not isinstance(traces, (str, bytes)) and hasattr(traces, "__iter__") else None
        if not traces:
            raise ValueError("traces must be a non-empty list of trace DataFrames")
        frames = []
        for k, trace in enumerate(traces):
            frame = trace.trace if isinstance(trace, Workload) else trace
            if not isinstance(frame, pd.DataFrame):
                raise ValueError(f"traces[{k}] must be a trace DataFrame, got {type(trace).__name__}")
            frames.append(frame)
        capacities = _capacities(frames, capacity_mb, capacity_fraction)
        start = time.perf_counter()
        self._model = None  # a failed fit leaves the scorer unfitted, never half its old model and half the new
        self.columns_ = [c for c in SOURCE_COLUMNS if all(c in f.columns for f in frames)]
        frames = [f[[c for c in f.columns if c in ("tensor_id", "size_mb", *self.columns_)]] for f in frames]
        raw = [access_features(f) for f in frames]
        self.categories_ = {}
        for name in CATEGORICAL:
            if any(name in strings for _, _, strings in raw):
                values = set()
                for _, _, strings in raw:
                    values.update(strings.get(name, ()))
                self.categories_[name] = sorted(values)
        matrices, labels, weights = [], [], []
        for frame, caps in zip(frames, capacities):
            matrix, names, _ = access_features(frame, self.categories_)
            self.features_ = names
            size = encode_trace(frame).access_bytes.astype(np.float64)
            for capacity in caps:
                label = optimum_labels(frame, capacity, self.label_method)["evict"].to_numpy()
                matrices.append(matrix)
                labels.append(label)
                weights.append(size / size.sum() * len(size))
        matrix, label, weight = np.vstack(matrices), np.concatenate(labels), np.concatenate(weights)
        if len(label) < MIN_TRAINING_EXAMPLES:
            raise ValueError(f"traces hold {sum(len(f) for f in frames):,} access(es) in all, {len(label):,} "
                             f"training example(s) at {sum(map(len, capacities)):,} capacity(ies): LearnedScorer.fit "
                             f"needs at least {MIN_TRAINING_EXAMPLES} (one per access and capacity)")
        categorical = [j for j, name in enumerate(self.features_) if name in CATEGORICAL]
        data = lgb.Dataset(matrix, label=label, weight=weight, feature_name=self.features_,
                           categorical_feature=categorical, free_raw_data=True,
                           params={"max_bin": 63, "verbosity": -1, "data_random_seed": self.seed})
        self.booster_ = lgb.train(self._lgb_params(), data, num_boost_round=self.n_estimators)
        text = self.booster_.model_to_string()
        self._model = (text, FlatTrees.from_model_text(text, len(self.features_), self.features_))
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _check_fitted(self) -> None:
        if self._model is None:
            raise ValueError("this LearnedScorer has no model: fit it (scorer.fit(traces, capacity_mb=...)) or "
                             "load one (LearnedScorer.load(path))")

    def features(self, trace) -> pd.DataFrame:
        """The model's online features of every access of ``trace``, as a DataFrame (categoricals as codes)."""
        self._check_fitted()
        matrix = self._matrix(trace)
        return pd.DataFrame(matrix, columns=self.features_)

    def _matrix(self, trace) -> np.ndarray:
        frame = trace.trace if isinstance(trace, Workload) else trace
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"trace must be a trace DataFrame or Workload, got {type(trace).__name__}")
        missing = [c for c in self.columns_ if c not in frame.columns]
        if missing:
            raise ValueError(f"trace is missing column(s) {missing} that the model was trained on (it needs "
                             f"{self.columns_}); score it with a model fitted on traces without them")
        keep = [c for c in frame.columns if c in ("tensor_id", "size_mb", *self.columns_)]
        workload = trace if isinstance(trace, Workload) else None  # already encoded: not encoded again
        matrix, names, _ = access_features(frame[keep] if len(keep) < len(frame.columns) else frame,
                                           self.categories_, workload=workload)
        if names != self.features_:  # cannot happen when the columns match; a guard for edited models
            raise ValueError(f"trace gives features {names}, the model expects {self.features_}")
        return matrix

    def predict(self, trace) -> np.ndarray:
        """Eviction scores of every access of ``trace`` (a DataFrame or Workload): float64 in [0, 1], the
        predicted share of the tensor the optimum drops before its next use; higher = evict first (the ML
        policy's orientation). Raises ValueError when unfitted or when the trace lacks a column the model
        was trained on."""
        self._check_fitted()
        matrix = self._matrix(trace)
        if len(matrix) == 0:
            return np.zeros(0, dtype=np.float64)
        raw = self._trees().predict_raw(matrix)
        return 1.0 / (1.0 + np.exp(-raw))  # the cross-entropy objective's link, as Booster.predict applies it

    def _trees(self) -> FlatTrees:
        self._check_fitted()
        return self._model[1]

    def feature_importances(self, kind: str = "gain") -> pd.Series:
        """Each feature's importance (``"gain"``: total loss reduction of its splits, or ``"split"``: how many),
        sorted, largest first."""
        self._check_fitted()
        if kind not in ("gain", "split"):
            raise ValueError(f"kind must be 'gain' or 'split', got {kind!r}")
        values = self._trees().importances(len(self.features_), kind)
        return pd.Series(values, index=self.features_, name=kind).sort_values(ascending=False)

    def to_dict(self) -> dict:
        """The fitted model as a JSON-ready dict (LightGBM's text model inside), with the SHA-256 of the rest
        (``sha256``: ``load`` refuses a file whose content does not match it)."""
        self._check_fitted()
        blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "params": self.get_params(),
                "columns": self.columns_, "features": self.features_, "categories": self.categories_,
                "model": self._model[0]}
        return {**blob, "sha256": _digest(blob)}

    def save(self, path) -> Path:
        """Write the model to ``path`` (JSON with LightGBM's text model) atomically: a temporary file in the same
        folder, then ``os.replace``; a reader never sees half a file. Returns the path."""
        path = Path(path)
        blob = json.dumps(self.to_dict())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as file:
                file.write(blob)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        return path

    @classmethod
    def load(cls, path) -> "LearnedScorer":
        """Read a model written by ``save``.

        The file is untrusted input (a model a user hands over, or a cache file damaged on disk): its checksum
        must match its content, its parameters, columns, features and categories must be what a LearnedScorer
        writes, and its trees are parsed and checked by lab (``FlatTrees.from_model_text``: every split's
        feature, threshold and children, no loop, every node reached once) before any compiled code walks
        them; LightGBM never parses the file. Raises ValueError naming ``path`` when it does not exist or does
        not hold a valid LearnedScorer model.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a file path (str or Path), got {type(path).__name__}")
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"path {str(path)!r} does not exist or is not a file: no model to load")
        where = f"path {str(path)!r}"
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ValueError(f"{where} holds {size:,} bytes, more than a LearnedScorer model "
                             f"({MAX_MODEL_BYTES:,} at most)")
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as error:
            raise ValueError(f"{where} does not hold a LearnedScorer model: {error}") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"{where} does not hold a LearnedScorer model")
        if blob.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{where} holds model format {blob.get('format_version')!r}, this lab reads "
                             f"{FORMAT_VERSION}: fit and save the model again")
        try:
            return cls._from_blob(blob)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where} does not hold a valid LearnedScorer model: {error}") from None

    @classmethod
    def _from_blob(cls, blob: dict) -> "LearnedScorer":
        """A scorer from a saved model's content, every field checked (ValueError or TypeError saying which)."""
        expected = {"format", "format_version", "params", "columns", "features", "categories", "model", "sha256"}
        if set(blob) != expected:
            raise ValueError(f"its keys are {sorted(blob)}, {sorted(expected)} expected")
        content = {k: v for k, v in blob.items() if k != "sha256"}
        if blob["sha256"] != _digest(content):
            raise ValueError("its content does not match its checksum (sha256): the file was changed or damaged")
        params = blob["params"]
        if not isinstance(params, dict) or set(params) != set(cls().get_params()):
            raise ValueError(f"params must be the constructor's parameters {sorted(cls().get_params())}")
        scorer = cls(**params)
        columns, features, categories = blob["columns"], blob["features"], blob["categories"]
        if (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
                or columns != [c for c in SOURCE_COLUMNS if c in columns]):
            raise ValueError(f"columns must be a list of trace columns among {list(SOURCE_COLUMNS)}, in that order")
        if features != feature_names(columns):
            raise ValueError(f"features must be the features of columns {columns}: {feature_names(columns)}")
        if (not isinstance(categories, dict) or not set(categories) <= set(CATEGORICAL) & set(features)
                or not all(isinstance(v, list) and all(isinstance(x, str) for x in v) and len(set(v)) == len(v)
                           for v in categories.values())):
            raise ValueError("categories must map categorical features to lists of distinct strings")
        trees = FlatTrees.from_model_text(blob["model"], len(features), features)
        scorer.columns_, scorer.features_ = list(columns), list(features)
        scorer.categories_ = {k: list(v) for k, v in categories.items()}
        scorer._model = (blob["model"], trees)
        return scorer

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"LearnedScorer({params}){'' if self.fitted else ' (not fitted)'}"


# The default model of the scorer ``learned``: small training-step and forward captures of five presets, labelled
# by the optimum at four shares of each working set. About 40 s on 2 cores the first time (captures included).
DEFAULT_TRAINING = {
    "presets": ["gpt2", "bert-base", "llama-2-7b", "vit-base", "mlp"],
    "capture": {"batch_size": 1, "seq_length": 128, "num_layers": 2},
    "training": [True, False],
    "capacity_fraction": [0.02, 0.05, 0.1, 0.2],
    "params": {},
}


def default_model_path(config: Optional[dict] = None) -> Path:
    """Where the default model of ``config`` (default DEFAULT_TRAINING) is cached: under the capture cache
    directory (``$LAB_CACHE_DIR`` or ``~/.cache/lab/captures``), ``learned/default-<hash>.json``, the hash of the
    configuration and the versions of lab and lightgbm."""
    from lab.version import __version__
    from lab.workloads.models import cache_dir

    config = DEFAULT_TRAINING if config is None else config
    model = LearnedScorer(**config["params"]).get_params()  # the constructor's defaults count too
    blob = json.dumps({"config": config, "model": model, "lab": __version__, "lightgbm": _lightgbm().__version__,
                       "format": FORMAT_VERSION}, sort_keys=True)
    return cache_dir() / "learned" / f"default-{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"


def default_training_traces(config: Optional[dict] = None) -> list[pd.DataFrame]:
    """The captures the default model trains on (``lab.capture_model``, cached as captures are)."""
    from lab.workloads.models import capture_model

    config = DEFAULT_TRAINING if config is None else config
    return [capture_model(name, training=training, **config["capture"])
            for name in config["presets"] for training in config["training"]]


_DEFAULT: dict = {}


def default_scorer(config: Optional[dict] = None, refit: bool = False) -> LearnedScorer:
    """The default LearnedScorer: loaded from its cache file, or trained (reproducibly, seed 0) from the
    captures of ``config`` (default DEFAULT_TRAINING) and cached there; kept in memory after the first call.
    ``refit`` retrains and rewrites the cache. A cache file that does not load (``LearnedScorer.load``: damaged,
    or not the model lab wrote) is trained again, with a warning."""
    path = default_model_path(config)
    key = str(path)
    if not refit and key in _DEFAULT:
        return _DEFAULT[key]
    scorer = None
    if not refit and path.is_file():
        try:
            scorer = LearnedScorer.load(path)
        except ValueError as error:  # damaged on disk, or written by hand: trained again, never trusted
            warnings.warn(f"the cached default model cannot be used ({error}); training it again", stacklevel=2)
    if scorer is None:
        config = DEFAULT_TRAINING if config is None else config
        scorer = LearnedScorer(**config["params"]).fit(default_training_traces(config),
                                                       capacity_fraction=config["capacity_fraction"])
        scorer.save(path)
    _DEFAULT[key] = scorer
    return scorer


@register_scorer("learned")
def learned_scores(trace: pd.DataFrame, encoded: Workload) -> np.ndarray:
    """The default learned model's scores (``default_scorer()``): the predicted share of each access's tensor
    the optimum drops before its next use, in [0, 1], higher = evict first. Needs the capture columns
    (access, kind, op, module, layer, phase, dtype, shape); trained and cached on first use (needs torch and
    transformers then)."""
    return default_scorer().predict(encoded)
