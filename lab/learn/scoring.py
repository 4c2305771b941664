"""Eviction scores: a registry of scorers, the seed's heuristic, and ``predict_schedule``.

A scorer takes a trace and returns one ``eviction_score`` per access in
[0, 1]; higher means evict first. The ML policy evicts the resident tensor
whose most recent access scored highest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from lab.checks import check_int
from lab.registry import Registry
from lab.trace.schema import numeric_column
from lab.trace.workload import Workload, encode_trace, reuse_distances_from_codes

Scorer = Callable[[pd.DataFrame, Workload], np.ndarray]
SCORERS: Registry[Scorer] = Registry("scorer")

HEURISTIC_WEIGHTS = {"size": 0.4, "reuse": 0.5, "stride": 0.1}


def register_scorer(name: str, replace: bool = False):
    """Decorator: register ``fn(trace, encoded) -> scores`` under ``name`` (case-insensitive).

    ``encoded`` is the validated, integer-coded trace (``lab.encode_trace``). A name another scorer holds is
    refused (ValueError) unless ``replace=True``; registering the same function again (a re-run cell) is allowed.
    The scores are checked where they are used (``check_scores``): one finite number in [0, 1] per access.
    """

    def add(fn: Scorer) -> Scorer:
        if not callable(fn):
            raise TypeError(f"@register_scorer takes a function fn(trace, encoded) -> scores, got {fn!r}")
        return SCORERS.add(name, fn, replace=replace)

    return add


def scorer_names() -> list[str]:
    """Names of the registered scorers."""
    return SCORERS.names()


def _min_max(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the trace; a constant column scales to 0."""
    if values.size == 0:
        return values
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


@register_scorer("heuristic")
def heuristic_scores(trace: pd.DataFrame, encoded: Workload) -> np.ndarray:
    """The seed's heuristic: ``0.4*size + 0.5*reuse + 0.1*stride``, each min-max normalized over the trace.

    Uses ``size_mb``; ``reuse_distance`` (computed from the tensor order when
    the column is absent); ``stride`` (1, contiguous, when absent). A first
    access has no reuse distance (NaN): it counts as the largest reuse
    distance, since a tensor not yet seen again is the likeliest to stream
    through once. Returns float64 scores in [0, 1], one per access.
    """
    size = encoded.access_bytes.astype(np.float64)
    columns = trace.columns
    if "reuse_distance" in columns:
        column = trace["reuse_distance"]
        if not pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
            raise ValueError(f"column 'reuse_distance' must hold numbers >= 0 (NaN for a first access), "
                             f"got dtype {column.dtype}")
        reuse = column.to_numpy(np.float64, na_value=np.nan, copy=True)
    else:
        reuse = reuse_distances_from_codes(encoded.codes, encoded.n_tensors)
    first = np.isnan(reuse)
    if (reuse[~first] < 0).any() or np.isinf(reuse).any():
        raise ValueError("column 'reuse_distance' must hold finite numbers >= 0 (NaN for a first access)")
    reuse[first] = reuse[~first].max() if not first.all() else 0.0
    stride = np.abs(numeric_column(trace, "stride")) if "stride" in columns else np.ones(len(size))
    if not np.isfinite(stride).all():
        raise ValueError("column 'stride' must hold finite numbers")
    w = HEURISTIC_WEIGHTS
    return w["size"] * _min_max(size) + w["reuse"] * _min_max(reuse) + w["stride"] * _min_max(stride)


@register_scorer("llm")
def llm_scores(trace: pd.DataFrame, encoded: Workload) -> np.ndarray:
    """A local language model's rating of how soon each tensor is needed again (``lab.learn.llm``; configure it
    with ``lab.learn.llm.configure(model=...)`` or ``$LAB_LLM_MODEL``), in [0, 1]."""
    from lab.learn.llm import llm_scores as scores  # torch and transformers load only when it is used

    return scores(trace, encoded)


def score(trace: pd.DataFrame, scorer: str = "heuristic") -> pd.DataFrame:
    """Return a copy of ``trace`` with an ``eviction_score`` column (in [0, 1], higher = evict first).

    ``scorer`` names a registered scorer (``scorer_names()``); ValueError otherwise.
    """
    fn = SCORERS.get(scorer)
    encoded = encode_trace(trace)
    scores = check_scores(fn(trace, encoded), encoded.n_accesses, f"scorer {SCORERS.canonical(scorer)!r}")
    scored = trace.copy()
    scored["eviction_score"] = scores
    return scored


SCORE_TOLERANCE = 1e-9  # rounding past the ends of [0, 1] that a sum of weighted shares may carry


