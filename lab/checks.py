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
