"""Argument checks shared by the public functions: one place for the wording of bad-input errors."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Optional

import numpy as np

from lab.units import MAX_SIZE_MB


def check_int(name: str, value, low: int = 1, hint: str = "") -> int:
    """Return ``value`` as int if it is an integer >= ``low`` (bools are not), else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}{hint}, got {value!r}")
    return int(value)


def check_number(name: str, value, low: float = 0, high: Optional[float] = None) -> float:
    """Return ``value`` as float if it is a finite real number in [``low``, ``high``] (no upper bound when None),
    else raise ValueError naming ``name``."""
    if (isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < low
            or (high is not None and value > high)):
        bounds = f"a number in [{low}, {high}]" if high is not None else f"a finite number >= {low}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """Return ``value`` if it is a bool (numpy's too), else raise TypeError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_positive_mb(name: str, value) -> float:
    """Return ``value`` as float if it is a finite real number of MB (MiB) in (0, MAX_SIZE_MB], else raise
    ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a positive number of MB (MiB), got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0 or value > MAX_SIZE_MB:
        raise ValueError(f"{name} must be a finite number of MB (MiB) in (0, {MAX_SIZE_MB:g}], got {value!r}")
    return value


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message (its type's name when there is none): for one-line errors."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def check_power_of_two(name: str, value, low: int, high: int, unit: str = "bytes") -> int:
    """Return ``value`` as int if it is an integer power of two in [``low``, ``high``] (bools are not), else raise
    ValueError naming ``name``."""
    if (isinstance(value, bool) or not isinstance(value, Integral) or value < low or value > high
            or value & (value - 1)):
        raise ValueError(f"{name} must be a power of two from {low:,} to {high:,} {unit}, got {value!r}")
    return int(value)


def check_str(name: str, value, choices=None) -> str:
    """Return ``value`` if it is a non-empty str (one of ``choices`` when given), else raise ValueError (TypeError
    for a value that is not a str) naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if choices is not None and value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    if not value.strip():
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    return value


MAX_PORT = 65535


def check_port(name: str, value) -> int:
    """Return ``value`` as int if it is a TCP port number (an integer in 1..65535), else raise ValueError naming
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not 1 <= value <= MAX_PORT:
        raise ValueError(f"{name} must be a TCP port, an integer from 1 to {MAX_PORT}, got {value!r}")
    return int(value)


def _process_usage_bytes() -> tuple[int, int]:
    """(virtual size, data segment) of this process in bytes (0, 0 where /proc is not available)."""
    try:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return (int(fields["VmSize"].split()[0]) * 1024, int(fields["VmData"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        return 0, 0


def _cgroup_limit_bytes() -> int:
    """The memory limit of this process's container (cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``), in
    bytes; 0 when there is none (a container's machine reports the host's physical memory)."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 says "no limit" with a huge number, v2 with "max"
            return int(text)
    return 0


def memory_budget_bytes() -> int:
    """The memory one operation may plan to use, in bytes: half of this machine's physical memory (or of its
    container's limit), and no more than what this process's limits (``ulimit -v``, ``ulimit -d``: RLIMIT_AS,
    RLIMIT_DATA) leave it."""
    import os

    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 16 * 2**30
    budget = min(physical, _cgroup_limit_bytes() or physical) // 2
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return budget
    virtual, data = _process_usage_bytes()
    for limit, used in ((resource.RLIMIT_AS, virtual), (getattr(resource, "RLIMIT_DATA", None), data)):
        if limit is None:
            continue
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY:
            budget = min(budget, max(0, soft - used))
    return budget


def check_memory(what: str, needed_bytes: float, hint: str) -> None:
    """ValueError, before anything is allocated, when ``what`` would need more memory than ``memory_budget_bytes``:
    "<what> would need about X GiB of memory (this machine allows Y GiB): <hint>". The one wording of every
    memory refusal; ``needed_bytes`` is the caller's estimate."""
    budget = memory_budget_bytes()
    if needed_bytes > budget:
        raise ValueError(f"{what} would need about {needed_bytes / 2**30:,.1f} GiB of memory (this machine allows "
                         f"{budget / 2**30:,.1f} GiB): {hint}")
