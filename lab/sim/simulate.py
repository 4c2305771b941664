"""``lab.simulate``: replay a trace through an on-chip buffer under an eviction policy."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np
import pandas as pd

from lab.checks import check_positive_mb
from lab.sim import engine
from lab.sim.cost import CostModel, resolve_cost
from lab.sim.engine import (DROPPED, DROPS, EVICTIONS, HIT_BYTES, HITS, INSERTED, INSERTIONS, PEAK_BYTES,
                            PERSIST_WRITE_BYTES, PERSISTED, READ_BYTES, READ_HITS, SERVED, STREAMED,
                            WRITE_ALLOCATIONS, WRITE_BYTES, WRITEBACKS, WRITEBACKS_SKIPPED)
from lab.sim.model import BUFFERS  # noqa: F401  (the buffer models' names and descriptions, re-exported)
from lab.sim.model import BufferModelError, SimulationModel, degenerate_note, resolve_buffer
from lab.sim.policy import Policy, bind_hooks, get_policy
from lab.sim import timing
from lab.trace.ops import OP_TABLE_COLUMNS, has_op_index, op_positions, op_table
from lab.trace.schema import column_or
from lab.trace.workload import Workload, encode_trace
from lab.units import bytes_to_mb, mb_to_bytes

if TYPE_CHECKING:
    from lab.sim.hardware import CacheModel

_EMPTY_BOOL = np.empty(0, np.bool_)
_EMPTY_INT = np.empty(0, np.int64)


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of one simulation.

    ``metrics`` (a dict):
      - ``accesses``: number of accesses; ``cache_hits`` (accesses to a
        resident tensor, reads or writes); ``write_allocations`` (writes that
        put their tensor into the buffer: produced on chip, no DRAM traffic,
        not hits); ``dram_accesses`` (misses: DRAM reads of the whole
        tensor, and writes of tensors larger than the buffer; hits +
        write allocations + DRAM accesses = accesses); ``read_hits`` (reads
        of a resident tensor); ``evictions``; ``compulsory_misses`` (first
        accesses of a tensor that read it: misses under any policy); ``uncacheable_accesses`` (accesses to tensors
        larger than the buffer, never inserted).
      - ``cache_hit_rate``: hits / accesses, in %; ``read_hit_rate``: read
        hits / reads, in % (the rate a read-only view of the buffer sees);
        ``byte_hit_rate``: bytes accessed by hits / bytes accessed, in %.
      - ``total_latency``: ms, every access's cost under ``cost``, writebacks
        included; ``bandwidth_wait_time``: ms, the DRAM-transfer part of it.
      - ``bytes_from_dram``: bytes read from DRAM; ``dram_reads_mb`` the same
        in MB; ``dram_writes_mb``: MB written to DRAM (writebacks, and writes
        too large for the buffer); ``dram_traffic_mb``: the two together, what
        ``lab.optimal`` bounds; ``writebacks``: dirty evictions written
        back; ``writebacks_skipped``: dirty evictions not written back because
        the tensor's next access overwrites it whole; ``dead_drops``: tensors
        dropped after their last use;
        ``peak_occupancy_mb``: MB (MiB) resident at the fullest point.
      - For a trace that records its ops (an ``op_index`` column, as captures
        do) also the step time of ``lab.sim.timing`` in eager execution:
        ``step_time_ms``, ``gpu_time_ms`` (the GPU busy), ``host_time_ms``
        (issuing every op) and ``memory_bound_ops`` (ops whose time DRAM or
        on-chip bandwidth sets); NaN, and ``note`` says why, under a cost
        preset without the physical numbers (the seed's). ``op_bytes`` then
        holds the DRAM bytes per op (``lab.sim.timing.bytes_by_op``), and
        ``lab.step_time`` / ``lab.time_breakdown`` price them in either
        execution mode. Other traces have none of these keys.
    Per access (computed on first use from the compact ``outcome``; a
    ValueError when simulated with ``per_access=False``): ``hit`` (bool: its
    tensor was resident), ``write_allocated`` (bool: a write that put its
    tensor into the buffer), ``on_chip`` (bool: no DRAM read, a hit or a
    write allocation),
    ``inserted`` (bool: the access put its tensor into the buffer),
    ``dropped`` (bool: its tensor was dead after it and left the buffer),
    ``evictions_per_access`` (int32), ``resident_bytes`` (int64, after the
    access), ``write_bytes`` (int64, written to DRAM at the access). Per
    eviction: ``victim_access`` (the access that caused it), ``victim_code``
    and ``victim_written_back``.

    What produced the numbers, beside them (never in ``metrics``, which stay
    numbers): ``buffer``, the buffer model that ran (``"scratchpad"`` or
    ``"cache"``), ``cache_model`` (the hardware cache's ``CacheModel``, cache
    mode only), ``params`` (the policy's parameters) and ``model``, all of it
    with ``policy``, ``capacity_mb`` and the cost preset in one
    ``SimulationModel`` (``model.describe()``: one line). ``note``: one
    sentence saying why the result is degenerate (e.g. every tensor larger
    than the buffer), "" when it is not.
    """

    policy: str
    capacity_mb: float
    cost: CostModel
    metrics: dict
    outcome: np.ndarray = field(repr=False)  # uint8 bits per access (lab.sim.engine: SERVED, INSERTED, ...)
    victim_access: np.ndarray = field(repr=False)
    victim_code: np.ndarray = field(repr=False)
    victim_written_back: np.ndarray = field(repr=False)
    workload: Workload = field(repr=False)
    per_access: bool = True
    params: dict = field(default_factory=dict)
    buffer: str = "scratchpad"
    cache_model: Optional[CacheModel] = field(default=None, repr=False)
    note: str = ""
    op_bytes: Optional[tuple] = field(default=None, repr=False)

    @property
    def model(self) -> SimulationModel:
        """What produced these numbers: buffer model, cost preset, policy with its parameters, capacity."""
        return SimulationModel(buffer=self.buffer, cost=self.cost.name, capacity_mb=self.capacity_mb,
                               policy=self.policy, params=dict(self.params), cache_model=self.cache_model)

    def _bits(self, bit: int, what: str) -> np.ndarray:
        self._require_per_access(what)
        return (self.outcome & bit) != 0

    def _require_per_access(self, what: str) -> None:
        if not self.per_access and self.workload.n_accesses:
            raise ValueError(f"{what} needs per-access results: simulate with per_access=True")

    def _per_access_sum(self, index: np.ndarray, values: np.ndarray) -> np.ndarray:
        total = np.zeros(self.workload.n_accesses, np.int64)
        np.add.at(total, index, values)
        return total

    @functools.cached_property
    def on_chip(self) -> np.ndarray:
        """Whether each access was served on chip without a DRAM read (bool): a hit, or a write that
        allocated its tensor."""
        return self._bits(SERVED, "on_chip")

    @functools.cached_property
    def hit(self) -> np.ndarray:
        """Whether each access found its tensor resident (bool; a write that allocates is not a hit)."""
        return self.on_chip & ~self._bits(INSERTED, "hit")

    @functools.cached_property
    def write_allocated(self) -> np.ndarray:
        """Whether each access was a write that put its tensor into the buffer, with no DRAM read (bool)."""
        return self.on_chip & self._bits(INSERTED, "write_allocated")

    @functools.cached_property
    def inserted(self) -> np.ndarray:
        """Whether each access put its tensor into the buffer (bool)."""
        return self._bits(INSERTED, "inserted")

    @functools.cached_property
    def dropped(self) -> np.ndarray:
        """Whether each access's tensor was dead after it and left the buffer (bool)."""
        return self._bits(DROPPED, "dropped")

    @functools.cached_property
    def evictions_per_access(self) -> np.ndarray:
        """Tensors evicted at each access (int32)."""
        self._require_per_access("evictions_per_access")
        return np.bincount(self.victim_access, minlength=self.workload.n_accesses).astype(np.int32)

    @functools.cached_property
    def write_bytes(self) -> np.ndarray:
        """Bytes written to DRAM at each access (int64): writebacks of its victims, the access's own write
        when it was not inserted, or at a persist row its tensor's writeback."""
        enc = self.workload
        streamed = np.where(self._bits(STREAMED | PERSISTED, "write_bytes"), enc.access_bytes, 0)
        back = self.victim_written_back
        return streamed + self._per_access_sum(self.victim_access[back], enc.tensor_bytes[self.victim_code[back]])

    @functools.cached_property
    def resident_bytes(self) -> np.ndarray:
        """Bytes resident after each access (int64)."""
        enc = self.workload
        change = np.where(self.inserted, enc.access_bytes, 0) - np.where(self.dropped, enc.access_bytes, 0)
        change -= self._per_access_sum(self.victim_access, enc.tensor_bytes[self.victim_code])
        return np.cumsum(change)

    @property
    def is_write(self) -> np.ndarray:
        """Whether each access writes its tensor (bool per access; all False for a plain trace)."""
        enc = self.workload
        return column_or(enc, "is_write", False, np.bool_)

    @property
    def is_persist(self) -> np.ndarray:
        """Whether each row is a persist mark, not an access (bool per row; all False without such rows)."""
        enc = self.workload
        return column_or(enc, "is_persist", False, np.bool_)

    @property
    def read_bytes(self) -> np.ndarray:
        """Bytes read from DRAM at each access (int64): the whole tensor on a read miss, else 0."""
        return np.where(~self.on_chip & ~self.is_write & ~self.is_persist, self.workload.access_bytes, 0)

    @property
    def latency_ms(self) -> np.ndarray:
        """Cost of each access in ms under ``cost`` (float64, one per access), its writebacks included."""
        writebacks = np.bincount(self.victim_access[self.victim_written_back], minlength=self.on_chip.shape[0])
        writebacks += self._bits(PERSISTED, "latency_ms")
        # a persist row costs only its writeback: no hit, no miss of its own
        return _latency_ms(self.on_chip, self.read_bytes, self.write_bytes, writebacks, self.cost,
                           marks=self.is_persist)

    def to_frame(self) -> pd.DataFrame:
        """Per-access results: access, tensor_id, size_mb, hit, evictions, resident_bytes, write_bytes, latency_ms."""
        enc = self.workload
        return pd.DataFrame(
            {
                "access": np.arange(enc.n_accesses),
                "tensor_id": enc.tensor_ids[enc.codes],
                "size_mb": bytes_to_mb(enc.access_bytes),
                "hit": self.hit,
                "write_allocated": self.write_allocated,
                "evictions": self.evictions_per_access,
                "resident_bytes": self.resident_bytes,
                "write_bytes": self.write_bytes,
                "latency_ms": self.latency_ms,
            }
        )

    def victims(self) -> pd.DataFrame:
        """Every eviction in order: access (index of the access that caused it), tensor_id, size_mb, written_back."""
        self._require_per_access("victims()")
        enc = self.workload
        return pd.DataFrame(
            {
                "access": self.victim_access,
                "tensor_id": enc.tensor_ids[self.victim_code],
                "size_mb": bytes_to_mb(enc.tensor_bytes[self.victim_code]),
                "written_back": self.victim_written_back,
            }
        )


