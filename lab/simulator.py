"""``lab.simulate``: replay a trace through an on-chip buffer under an eviction policy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lab.cost import CostModel, resolve_cost
from lab.kernels import next_access_positions, simulate_buffer
from lab.policies import get_policy
from lab.trace import EncodedTrace, encode_trace
from lab.units import BYTES_PER_MB, bytes_to_mb, check_positive_mb

_NO_PRIORITY = np.empty(0, np.float64)
_NO_ACCESS_KINDS = (np.empty(0, np.bool_), np.empty(0, np.int64))
ACCESS_KINDS = ("read", "write")


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of one simulation.

    ``metrics`` (a dict):
      - ``accesses``: number of accesses; ``cache_hits`` (served on chip with
        no DRAM read); ``dram_accesses`` (misses: DRAM reads of the whole
        tensor, and writes of tensors larger than the buffer); ``evictions``;
        ``compulsory_misses`` (first access of a tensor);
        ``uncacheable_accesses`` (accesses to tensors larger than the buffer,
        never inserted).
      - ``cache_hit_rate``: hits / accesses, in %; ``byte_hit_rate``: bytes
        served by hits / bytes accessed, in %.
      - ``total_latency``: ms, every access's cost under ``cost``, writebacks
        included; ``bandwidth_wait_time``: ms, the DRAM-transfer part of it.
      - ``bytes_from_dram``: bytes read from DRAM; ``dram_reads_mb`` the same
        in MB; ``dram_writes_mb``: MB written to DRAM (writebacks, and writes
        too large for the buffer); ``writebacks``: dirty evictions written
        back; ``dead_drops``: tensors dropped after their last use;
        ``peak_occupancy_mb``: MB (MiB) resident at the fullest point.
    Per access: ``hit`` (bool), ``inserted`` (bool: the access put its
    tensor into the buffer), ``dropped`` (bool: its tensor was dead after
    it and left the buffer), ``evictions_per_access`` (int32),
    ``resident_bytes`` (int64, after the access), ``write_bytes`` (int64,
    written to DRAM at the access). Per eviction: ``victim_access`` (the
    access that caused it), ``victim_code`` and ``victim_written_back``.
    """

    policy: str
    capacity_mb: float
    cost: CostModel
    metrics: dict
    hit: np.ndarray
    inserted: np.ndarray
    dropped: np.ndarray
    evictions_per_access: np.ndarray
    resident_bytes: np.ndarray
    write_bytes: np.ndarray
    victim_access: np.ndarray
    victim_code: np.ndarray
    victim_written_back: np.ndarray
    is_write: np.ndarray = field(repr=False)
    encoded: EncodedTrace = field(repr=False)

    @property
    def read_bytes(self) -> np.ndarray:
        """Bytes read from DRAM at each access (int64): the whole tensor on a read miss, else 0."""
        return np.where(~self.hit & ~self.is_write, self.encoded.access_bytes, 0)

    @property
    def latency_ms(self) -> np.ndarray:
        """Cost of each access in ms under ``cost`` (float64, one per access), its writebacks included."""
        writebacks = np.bincount(self.victim_access[self.victim_written_back], minlength=self.hit.shape[0])
        return _latency_ms(self.hit, self.read_bytes, self.write_bytes, writebacks, self.cost)

    def to_frame(self) -> pd.DataFrame:
        """Per-access results: access, tensor_id, size_mb, hit, evictions, resident_bytes, write_bytes, latency_ms."""
        enc = self.encoded
        return pd.DataFrame(
            {
                "access": np.arange(enc.n_accesses),
                "tensor_id": enc.tensor_ids[enc.codes],
                "size_mb": bytes_to_mb(enc.access_bytes),
                "hit": self.hit,
                "evictions": self.evictions_per_access,
                "resident_bytes": self.resident_bytes,
                "write_bytes": self.write_bytes,
                "latency_ms": self.latency_ms,
            }
        )

    def victims(self) -> pd.DataFrame:
        """Every eviction in order: access (index of the access that caused it), tensor_id, size_mb, written_back."""
        enc = self.encoded
        return pd.DataFrame(
            {
                "access": self.victim_access,
                "tensor_id": enc.tensor_ids[self.victim_code],
                "size_mb": bytes_to_mb(enc.tensor_bytes[self.victim_code]),
                "written_back": self.victim_written_back,
            }
        )


