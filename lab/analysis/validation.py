"""Statistical validation of a trace: is this workload realistic?

Reuse distances are recomputed from the ``tensor_id`` order (the number of
other accesses since the tensor's previous access); a first access has none
and is left out of every reuse statistic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import pandas as pd
from lab.checks import check_int
from lab.trace.workload import encode_trace, reuse_distances_from_codes

# One layer of the default Transformer is 34 architecture accesses (42 with the
# default reuse): a reuse within 32 accesses is a reuse inside the layer, which
# a buffer sized for one layer's working set can serve. Pass ``window`` to
# match your buffer instead.
DEFAULT_WINDOW = 32
SIGNIFICANCE = 0.05


def _stats():
    from scipy import stats  # loaded on first use: keeps `import lab` light

    return stats


def _special():
    from scipy import special

    return special


@dataclass(frozen=True)
class Statistic:
    """One validation result: ``value`` (in ``unit``), ``p_value`` where the statistic is a test, and a
    one-line ``interpretation``."""

    name: str
    value: float
    unit: str
    interpretation: str
    p_value: Optional[float] = None


class ValidationTable(pd.DataFrame):
    """``ValidationReport.to_frame``'s table: a DataFrame that a notebook, a report and the explorer show with
    every interpretation whole (pandas cuts cells longer than ``display.max_colwidth``, 50 characters, mid-word)."""

    @property
    def _constructor(self):
        return ValidationTable

    def _repr_html_(self):
        with pd.option_context("display.max_colwidth", None):
            return super()._repr_html_()

    def __repr__(self) -> str:
        with pd.option_context("display.max_colwidth", None):
            return super().__repr__()


@dataclass(frozen=True)
class ValidationReport:
    """The validation results; ``size_distribution`` is None when there is nothing to compare with,
    ``reuse_distance_distance`` is None without a reference trace."""

    reuse_entropy: Statistic
    reuse_entropy_normalized: Statistic
    temporal_locality: Statistic
    size_distribution: Optional[Statistic]
    reuse_distance_distance: Optional[Statistic]

    def statistics(self) -> list[Statistic]:
        return [s for s in (self.reuse_entropy, self.reuse_entropy_normalized, self.temporal_locality,
                            self.size_distribution, self.reuse_distance_distance) if s is not None]

    def to_frame(self) -> pd.DataFrame:
        """One row per statistic: name, value, unit, p_value, interpretation (a ``ValidationTable``: displayed
        with each interpretation whole)."""
        return ValidationTable([asdict(s) for s in self.statistics()],
                               columns=["name", "value", "unit", "p_value", "interpretation"])

    def to_dict(self) -> dict:
        """JSON-ready dict keyed by statistic name."""
        return {s.name: {k: v for k, v in asdict(s).items() if k != "name"} for s in self.statistics()}


def _observed_reuse(trace: pd.DataFrame) -> np.ndarray:
    enc = encode_trace(trace)
    distances = reuse_distances_from_codes(enc.codes, enc.n_tensors)
    return distances[~np.isnan(distances)]


def reuse_entropy(distances: np.ndarray) -> tuple[Statistic, Statistic]:
    """Shannon entropy of the reuse-distance distribution, in bits and normalized by log2(distinct values)."""
    if distances.size == 0:
        why = "no tensor is reused: the entropy of reuse distances is undefined"
        return (Statistic("reuse_entropy", math.nan, "bits", why),
                Statistic("reuse_entropy_normalized", math.nan, "fraction", why))
    _, counts = np.unique(distances, return_counts=True)
    bits = float(_special().entr(counts / counts.sum()).sum() / math.log(2))  # Shannon entropy in bits
    normalized = bits / math.log2(counts.size) if counts.size > 1 else 0.0
    shape = ("near-uniform: reuse distances are diverse" if normalized > 0.8
             else "concentrated: a few reuse distances dominate" if normalized < 0.4
             else "moderately diverse reuse distances")
    return (Statistic("reuse_entropy", bits, "bits", f"{bits:.2f} bits over {counts.size} distinct reuse distances"),
            Statistic("reuse_entropy_normalized", normalized, "fraction", f"{normalized:.2f}: {shape}"))


def temporal_locality(distances: np.ndarray, window: int) -> Statistic:
    """Share of reuses whose reuse distance is below ``window`` accesses."""
    if distances.size == 0:
        return Statistic("temporal_locality", math.nan, "fraction",
                         "no tensor is reused: temporal locality is undefined")
    share = float(np.mean(distances < window))
    level = "high" if share >= 0.75 else "low" if share < 0.25 else "moderate"
    return Statistic("temporal_locality", share, "fraction",
                     f"{share:.0%} of {distances.size} reuses come within {window} accesses: {level} locality")


def size_distribution_test(sizes_mb: np.ndarray, reference_mb: np.ndarray, against: str) -> Statistic:
    """Two-sample Kolmogorov-Smirnov test of tensor sizes (per access) against a reference sample."""
    result = _stats().ks_2samp(sizes_mb, reference_mb)
    verdict = ("consistent with" if result.pvalue >= SIGNIFICANCE else "differs from")
    return Statistic("size_distribution_ks", float(result.statistic), "KS statistic",
                     f"size distribution {verdict} {against} (p = {result.pvalue:.3g}, alpha = {SIGNIFICANCE})",
                     p_value=float(result.pvalue))


def reuse_distance_distance(distances: np.ndarray, reference: np.ndarray) -> Statistic:
    """Wasserstein (earth mover's) distance between two reuse-distance distributions, in accesses."""
    if distances.size == 0 or reference.size == 0:
        return Statistic("reuse_distance_wasserstein", math.nan, "accesses",
                         "undefined: one of the traces has no reuse")
    w = float(_stats().wasserstein_distance(distances, reference))
    ref_mean = float(reference.mean())
    relative = w / ref_mean if ref_mean > 0 else math.inf
    return Statistic("reuse_distance_wasserstein", w, "accesses",
                     f"{w:.1f} accesses ({relative:.0%} of the reference's mean reuse distance, "
                     f"{ref_mean:.1f}; trace mean {distances.mean():.1f})")


def validate(trace: pd.DataFrame, reference: Optional[pd.DataFrame] = None,
             window: int = DEFAULT_WINDOW) -> ValidationReport:
    """Validate a trace's realism.

    Takes a trace, an optional reference trace (e.g. one captured from a real
    model) and the locality ``window`` in accesses (default 32, about one
    Transformer layer of the default generator: see DEFAULT_WINDOW). Returns a
    ValidationReport: reuse entropy (bits and normalized to [0, 1]), temporal
    locality (share of reuses within ``window``), a two-sample KS test of
    tensor sizes per access (against ``reference`` when given, else against
    the sizes the generator's parameters imply, from
    ``trace.attrs["generator"]``; None when neither exists) and, with a
    reference, the Wasserstein distance between reuse-distance distributions.
    Statistics over an empty set of reuses are NaN, with an interpretation
    saying so.
    """
    check_int("window", window)
    distances = _observed_reuse(trace)  # validates the trace too
    entropy_bits, entropy_norm = reuse_entropy(distances)
    sizes = trace["size_mb"].to_numpy(np.float64)
    size_test = rd_distance = None
    if reference is not None:
        reference_distances = _observed_reuse(reference)
        if len(sizes) and len(reference):
            size_test = size_distribution_test(sizes, reference["size_mb"].to_numpy(np.float64), "the reference trace")
        rd_distance = reuse_distance_distance(distances, reference_distances)
    elif "generator" in trace.attrs and len(sizes):
        from lab.workloads.generator import implied_sizes_mb

        implied = implied_sizes_mb(trace.attrs["generator"], max_accesses=len(trace))
        size_test = size_distribution_test(sizes, implied, "the generator's architecture sizes")
    return ValidationReport(entropy_bits, entropy_norm, temporal_locality(distances, window), size_test, rd_distance)