def _latency_ms(on_chip, read_bytes, write_bytes, writebacks, cost: CostModel, marks=None):
    """Per-access cost in ms: an access served on chip (a hit or a write allocation) costs ``hit_latency_ms``;
    each DRAM transfer (a miss, a writeback) costs ``miss_latency_ms`` plus its MB times
    ``miss_latency_ms_per_mb`` plus its transfer time."""
    moved = read_bytes + write_bytes
    missed = ~on_chip if marks is None else ~on_chip & ~marks
    transfers = missed.astype(np.int64) + writebacks
    return cost.latency_ms(on_chip, transfers, moved)


def compulsory_misses(enc: Workload) -> int:
    """First accesses of a tensor that read it: misses under any policy (a first write allocates instead).
    Counted once per workload (every run on it reports it)."""
    def count() -> int:
        first = enc.previous_use < 0
        if enc.has_writes:
            first &= ~enc.is_write
        if enc.has_persist:
            first &= ~enc.is_persist
        return int(np.count_nonzero(first))

    return enc.memo("compulsory_misses", count)


def uncacheable_accesses(enc: Workload, capacity_bytes: int) -> int:
    """Accesses (persist marks aside) to tensors larger than ``capacity_bytes``: never inserted. Each run
    reports it: the accesses' sizes are sorted once per workload, and not at all while every access fits."""
    accessed = (lambda: enc.access_bytes[~enc.is_persist]) if enc.has_persist else (lambda: enc.access_bytes)
    largest = enc.memo("largest_access_bytes", lambda: int(accessed().max(initial=0)))
    if capacity_bytes >= largest:
        return 0
    sizes = enc.memo("sorted_access_bytes", lambda: np.sort(accessed()))
    return int(sizes.shape[0] - np.searchsorted(sizes, capacity_bytes, side="right"))