def check_scores(scores, n_accesses: int, source: str) -> np.ndarray:
    """The eviction scores ``source`` (a scorer, named in errors) returned for a trace of ``n_accesses``
    accesses, as float64: ValueError naming ``source`` unless they are one real number per access, finite and
    in [0, 1] (higher = evict first). The one check of every scorer's output, where the scores are used."""
    try:
        values = np.asarray(scores)
    except Exception as error:  # noqa: BLE001 (anything numpy cannot hold as an array is not scores)
        raise ValueError(f"{source} must return one score per access, got {type(scores).__name__}: {error}") \
            from None
    if values.ndim != 1:
        raise ValueError(f"{source} must return one score per access (a 1-D array of {n_accesses}), got "
                         f"{type(scores).__name__} of shape {values.shape}")
    if values.shape[0] != n_accesses:
        raise ValueError(f"{source} returned {values.shape[0]:,} scores for a trace of {n_accesses:,} accesses: it "
                         "must return one score per access")
    if values.dtype.kind not in "iuf":
        raise ValueError(f"{source} must return real numbers, got dtype {values.dtype}")
    values = values.astype(np.float64)
    bad = ~np.isfinite(values) | (values < -SCORE_TOLERANCE) | (values > 1 + SCORE_TOLERANCE)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{source} must return finite scores in [0, 1] (higher = evict first), got "
                         f"{values[i]!r} at access {i} ({int(bad.sum()):,} such)")
    return np.clip(values, 0.0, 1.0)


SCORE_DECIMALS = 3  # scores are shown, and grouped as tied, to this many decimals


@dataclass(frozen=True)
class Schedule:
    """``scored``: the trace with ``eviction_score``; ``ranking``: tensors in eviction order (evict first on top);
    ``groups``: every tensor of the trace grouped by its score (``score_groups``), so that ties show as one row
    each (a ranking's top rows often share one score)."""

    scored: pd.DataFrame
    ranking: pd.DataFrame
    groups: pd.DataFrame = field(default=None, repr=False)


def score_groups(ranking: pd.DataFrame, examples: int = 3) -> pd.DataFrame:
    """The tensors of ``ranking`` (``predict_schedule``'s, evict first on top) grouped by their score to
    ``SCORE_DECIMALS`` decimals: one row per score, highest first, with ``first_rank`` and ``last_rank`` (the
    ranks the group spans: within it, the order is by size, larger first, a tie-break and no prediction),
    ``eviction_score`` (rounded), ``tensors`` (how many share it), ``size_mb`` (their sizes summed, MB),
    ``examples`` (the first ``examples`` tensor ids, "..." after them when there are more) and ``ops`` (the
    distinct ops of their latest accesses)."""
    check_int("examples", examples)
    shown = ranking["eviction_score"].round(SCORE_DECIMALS).to_numpy()
    run = np.cumsum(np.r_[True, shown[1:] != shown[:-1]]) if len(shown) else np.zeros(0, np.int64)
    frame = ranking.assign(_run=run, tensor_id=ranking["tensor_id"].astype(str))
    if "rank" not in frame:
        frame["rank"] = np.arange(1, len(frame) + 1)
    if "op" not in frame:
        frame["op"] = ""
    by = frame.groupby("_run", sort=False)
    groups = by.agg(first_rank=("rank", "first"), last_rank=("rank", "last"), eviction_score=("eviction_score", "first"),
                    tensors=("rank", "size"), size_mb=("size_mb", "sum"),
                    ops=("op", lambda ops: ", ".join(dict.fromkeys(map(str, ops)))))
    named = frame.groupby("_run", sort=False).head(examples).groupby("_run", sort=False)["tensor_id"].agg(", ".join)
    groups["examples"] = named + np.where(groups["tensors"] > examples, ", ...", "")
    groups["eviction_score"] = groups["eviction_score"].round(SCORE_DECIMALS)
    return groups[["first_rank", "last_rank", "eviction_score", "tensors", "size_mb", "examples",
                   "ops"]].reset_index(drop=True)


def predict_schedule(trace: pd.DataFrame, top: Optional[int] = 20, scorer: str = "heuristic") -> Schedule:
    """The seed's ``/predict-schedule``: score the trace and rank tensors to evict first.

    Each tensor is ranked by the score of its most recent access (what the ML
    policy uses at the end of the trace); ties by size, larger first. The
    ranking has columns rank, tensor_id, size_mb, reuse_distance, stride, op
    (of that access), accesses (count) and eviction_score; ``top`` rows (None:
    every tensor). ``scorer``: a registered scorer's name (``scorer_names()``). ``groups``: every tensor
    grouped by its score (``score_groups``): the ties.
    """
    if top is not None:
        check_int("top", top, hint=" or None")
    scored = score(trace, scorer)
    last = scored.drop_duplicates("tensor_id", keep="last")
    columns = [c for c in ("tensor_id", "size_mb", "reuse_distance", "stride", "op", "eviction_score") if c in last]
    ranking = last[columns].copy()
    ranking.insert(ranking.columns.get_loc("eviction_score"), "accesses",
                   scored["tensor_id"].map(scored["tensor_id"].value_counts()).loc[last.index].to_numpy())
    ranking = ranking.sort_values(["eviction_score", "size_mb"], ascending=False, kind="stable")
    ranking.insert(0, "rank", np.arange(1, len(ranking) + 1))
    ranking = ranking.reset_index(drop=True)
    return Schedule(scored=scored, ranking=ranking.head(top) if top is not None else ranking,
                    groups=score_groups(ranking))
