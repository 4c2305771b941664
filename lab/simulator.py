"""``lab.simulate``: replay a trace through an on-chip buffer under an eviction policy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lab.cost import CostModel, resolve_cost
from lab.kernels import simulate_buffer
from lab.policies import get_policy
from lab.trace import EncodedTrace, encode_trace
from lab.units import BYTES_PER_MB, bytes_to_mb, check_positive_mb

_NO_PRIORITY = np.empty(0, np.float64)


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of one simulation.

    ``metrics`` (a dict):
      - ``accesses``: number of accesses; ``cache_hits``; ``dram_accesses``
        (misses, each a DRAM read of the whole tensor); ``evictions``;
        ``compulsory_misses`` (first access of a tensor);
        ``uncacheable_accesses`` (accesses to tensors larger than the buffer,
        never inserted, always missed).
      - ``cache_hit_rate``: hits / accesses, in %; ``byte_hit_rate``: bytes
        served by hits / bytes accessed, in %.
      - ``total_latency``: ms, every access's cost under ``cost``;
        ``bandwidth_wait_time``: ms, the DRAM-transfer part of it.
      - ``bytes_from_dram``: bytes read on misses; ``peak_occupancy_mb``: MB
        (MiB) resident at the fullest point.
    Per access: ``hit`` (bool), ``evictions_per_access`` (int32),
    ``resident_bytes`` (int64, after the access). Per eviction:
    ``victim_access`` (the access that caused it) and ``victim_code``.
    """

    policy: str
    capacity_mb: float
    cost: CostModel
    metrics: dict
    hit: np.ndarray
    evictions_per_access: np.ndarray
    resident_bytes: np.ndarray
    victim_access: np.ndarray
    victim_code: np.ndarray
    encoded: EncodedTrace = field(repr=False)

    @property
    def latency_ms(self) -> np.ndarray:
        """Cost of each access in ms under ``cost`` (float64, one per access)."""
        return _access_latency_ms(self.encoded.access_bytes, self.hit, self.cost)

    def to_frame(self) -> pd.DataFrame:
        """Per-access results: access, tensor_id, size_mb, hit, evictions, resident_bytes, latency_ms."""
        enc = self.encoded
        return pd.DataFrame(
            {
                "access": np.arange(enc.n_accesses),
                "tensor_id": enc.tensor_ids[enc.codes],
                "size_mb": bytes_to_mb(enc.access_bytes),
                "hit": self.hit,
                "evictions": self.evictions_per_access,
                "resident_bytes": self.resident_bytes,
                "latency_ms": self.latency_ms,
            }
        )

    def victims(self) -> pd.DataFrame:
        """Every eviction in order: access (index of the access that caused it), tensor_id, size_mb."""
        enc = self.encoded
        return pd.DataFrame(
            {
                "access": self.victim_access,
                "tensor_id": enc.tensor_ids[self.victim_code],
                "size_mb": bytes_to_mb(enc.tensor_bytes[self.victim_code]),
            }
        )


def _access_latency_ms(access_bytes: np.ndarray, hit: np.ndarray, cost: CostModel) -> np.ndarray:
    miss_cost = (
        cost.miss_latency_ms
        + access_bytes / BYTES_PER_MB * cost.miss_latency_ms_per_mb
        + cost.transfer_ms(access_bytes)
    )
    return np.where(hit, cost.hit_latency_ms, miss_cost)


def _metrics(enc: EncodedTrace, hit, n_evictions, resident, capacity_bytes, cost) -> dict:
    access_bytes = enc.access_bytes
    n = enc.n_accesses
    hits = int(np.count_nonzero(hit))
    misses = n - hits
    bytes_total = int(access_bytes.sum())
    bytes_missed = int(access_bytes[~hit].sum())
    wait_ms = float(cost.transfer_ms(bytes_missed))
    total_ms = (
        hits * cost.hit_latency_ms
        + misses * cost.miss_latency_ms
        + bytes_missed / BYTES_PER_MB * cost.miss_latency_ms_per_mb
        + wait_ms
    )
    return {
        "cache_hits": hits,
        "dram_accesses": misses,
        "total_latency": float(total_ms),
        "evictions": int(n_evictions),
        "bandwidth_wait_time": wait_ms,
        "cache_hit_rate": 100.0 * hits / n if n else 0.0,
        "accesses": n,
        "compulsory_misses": enc.n_tensors,
        "uncacheable_accesses": int(np.count_nonzero(access_bytes > capacity_bytes)),
        "bytes_from_dram": bytes_missed,
        "byte_hit_rate": 100.0 * (bytes_total - bytes_missed) / bytes_total if bytes_total else 0.0,
        "peak_occupancy_mb": float(bytes_to_mb(resident.max())) if n else 0.0,
    }


def simulate(trace: pd.DataFrame, policy="LRU", capacity_mb: float = 64.0, cost=None) -> SimulationResult:
    """Replay ``trace`` through an on-chip buffer of ``capacity_mb`` MB (MiB) under ``policy``.

    Takes a trace DataFrame (columns ``tensor_id``, ``size_mb``; the ML policy
    also needs ``eviction_score``), a policy name or alias (case-insensitive:
    see ``lab.policy_names()``) or a Policy instance, the capacity in MB, and
    a ``CostModel``, hardware preset name or None (the seed's defaults).

    Each access to a resident tensor is a hit; any other access is a miss (a
    DRAM read). On a miss the tensor is inserted after evicting victims one at
    a time until it fits; a tensor larger than the capacity is never inserted.
    Sizes are counted in integer bytes (``size_mb * 2**20``, rounded).

    Returns a SimulationResult; its ``metrics`` times are in ms. Raises
    ValueError on a malformed trace, an unknown policy, a capacity that is not
    a finite number > 0, or an unknown cost preset.
    """
    policy = get_policy(policy)
    capacity_mb = check_positive_mb(capacity_mb, "capacity_mb")
    cost = resolve_cost(cost)
    enc = encode_trace(trace)
    capacity_bytes = int(capacity_mb * BYTES_PER_MB)
    priority = _NO_PRIORITY if policy.age_ordered else np.ascontiguousarray(policy.priority(trace, enc), np.float64)
    hit, evictions, resident, victim_access, victim_code = simulate_buffer(
        enc.codes, enc.tensor_bytes, capacity_bytes, policy.age_ordered, policy.refresh_on_hit, priority
    )
    return SimulationResult(
        policy=policy.name,
        capacity_mb=capacity_mb,
        cost=cost,
        metrics=_metrics(enc, hit, victim_code.shape[0], resident, capacity_bytes, cost),
        hit=hit,
        evictions_per_access=evictions,
        resident_bytes=resident,
        victim_access=victim_access,
        victim_code=victim_code,
        encoded=enc,
    )