def metrics_of_counts(enc: Workload, counts: np.ndarray, capacity_bytes: int, cost: CostModel,
                      times: Optional[timing.StepTime] = None) -> dict:
    """``SimulationResult.metrics`` from the engine's counters (``engine.N_COUNTS`` int64: HITS, HIT_BYTES,
    READ_BYTES, WRITE_BYTES, EVICTIONS, WRITEBACKS, DROPS, PEAK_BYTES) of a run on ``enc`` at
    ``capacity_bytes``, with the latency of ``cost``: the one definition of every metric. ``times``: the run's
    ``lab.sim.timing.StepTime`` (``timing.UNTIMED``: NaN) adds ``step_time_ms``, ``gpu_time_ms``,
    ``host_time_ms`` and ``memory_bound_ops``; None leaves them out (a trace that does not record its ops)."""
    n = enc.n_accesses - enc.n_persist  # persist rows mark, they do not access
    hits = int(counts[HITS])
    allocated = int(counts[WRITE_ALLOCATIONS])
    misses = n - hits - allocated
    reads = n - (enc.memo("n_writes", lambda: int(np.count_nonzero(enc.is_write))) if enc.has_writes else 0)
    bytes_total = enc.total_bytes
    bytes_read = int(counts[READ_BYTES])
    bytes_written = int(counts[WRITE_BYTES])
    n_writebacks = int(counts[WRITEBACKS])
    moved = bytes_read + bytes_written
    wait_ms = float(cost.transfer_ms(moved))
    total_ms = cost.latency_ms(hits + allocated, misses + n_writebacks, moved)
    return {
        "cache_hits": hits,
        "dram_accesses": misses,
        "total_latency": float(total_ms),
        "evictions": int(counts[EVICTIONS]),
        "bandwidth_wait_time": wait_ms,
        "cache_hit_rate": 100.0 * hits / n if n else 0.0,
        "read_hit_rate": 100.0 * int(counts[READ_HITS]) / reads if reads else 0.0,
        "accesses": n,
        "write_allocations": allocated,
        "read_hits": int(counts[READ_HITS]),
        "compulsory_misses": compulsory_misses(enc),
        "uncacheable_accesses": uncacheable_accesses(enc, capacity_bytes),
        "bytes_from_dram": bytes_read,
        "byte_hit_rate": 100.0 * float(counts[HIT_BYTES]) / bytes_total if bytes_total else 0.0,
        "dram_reads_mb": float(bytes_to_mb(bytes_read)),
        "dram_writes_mb": float(bytes_to_mb(bytes_written)),
        "dram_traffic_mb": float(bytes_to_mb(moved)),
        "writebacks": n_writebacks,
        "writebacks_skipped": int(counts[WRITEBACKS_SKIPPED]),
        "persist_writeback_mb": float(bytes_to_mb(counts[PERSIST_WRITE_BYTES])),
        "dead_drops": int(counts[DROPS]),
        "peak_occupancy_mb": float(bytes_to_mb(counts[PEAK_BYTES])),
        **(times.metrics() if times is not None else {}),
    }