def _latency_ms(hit, read_bytes, write_bytes, writebacks, cost: CostModel):
    """Per-access cost in ms: a hit costs ``hit_latency_ms``; each DRAM transfer (a miss, a writeback) costs
    ``miss_latency_ms`` plus its MB times ``miss_latency_ms_per_mb`` plus its transfer time."""
    moved = read_bytes + write_bytes
    transfers = (~hit).astype(np.int64) + writebacks
    return (np.where(hit, cost.hit_latency_ms, 0.0) + transfers * cost.miss_latency_ms
            + moved / BYTES_PER_MB * cost.miss_latency_ms_per_mb + cost.transfer_ms(moved))


def access_kinds(trace: pd.DataFrame, enc: EncodedTrace):
    """``(is_write, next_use)`` for a trace with an ``access`` column (read/write), else two empty arrays."""
    if "access" not in trace.columns:
        return _NO_ACCESS_KINDS
    access = trace["access"]
    is_write = (access == "write").to_numpy(dtype=np.bool_, na_value=False)
    bad = ~is_write & (access != "read").to_numpy(dtype=np.bool_, na_value=True)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"column 'access' must be one of {list(ACCESS_KINDS)}; row {row} is {access.iloc[row]!r}")
    return is_write, next_access_positions(enc.codes, enc.n_tensors)


def _metrics(enc: EncodedTrace, hit, is_write, write_bytes, n_evictions, n_writebacks, n_dropped, resident,
             capacity_bytes, cost) -> dict:
    access_bytes = enc.access_bytes
    n = enc.n_accesses
    hits = int(np.count_nonzero(hit))
    misses = n - hits
    bytes_total = int(access_bytes.sum())
    read_miss = ~hit if is_write.shape[0] == 0 else ~hit & ~is_write
    bytes_read = int(access_bytes[read_miss].sum())
    bytes_written = int(write_bytes.sum())
    moved = bytes_read + bytes_written
    wait_ms = float(cost.transfer_ms(moved))
    total_ms = (hits * cost.hit_latency_ms + (misses + n_writebacks) * cost.miss_latency_ms
                + moved / BYTES_PER_MB * cost.miss_latency_ms_per_mb + wait_ms)
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
        "bytes_from_dram": bytes_read,
        "byte_hit_rate": 100.0 * float(access_bytes[hit].sum()) / bytes_total if bytes_total else 0.0,
        "dram_reads_mb": float(bytes_to_mb(bytes_read)),
        "dram_writes_mb": float(bytes_to_mb(bytes_written)),
        "writebacks": int(n_writebacks),
        "dead_drops": int(n_dropped),
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

    With an ``access`` column (``read``/``write``) the buffer also follows
    data flow: a write allocates the tensor without a DRAM read (it is
    produced on chip) and marks it dirty; evicting a dirty tensor that is used
    again costs a DRAM write (writeback); a tensor past its last use is
    dropped without writeback, as a framework frees a dead tensor; a write
    too large for the buffer goes straight to DRAM. Without the column the
    semantics are exactly the plain ones above.

    Returns a SimulationResult; its ``metrics`` times are in ms. Raises
    ValueError on a malformed trace, an unknown policy, a capacity that is not
    a finite number > 0, or an unknown cost preset.
    """
    policy = get_policy(policy)
    capacity_mb = check_positive_mb(capacity_mb, "capacity_mb")
    cost = resolve_cost(cost)
    enc = encode_trace(trace)
    is_write, next_use = access_kinds(trace, enc)
    capacity_bytes = int(capacity_mb * BYTES_PER_MB)
    priority = _NO_PRIORITY if policy.age_ordered else np.ascontiguousarray(policy.priority(trace, enc), np.float64)
    hit, inserted, dropped, evictions, resident, write_bytes, victim_access, victim_code, written_back = simulate_buffer(
        enc.codes, enc.tensor_bytes, capacity_bytes, policy.age_ordered, policy.refresh_on_hit, priority,
        is_write, next_use,
    )
    if is_write.shape[0] == 0:  # plain trace: nothing written, nothing dropped
        dropped, write_bytes = np.zeros(enc.n_accesses, np.bool_), np.zeros(enc.n_accesses, np.int64)
        written_back = np.zeros(victim_code.shape[0], np.bool_)
    return SimulationResult(
        policy=policy.name,
        capacity_mb=capacity_mb,
        cost=cost,
        metrics=_metrics(enc, hit, is_write, write_bytes, victim_code.shape[0], int(written_back.sum()),
                         int(dropped.sum()), resident, capacity_bytes, cost),
        hit=hit,
        inserted=inserted,
        dropped=dropped,
        evictions_per_access=evictions,
        resident_bytes=resident,
        write_bytes=write_bytes,
        victim_access=victim_access,
        victim_code=victim_code,
        victim_written_back=written_back,
        is_write=is_write if is_write.shape[0] else np.zeros(enc.n_accesses, np.bool_),
        encoded=enc,
    )
