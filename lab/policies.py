"""Eviction policies: one registry, each policy a small class over one mechanism.

The mechanism (``lab.kernels.simulate_buffer``): on a miss, evict the resident
tensor with the highest eviction priority until the new tensor fits; ties go to
the earliest inserted. A policy says what priority each access gives its
tensor (``priority``) and whether a hit re-ranks it (``refresh_on_hit``).
Policies whose order is pure age (``age_ordered``) run on an O(1) queue.

Adding a policy: subclass ``Policy`` (or ``AgeOrdered``) and decorate it with
``@register``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Optional, Type

import numpy as np
import pandas as pd

from lab.kernels import NEVER, next_access_positions
from lab.trace import EncodedTrace, numeric_column, require_columns

_REGISTRY: dict[str, Type["Policy"]] = {}


class Policy(ABC):
    """Base class. Subclasses set ``name`` and define ``priority``."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    refresh_on_hit: ClassVar[bool] = True
    # True: the tensor accessed (or inserted) longest ago is evicted first, so
    # the engine keeps an O(1) queue instead of a priority heap.
    age_ordered: ClassVar[bool] = False

    @abstractmethod
    def priority(self, trace: pd.DataFrame, encoded: EncodedTrace) -> Optional[np.ndarray]:
        """Eviction priority each access gives its tensor (float64, one per access; higher = evicted sooner)."""


class AgeOrdered(Policy):
    """A policy that evicts by age alone: of last access (``refresh_on_hit``) or of insertion."""

    age_ordered = True

    def priority(self, trace, encoded):
        return None  # the queue's order is the priority


def register(cls: Type[Policy]) -> Type[Policy]:
    """Class decorator: add a policy to the registry under its name and aliases (case-insensitive)."""
    for label in (cls.name, *cls.aliases):
        _REGISTRY[label.lower()] = cls
    return cls


@register
class LRU(AgeOrdered):
    """Least recently used: evict the tensor whose last access is oldest; a hit refreshes recency."""

    name = "LRU"


@register
class FIFO(AgeOrdered):
    """First in, first out: evict the tensor inserted longest ago; a hit changes nothing."""

    name = "FIFO"
    refresh_on_hit = False


@register
class ML(Policy):
    """Score-driven: evict the tensor with the highest ``eviction_score`` of its most recent access."""

    name = "ML"

    def priority(self, trace, encoded):
        require_columns(
            trace,
            ["eviction_score"],
            hint="The ML policy evicts by score: score the trace first (lab.score(trace)) "
            "or add an eviction_score column",
        )
        return numeric_column(trace, "eviction_score")


@register
class Belady(Policy):
    """Belady's MIN: evict the tensor whose next access is furthest away (never again = furthest).

    The offline optimum for equal sizes, and the bound every other policy is
    compared to. Needs the whole trace in advance.
    """

    name = "Belady"
    aliases = ("OPT", "MIN")

    def priority(self, trace, encoded):
        next_access = next_access_positions(encoded.codes, encoded.n_tensors).astype(np.float64)
        next_access[next_access == NEVER] = np.inf
        return next_access


def policy_names() -> list[str]:
    """Names of the registered policies (aliases not repeated)."""
    return list(dict.fromkeys(cls.name for cls in _REGISTRY.values()))


def get_policy(policy) -> Policy:
    """Return a Policy instance from a registered name or alias (case-insensitive) or a Policy instance.

    Raises ValueError listing the known names for anything else.
    """
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str) and policy.lower() in _REGISTRY:
        return _REGISTRY[policy.lower()]()
    aliases = sorted({a for cls in _REGISTRY.values() for a in cls.aliases})
    raise ValueError(f"unknown policy {policy!r}; known policies: {policy_names()} (aliases: {aliases})")