def capacity_bytes_of(capacity_mb: float) -> int:
    """A capacity in MB as integer bytes, rounded as tensor sizes are (so a 0.3 MB tensor fits 0.3 MB)."""
    return int(mb_to_bytes(capacity_mb))


def _exact_overload(driver, args):
    """The driver compiled for exactly these argument types (``driver_arguments``' signature). Calling the
    dispatcher could pick a loop compiled for other argument types that numba converts to these."""
    signature = tuple(driver.typeof_pyval(a) for a in args)
    compiled = driver.overloads.get(signature)
    return compiled.entry_point if compiled is not None else driver.compile(signature)


def driver_arguments(workload: Workload, policy: Policy, capacity_bytes: int, per_access: bool = True,
                     state=None, liveness: bool = True, dirty=None) -> tuple:
    """The compiled loop for ``policy`` and its arguments for a run over ``workload`` (see ``replay``)."""
    bind_hooks(type(policy))
    state = policy.init_state(workload, capacity_bytes) if state is None else state
    rw = workload.has_writes
    n = workload.n_accesses if per_access else 0
    # one slot per access for the victims: never more victims than insertions, and untouched pages cost nothing
    if rw:
        # without liveness every access has a next use past the trace: nothing is dropped, and no writeback is
        # skipped for an overwrite to come (a hardware cache knows neither)
        n_all = workload.n_accesses
        next_use = (workload.next_use if liveness
                    else workload.memo("next_use_past_end", lambda: np.full(n_all, n_all, np.int64)))
    else:
        next_use = _EMPTY_INT
    if dirty is None:
        dirty = np.zeros(workload.n_tensors if rw else 0, np.bool_)
    args = (state, workload.codes, workload.tensor_bytes, np.int64(workload.total_bytes), np.int64(capacity_bytes),
            workload.is_write if rw else _EMPTY_BOOL, next_use,
            workload.is_persist if workload.has_persist else _EMPTY_BOOL, bool(per_access),
            np.zeros(engine.N_COUNTS, np.int64), np.zeros(workload.n_tensors, np.bool_), dirty,
            np.full(workload.n_tensors if rw else 0, -1, np.int64), np.zeros(n, np.uint8), np.empty(n, np.int64),
            np.empty(n, np.int64), np.empty(n, np.bool_))
    return engine.driver_for(type(policy)), args


