"""Eviction policies: one small class each over the engine's hooks, and one registry.

A policy is a frozen dataclass whose fields are its parameters (``param``,
validated on construction; ``get_params()``), a ``State`` (a ``NamedTuple``
of arrays and scalars, built by ``init_state`` for a workload and capacity)
and hooks, plain functions the engine compiles into its loop (see
``lab.sim.engine`` for what each hook does)::

    @register
    @dataclass(frozen=True)
    class MyPolicy(Policy):
        \"\"\"What it evicts, and the paper it follows.\"\"\"
        name = "Mine"
        class State(NamedTuple): ...
        def init_state(self, workload, capacity_bytes): return self.State(...)
        @staticmethod
        def evict(s, c, i): ...
        @staticmethod
        def remove(s, c): ...

``find``, ``can_insert``, ``insert`` and ``spill`` default to doing
nothing (admit everything that fits, never evict on their own); ``evict``
and ``remove`` are required. ``@register``
adds the class to the registry under ``name`` and ``aliases``
(case-insensitive); nothing else needs to change.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, NamedTuple, Optional, Type

from numba.core.extending import overload

from lab.checks import check_bool, check_int, check_number
from lab.registry import Registry
from lab.sim import engine
from lab.sim.engine import NO_VICTIM

POLICIES: Registry[Type["Policy"]] = Registry("policy")
HOOKS = tuple(engine.HOOK_STUBS)
# The hooks the loop inlines (numba copies their code into each call site and types it there again); the others
# it calls, compiled once per policy. Measured on 8 policies (docs/benchmark-log.md, 2026-12-07): inlining evict
# alone compiles in 16 % less time than inlining every hook, at the same speed within the noise; calling evict
# too cost ARC, S3-FIFO and 2Q 10-16 % of their speed.
INLINED_HOOKS = frozenset({"evict"})


def param(default, *, low=None, high=None, integer: bool = False, doc: str = ""):
    """A policy parameter: a dataclass field with a default, checked on construction.

    ``low``/``high`` bound numbers (inclusive); ``integer`` asks for an int;
    a bool default makes a switch (True or False only). Every value in the range must finish in reasonable
    time and stay in bounds (``tests/test_policy_ranges.py`` runs each policy at both ends of each range):
    bound a parameter that costs time per access or per eviction.
    """
    return field(default=default, metadata={"low": low, "high": high, "integer": integer,
                                            "boolean": isinstance(default, bool), "doc": doc})


class _NoState(NamedTuple):
    pass


@dataclass(frozen=True)
class Policy:
    """Base class of eviction policies. Subclasses set ``name``, ``State``, ``init_state`` and the hooks.

    Class attributes: ``name`` and ``aliases`` (registry names);
    ``libcachesim``: the counterpart class in the ``libcachesim`` package
    (None: none), whose keyword arguments ``libcachesim_params()`` gives;
    ``reference``: the paper or source the policy follows; ``randomized``:
    it draws random numbers (then it has a ``seed`` parameter); ``offline``:
    it reads the future of the trace (Belady and kin); ``needs_scores``: it
    reads the trace's ``eviction_score`` column (a scorer's output, one per
    access of a tensor: not there under the hardware cache, whose accesses
    are lines); ``featured``: one of
    the few classics an explorer selects by default (each policy selected
    adds a compile, seconds, to the first result in a fresh process);
    ``one_pass_curve``: the one-pass algorithm that gives the policy's exact
    curve over every capacity at once (``"lru"``: Mattson's stack distances,
    on plain traces; ``"belady"``: the OPT stack, on plain traces with equal
    sizes and without bypass; see ``lab.bounds.curves``), or None. A
    subclass does not inherit it (its hooks differ): it sets its own.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    libcachesim: ClassVar[Optional[str]] = None
    reference: ClassVar[str] = ""
    randomized: ClassVar[bool] = False
    offline: ClassVar[bool] = False
    needs_scores: ClassVar[bool] = False
    featured: ClassVar[bool] = False
    one_pass_curve: ClassVar[Optional[str]] = None
    State: ClassVar[type] = _NoState

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "one_pass_curve" not in vars(cls):  # FIFO(LRU) has no stack algorithm: a subclass says its own
            cls.one_pass_curve = None

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if meta.get("boolean"):
                check_bool(f"{type(self).__name__}.{f.name}", value)
            elif meta.get("integer"):
                name = f"{type(self).__name__}.{f.name}"
                low = meta["low"] if meta["low"] is not None else 0
                bound = f" and <= {meta['high']}" if meta["high"] is not None else ""  # the whole range, in one line
                check_int(name, value, low, bound)
                if meta["high"] is not None and value > meta["high"]:
                    raise ValueError(f"{name} must be an integer >= {low}{bound}, got {value!r}")
            elif "low" in meta:
                check_number(f"{type(self).__name__}.{f.name}", value,
                             meta["low"] if meta["low"] is not None else float("-inf"), meta["high"])

    def get_params(self) -> dict[str, Any]:
        """The policy's parameters, {name: value}."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def libcachesim_params(self) -> dict[str, Any]:
        """Keyword arguments for the libCacheSim counterpart that match these parameters."""
        return {}

    def libcachesim_supports(self, capacity_bytes: int, workload) -> bool:
        """Whether lab and the libCacheSim counterpart are comparable on ``workload`` at this capacity: False
        where libCacheSim aborts, or where it has a documented quirk lab does not copy (see the docstring)."""
        return True

    def admission_limit(self, capacity_bytes: int, workload) -> Optional[tuple[int, str]]:
        """Where the policy admits new tensors into a part of a ``capacity_bytes`` buffer smaller than the whole,
        on ``workload``: (that part's size in bytes, what it is, e.g. ``"S3-FIFO's small queue"``); a tensor
        larger than it is never inserted. None (the default): a tensor is admitted into the whole buffer.
        ``SimulationResult.note`` says so when the tensors larger than that part carry most of the traffic."""
        return None

    def init_state(self, workload, capacity_bytes: int):
        """The policy's state for replaying ``workload`` through ``capacity_bytes`` bytes: a ``State``."""
        raise NotImplementedError(f"{type(self).__name__} must define init_state")

    def __str__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{self.name}({params})" if params else self.name

    # Default hooks. Plain functions: the engine compiles them into its loop.
    @staticmethod
    def find(s, c, i, hit):
        return NO_VICTIM

    @staticmethod
    def can_insert(s, c, i):
        return True

    @staticmethod
    def insert(s, c, i):
        pass

    @staticmethod
    def spill(s, c, i):
        return NO_VICTIM


_BOUND: dict[type, Type[Policy]] = {}  # State class -> the policy whose hooks implement the stubs for it
# (hook, its parameter names) -> State class -> the hook's implementation for it
_IMPLS: dict[tuple[str, tuple[str, ...]], dict[type, Any]] = {}


def _implementations(hook: str, params: tuple[str, ...]) -> dict[type, Any]:
    """The implementations of ``hook`` whose parameters are named ``params`` (numba asks a typer and its
    implementation to name them alike), by State class; the first call overloads the hook's stub with one typer
    that picks from them by the state's class. One typer per stub, not one per policy: numba tries every
    overload of a stub at each call site in each round of type inference, and with one per policy that was
    most of a loop's compile time."""
    if (hook, params) not in _IMPLS:
        impls = _IMPLS[hook, params] = {}

        def typer(state, *args):
            return impls.get(getattr(state, "instance_class", None))

        # the parameter names numba compares with the implementations' (inspect.signature reads __signature__)
        typer.__signature__ = inspect.Signature(
            [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in params])
        overload(engine.HOOK_STUBS[hook], inline="always" if hook in INLINED_HOOKS else "never",
                 jit_options={"nogil": True})(typer)
    return _IMPLS[hook, params]


def bind_hooks(cls: Type[Policy]) -> None:
    """Make the engine's hook stubs dispatch to ``cls``'s hooks for states of type ``cls.State`` (once).

    A subclass that inherits its parent's State gets a State subclass of its
    own, so that each policy's hooks are chosen by its state's type.
    """
    if _BOUND.get(cls.State) is cls:
        return
    if "State" not in vars(cls) or cls.State in _BOUND:
        # found again by pickle as ``<module>.<Policy>.State``: numba's disk cache keys compiled loops on the
        # state's type, and a class it cannot find again would be recompiled in every process
        cls.State = type(f"{cls.__name__}State", (cls.State,), {"__module__": cls.__module__,
                                                                 "__qualname__": f"{cls.__qualname__}.State"})
    if cls.init_state is Policy.init_state:
        raise TypeError(f"policy {cls.__name__} must define init_state(self, workload, capacity_bytes)")
    for hook in HOOKS:
        impl = inspect.getattr_static(cls, hook, None)
        if impl is None:
            raise TypeError(f"policy {cls.__name__} must define the hook {hook}(...)")
        impl = impl.__func__ if isinstance(impl, staticmethod) else impl
        stub = engine.HOOK_STUBS[hook]
        wanted = tuple(inspect.signature(stub).parameters)
        if len(inspect.signature(impl).parameters) != len(wanted):
            raise TypeError(f"{cls.__name__}.{hook} must take {len(wanted)} arguments {wanted}")
        _implementations(hook, tuple(inspect.signature(impl).parameters))[cls.State] = impl
    _BOUND[cls.State] = cls


def register(cls: Optional[Type[Policy]] = None, *, replace: bool = False):
    """Class decorator: add a policy to the registry under its name and aliases (case-insensitive).

    A name or alias another policy holds is refused (ValueError) unless ``@register(replace=True)``, which
    replaces that policy; registering the same class again (a re-run notebook cell) is allowed.
    """
    if cls is None:
        return lambda c: register(c, replace=replace)
    if not (isinstance(cls, type) and issubclass(cls, Policy)) or not cls.name:
        raise TypeError(f"@register takes a Policy subclass with a name, got {cls!r}")
    bind_hooks(cls)
    POLICIES.add(cls.name, cls, cls.aliases, replace=replace)
    return cls


def policy_names(featured: bool = False) -> list[str]:
    """Names of the registered policies (aliases not repeated), in registration order; with ``featured``, only
    the classics an explorer selects by default."""
    check_bool("featured", featured)
    return [name for name in POLICIES.names() if not featured or POLICIES[name].featured]


def get_policy(policy, **params) -> Policy:
    """A Policy instance from a registered name or alias (case-insensitive) with ``params``, a Policy class,
    or a Policy instance (then no ``params``).

    Raises ValueError listing the known names for an unknown name, TypeError
    for anything that is not a name or a policy, and ValueError (naming the
    parameter) for a bad parameter.
    """
    if isinstance(policy, Policy):
        if params:
            raise TypeError(f"parameters {sorted(params)} go with a policy name, not with the instance {policy}")
        return policy
    if isinstance(policy, type) and issubclass(policy, Policy):
        cls = policy
    elif isinstance(policy, str):
        cls = POLICIES.get(policy)
    else:
        raise TypeError(f"policy must be a policy name (one of {policy_names()}) or a Policy, "
                        f"got {type(policy).__name__} {policy!r}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"policy {cls.name} has no parameter(s) {unknown}; its parameters: {known}")
    return cls(**params)


def policy_table():
    """Every registered policy, one row each (a DataFrame indexed by name): aliases, parameters with their
    defaults, the libCacheSim counterpart, whether it is randomized or offline (reads the future), what it
    evicts (the first sentence of its docstring) and the paper or source it follows."""
    import pandas as pd

    rows = []
    for name, cls in POLICIES.items():
        policy = cls()
        doc = " ".join((cls.__doc__ or "").split())
        rows.append({
            "policy": name,
            "aliases": ", ".join(cls.aliases),
            "parameters": ", ".join(f"{k}={v!r}" for k, v in policy.get_params().items()),
            "libcachesim": cls.libcachesim or "",
            "randomized": cls.randomized,
            "offline": cls.offline,
            "evicts": doc.split(". ")[0].rstrip(".") + "." if doc else "",
            "reference": cls.reference,
        })
    return pd.DataFrame(rows).set_index("policy")
