"""What produced a number: the buffer model, cost preset, policy with its parameters and capacity of a run.

``SimulationModel`` names them once; ``SimulationResult.model``, the command
line's JSON (``model``), the explorer and the reports' answer tables all
show it, and ``describe()`` says it in one line. ``degenerate_note`` says in
one sentence why a result is degenerate (every tensor larger than the buffer,
a policy that admits none of them, no access served on chip); it is empty
otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from lab.units import BYTES_PER_MB

# The buffer models of ``lab.simulate(..., buffer=...)``: name -> what it is, in a few words.
BUFFERS = {
    "scratchpad": "liveness-aware software-managed whole-tensor buffer",
    "cache": "hardware cache of lines, write-back, no knowledge of liveness",
}
# The optimum (``lab.optimal``), compile plans and their recommended sizes are schedules of this buffer model.
PLAN_BUFFER = "scratchpad"


class BufferModelError(ValueError):
    """A policy that cannot run under a buffer model (e.g. one reading per-tensor trace columns, under the
    hardware cache, whose accesses are lines)."""


def check_buffer(buffer, allow_none: bool = False, name: str = "buffer") -> Optional[str]:
    """``buffer`` if it names a buffer model (``BUFFERS``; None too with ``allow_none``): TypeError for a value
    that is not a string, ValueError for an unknown name, both naming the argument (``name``) and the choices."""
    choices = f"one of {list(BUFFERS)}" + (" or None (the cost preset's model)" if allow_none else "")
    if buffer is None and allow_none:
        return None
    if not isinstance(buffer, str):
        raise TypeError(f"{name} must be {choices}, got {buffer!r} ({type(buffer).__name__})")
    if buffer not in BUFFERS:
        raise ValueError(f"{name} must be {choices}, got {buffer!r}")
    return buffer


def resolve_buffer(buffer, cost) -> str:
    """The buffer model a run uses: ``buffer`` when given, else the one that fits the cost preset ``cost`` (a
    ``CostModel``: ``cost.buffer``, the hardware-cache model for a GPU's L2, the scratchpad for the seed's
    defaults). See ``check_buffer`` for the errors."""
    given = check_buffer(buffer, allow_none=True)
    return given if given is not None else cost.buffer


def params_text(params: dict) -> str:
    """A policy's parameters as ``name=value, ...`` ("" for none)."""
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


@dataclass(frozen=True)
class SimulationModel:
    """What produced a result's numbers.

    ``buffer``: the buffer model (``BUFFERS``: ``"scratchpad"`` or
    ``"cache"``); ``cost``: the cost preset's name (``CostModel.name``);
    ``capacity_mb``: the buffer's size in MB (MiB; None when a table spans
    several); ``policy`` and ``params``: the eviction policy and its
    parameters (``Policy.get_params()``; None and {} when a table spans
    several); ``cache_model``: the hardware cache's physical parameters
    (``lab.sim.hardware.CacheModel``, ``buffer="cache"`` only).
    """

    buffer: str
    cost: str
    capacity_mb: Optional[float] = None
    policy: Optional[str] = None
    params: dict = field(default_factory=dict, hash=False)
    cache_model: Optional[object] = None

    def __post_init__(self):
        check_buffer(self.buffer)

    @property
    def buffer_description(self) -> str:
        """The buffer model in a few words (``BUFFERS``)."""
        return BUFFERS[self.buffer]

    def policy_text(self) -> str:
        """The policy with its parameters, ``S3-FIFO(small_ratio=0.1, ...)``; "" without a policy."""
        if self.policy is None:
            return ""
        return f"{self.policy}({params_text(self.params)})" if self.params else self.policy

    def describe(self) -> str:
        """One line: the policy with its parameters, the capacity, the buffer model and the cost preset, e.g.
        ``LRU, 50 MB cache (hardware cache of 4 KiB lines, 67 % of the capacity effective, write-back, no
        knowledge of liveness), H200 cost model``."""
        what = BUFFERS[self.buffer]
        if self.buffer == "cache" and self.cache_model is not None:
            line = self.cache_model.line_bytes
            size = f"{line // 1024} KiB" if line % 1024 == 0 else f"{line} B"
            what = (f"hardware cache of {size} lines, {100 * self.cache_model.effective_fraction:.0f} % of the "
                    "capacity effective, write-back, no knowledge of liveness")
        capacity = f"{self.capacity_mb:g} MB " if self.capacity_mb is not None else ""
        policy = self.policy_text()
        return f"{policy + ', ' if policy else ''}{capacity}{self.buffer} ({what}), {self.cost} cost model"

    def to_dict(self) -> dict:
        """JSON-ready: buffer, buffer_description, cost, capacity_mb, policy, params, cache_model (its fields, or
        None) and description (``describe()``)."""
        return {
            "buffer": self.buffer,
            "buffer_description": self.buffer_description,
            "cost": self.cost,
            "capacity_mb": self.capacity_mb,
            "policy": self.policy,
            "params": dict(self.params),
            "cache_model": asdict(self.cache_model) if self.cache_model is not None else None,
            "description": self.describe(),
        }

    def answer_columns(self) -> dict:
        """The columns an answer table shows for this model: buffer model, cost preset, and the buffer's size and
        the policy with its parameters when the model has them."""
        columns = {"buffer model": self.buffer, "cost preset": self.cost}
        if self.capacity_mb is not None:
            columns["buffer (MB)"] = float(self.capacity_mb)
        if self.policy is not None:
            columns["policy"] = self.policy_text()
        return columns

    def without_policy(self) -> "SimulationModel":
        """The same buffer, cost and capacity, for a table of several policies."""
        return SimulationModel(self.buffer, self.cost, self.capacity_mb, cache_model=self.cache_model)