def replay(workload: Workload, policy: Policy, capacity_bytes: int, per_access: bool = True, state=None,
           liveness: bool = True, dirty=None):
    """Run the engine for ``policy`` over ``workload``: returns (counts, outcome, victim_access, victim_code,
    victim_written_back), the outputs of ``lab.sim.engine``, the per-access ones empty unless ``per_access``.
    ``state`` (default: a fresh ``policy.init_state``) is left as the run ends, for inspection.
    ``liveness=False`` (the hardware cache) never drops a dead tensor: the engine sees no last use. ``dirty``
    (bool per tensor, False, for a trace with writes) receives the dirty bits as the run ends."""
    driver, args = driver_arguments(workload, policy, capacity_bytes, per_access, state, liveness, dirty)
    _exact_overload(driver, args)(*args)
    counts, outcome, victim_access, victim_code, written_back = args[9], args[13], args[14], args[15], args[16]
    m = int(counts[engine.EVICTIONS]) if per_access else 0
    return counts, outcome, victim_access[:m].copy(), victim_code[:m].copy(), written_back[:m].copy()


def simulate(trace, policy="LRU", capacity_mb: float = 64.0, cost=None, per_access: bool = True,
             buffer: Optional[str] = None, cache_model=None) -> SimulationResult:
    """Replay ``trace`` through an on-chip buffer of ``capacity_mb`` MB (MiB) under ``policy``.

    Takes a trace DataFrame (columns ``tensor_id``, ``size_mb``; the ML policy
    also needs ``eviction_score``) or a ``Workload`` (``lab.encode_trace``:
    encode once, simulate many times), a policy name or alias
    (case-insensitive: see ``lab.policy_names()``) or a Policy instance
    (``lab.get_policy("S3-FIFO", small_ratio=0.2)``), the capacity in MB, a
    ``CostModel``, hardware preset name or None (the seed's defaults), and
    ``per_access`` (False: metrics only, faster and smaller).

    Each access to a resident tensor is a hit; any other access is a miss (a
    DRAM read). On a miss the tensor is inserted after evicting victims one at
    a time until it fits; a tensor larger than the capacity is never inserted.
    Sizes and the capacity are counted in integer bytes (``size_mb * 2**20``,
    rounded).

    With an ``access`` column (``read``/``write``) the buffer also follows
    data flow: a write allocates the tensor without a DRAM read (it is
    produced on chip) and marks it dirty; evicting a dirty tensor that is used
    again costs a DRAM write (writeback); a tensor past its last use is
    dropped without writeback, as a framework frees a dead tensor; a write
    too large for the buffer goes straight to DRAM. Without the column the
    semantics are exactly the plain ones above.

    ``buffer`` names the buffer model; None (the default) runs the one that
    fits the cost preset (``CostModel.buffer``): the hardware cache for the
    GPU presets (A100, H100, H200: their L2), the scratchpad for the seed's
    defaults (``cost=None``) and a CostModel built without one, so a run that
    names no preset is the scratchpad, as before. The result's ``buffer`` and
    ``model`` say which ran. ``"scratchpad"`` is
    the model above: an ideal, liveness-aware buffer of whole tensors.
    ``"cache"`` is a hardware cache (see ``lab.sim.hardware``): tensors get
    addresses from a caching-allocator model, accesses become accesses to
    fixed-size lines of those addresses, GEMM operands that do not fit are
    re-read per wave of output tiles, and the buffer is write-back with no
    knowledge of liveness: a write allocates its lines without a DRAM read, a
    dirty line is written back when evicted and, with
    ``CacheModel.flush_at_end``, at the end of the trace, whether or not it
    is used again. ``cache_model`` (a ``lab.sim.hardware.CacheModel``, default
    its defaults: 4 KiB lines, 2/3 of ``capacity_mb`` effective, 512 B
    allocator alignment, GEMM panels of half the cache) sets its physical
    parameters; ``policy`` is the cache's replacement (FIFO reproduces the
    H200's measured DRAM traffic best, see ``tests/test_fidelity.py``). In cache mode the result's
    ``workload`` and per-access arrays are those of the line trace, and
    ``metrics["final_writeback_mb"]`` is the MB written by the final flush
    (included in ``dram_writes_mb``).

    A trace with an ``op_index`` column (a capture's) also gets its step
    time (see ``SimulationResult``): the engine then keeps its per-access
    results to sum DRAM bytes per op, whatever ``per_access`` says (the
    result keeps them only with ``per_access=True``).

    Returns a SimulationResult; its ``metrics`` times are in ms. Raises
    ValueError on a malformed trace, an unknown policy, a capacity that is not
    a finite number > 0, an unknown cost preset or ``buffer`` name, a
    ``cache_model`` with a buffer model other than ``"cache"``, and
    ``lab.sim.model.BufferModelError`` (a ValueError) for a policy that
    cannot run in the cache (one reading per-tensor columns of the trace, as
    ML its scores); TypeError on a ``buffer`` that is not a string or None,
    or a ``cache_model`` that is not a CacheModel.
    """
    cost = resolve_cost(cost)
    buffer = resolve_buffer(buffer, cost)
    if cache_model is not None and buffer != "cache":
        raise ValueError(f"cache_model applies to buffer='cache' only, not buffer={buffer!r}: pass buffer='cache' "
                         "or leave cache_model out")
    policy = get_policy(policy)
    capacity_mb = check_positive_mb("capacity_mb", capacity_mb)
    capacity_bytes = capacity_bytes_of(capacity_mb)
    if buffer == "cache":
        return _simulate_cache(trace, policy, capacity_mb, capacity_bytes, cost, per_access, cache_model)
    workload = encode_trace(trace)
    source = workload.trace if isinstance(trace, Workload) else trace
    if not has_op_index(source):
        counts, *per_run = replay(workload, policy, capacity_bytes, per_access)
        return _result(policy, capacity_mb, capacity_bytes, cost, workload,
                       metrics_of_counts(workload, counts, capacity_bytes, cost), counts, per_run, per_access)
    # a trace that records its ops: per-op DRAM bytes (from the per-access results) and the step time
    counts, *per_run = replay(workload, policy, capacity_bytes, True)
    full = _result(policy, capacity_mb, capacity_bytes, cost, workload,
                   metrics_of_counts(workload, counts, capacity_bytes, cost), counts, per_run, True)
    ops = workload.memo("op_table", lambda: op_table(source))
    op_of = workload.memo("op_positions", lambda: op_positions(source))
    op_bytes = timing.bytes_by_op(ops, op_of, full.read_bytes, full.write_bytes, 0)
    return _timed_result(full, op_bytes, counts, capacity_bytes, per_access)


def _timed_result(full: SimulationResult, op_bytes: tuple, counts: np.ndarray, capacity_bytes: int,
                  per_access: bool, extra: Optional[dict] = None) -> SimulationResult:
    """``full`` (a run with per-access results) with its per-op bytes, the step-time metrics (NaN, and a note
    saying why, when its preset lacks the physical numbers or an op's dtype has no peak), ``extra`` metrics (the
    cache's final flush), and without per-access results unless ``per_access``."""
    times, why = timing.priced(op_bytes, full.cost)
    note = " ".join(part for part in (full.note, why) if part)
    metrics = {**metrics_of_counts(full.workload, counts, capacity_bytes, full.cost, times), **(extra or {})}
    stripped = {} if per_access else dict(outcome=np.empty(0, np.uint8), victim_access=_EMPTY_INT,
                                          victim_code=_EMPTY_INT, victim_written_back=_EMPTY_BOOL)
    return dataclasses.replace(full, metrics=metrics, note=note, op_bytes=op_bytes, per_access=bool(per_access),
                               **stripped)


def _result(policy, capacity_mb, capacity_bytes, cost, workload, metrics, counts, per_run, per_access,
            cache_model=None) -> SimulationResult:
    """A SimulationResult from ``replay``'s counters and per-access and per-eviction outputs (``per_run``:
    outcome, victim access, victim code, written back), the run's metrics, and the capacity the engine ran with
    (``capacity_bytes``; in cache mode the effective one)."""
    outcome, victim_access, victim_code, written_back = per_run
    buffer = "cache" if cache_model is not None else "scratchpad"
    note = degenerate_note(policy, workload, capacity_bytes, metrics, int(counts[INSERTIONS]), buffer)
    return SimulationResult(policy=policy.name, capacity_mb=capacity_mb, cost=cost, metrics=metrics, outcome=outcome,
                            victim_access=victim_access, victim_code=victim_code, victim_written_back=written_back,
                            workload=workload, per_access=bool(per_access), params=policy.get_params(),
                            buffer=buffer, cache_model=cache_model, note=note)