def _mb(n_bytes) -> str:
    return f"{float(n_bytes) / BYTES_PER_MB:.3g} MB"


def degenerate_note(policy, workload, capacity_bytes: int, metrics: dict, insertions: int, buffer: str) -> str:
    """One sentence saying why a run is degenerate, or "": no accesses; every access larger than the buffer;
    every access larger than the part of the buffer the policy admits new tensors into (the policy's
    ``admission_limit``); nothing ever admitted; no access served on chip. ``metrics`` are the run's (see
    ``SimulationResult``), ``insertions`` how many accesses put their tensor into the buffer, ``capacity_bytes``
    the capacity the engine ran with (in cache mode, the effective one) and ``buffer`` the buffer model."""
    n = int(metrics["accesses"])
    item = "line" if buffer == "cache" else "tensor"
    if n == 0:
        return "The trace has no accesses: every number is 0."
    uncacheable = int(metrics["uncacheable_accesses"])
    if uncacheable >= n:
        return (f"Every {item} is larger than the buffer ({_mb(capacity_bytes)}; the smallest is "
                f"{_mb(smallest_accessed_bytes(workload))}): every access bypasses it and goes to DRAM.")
    limit = policy.admission_limit(capacity_bytes, workload) if buffer != "cache" else None
    if limit is not None:
        limit_bytes, where = limit
        smallest = smallest_accessed_bytes(workload)
        share = 100.0 * limit_bytes / capacity_bytes
        part = f"{where} ({share:.3g} % of the buffer, {_mb(limit_bytes)})"
        if insertions == 0 and smallest > limit_bytes:
            return (f"{part} holds none of these {item}s (the smallest is {_mb(smallest)}): every {item} bypasses "
                    "it.")
        shut_out = _share_of_bytes_between(workload, limit_bytes, capacity_bytes)
        if shut_out >= MOSTLY_SHUT_OUT:
            return (f"{part} is smaller than the {item}s that carry {100 * shut_out:.0f} % of the bytes accessed: "
                    f"they fit the buffer but are never inserted, so {policy.name} serves few of them.")
    if insertions == 0:
        return (f"{policy.name} admitted none of the {n - uncacheable:,} accesses to {item}s that fit the buffer "
                f"({_mb(capacity_bytes)}): every access goes to DRAM.")
    if int(metrics["cache_hits"]) + int(metrics["write_allocations"]) == 0:
        if uncacheable:
            why = (f"{uncacheable:,} of {n:,} accesses are to {item}s larger than the buffer ({_mb(capacity_bytes)}), "
                   f"and no other {item} is used again while it is resident")
        elif int(metrics["compulsory_misses"]) >= n:
            why = f"every access is the first of its {item}"
        else:
            why = f"no {item} is used again while it is resident"
        return f"No access is served on chip: {why}."
    return ""


MOSTLY_SHUT_OUT = 0.5  # a note when tensors a policy never inserts, though they fit, carry this share of the bytes


def _share_of_bytes_between(workload, low_bytes: int, high_bytes: int) -> float:
    """The share of the bytes ``workload`` accesses (persist marks aside) in accesses larger than ``low_bytes``
    and at most ``high_bytes``."""
    sizes = workload.access_bytes[~workload.is_persist] if workload.has_persist else workload.access_bytes
    total = float(sizes.sum())
    if total <= 0:
        return 0.0
    return float(sizes[(sizes > low_bytes) & (sizes <= high_bytes)].sum()) / total


def smallest_accessed_bytes(workload) -> int:
    """The smallest access of ``workload`` in bytes, persist marks aside (0 without accesses); once per
    workload."""
    def smallest() -> int:
        accessed = workload.access_bytes[~workload.is_persist] if workload.has_persist else workload.access_bytes
        return int(np.min(accessed)) if accessed.shape[0] else 0

    return workload.memo("smallest_access_bytes", smallest)