def _simulate_cache(trace, policy, capacity_mb, capacity_bytes, cost, per_access, cache_model) -> SimulationResult:
    """``simulate`` with ``buffer="cache"``: the line trace of ``lab.sim.hardware`` through the engine without
    liveness, then the final flush of dirty lines."""
    from lab.sim import hardware

    model = hardware.resolve_cache_model(cache_model)
    if isinstance(trace, Workload):
        if trace.trace is None:
            raise ValueError("buffer='cache' needs the trace's columns: pass the DataFrame or a Workload that keeps it")
        encoded, trace = trace, trace.trace
    else:
        encoded = encode_trace(trace)  # (validates the trace, as the scratchpad does)
    if encoded.has_persist:
        # the cache writes every dirty line back at the end (flush_at_end) whatever persists: marks add nothing
        trace = trace[trace["access"] != "persist"].reset_index(drop=True)
    capacity_bytes = max(1, int(capacity_bytes * model.effective_fraction))
    workload = hardware.line_workload(trace, capacity_bytes, model)  # shared by policies and capacities
    line = np.int64(model.line_bytes)
    dirty = np.zeros(workload.n_tensors if workload.has_writes else 0, np.bool_)
    try:
        state = policy.init_state(workload, capacity_bytes)
    except ValueError as error:  # the line trace keeps none of the trace's columns (a policy's scores)
        raise BufferModelError(f"{policy.name} cannot run in the hardware cache (buffer='cache'), whose accesses "
                               f"are lines, not the trace's tensors ({error}); run it with buffer='scratchpad'"
                               ) from None
    line_op = workload.memo(hardware.LINE_OP, lambda: None)  # the op of each line access: a timed trace's only
    timed = line_op is not None
    counts, *per_run = replay(workload, policy, capacity_bytes, per_access or timed, state=state, liveness=False,
                              dirty=dirty)
    flushed = int(np.count_nonzero(dirty)) if model.flush_at_end else 0
    counts[WRITE_BYTES] += flushed * line
    counts[WRITEBACKS] += flushed
    metrics = metrics_of_counts(workload, counts, capacity_bytes, cost)
    extra = {"final_writeback_mb": float(bytes_to_mb(flushed * line))}
    metrics.update(extra)
    result = _result(policy, capacity_mb, capacity_bytes, cost, workload, metrics, counts, per_run,
                     per_access or timed, cache_model=model)
    if not timed:
        return result
    # kept with the line workload (shared by every run on the same line trace), under the op columns' content
    ops = workload.memo(("op_table", hardware.trace_fingerprint(trace, OP_TABLE_COLUMNS)), lambda: op_table(trace))
    op_bytes = timing.bytes_by_op(ops, line_op, result.read_bytes, result.write_bytes, flushed * int(line))
    return _timed_result(result, op_bytes, counts, capacity_bytes, per_access, extra)
