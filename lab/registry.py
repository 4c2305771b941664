"""One registry class for everything looked up by name: policies, scorers, hardware presets, model
presets, model types and trace formats. Names and aliases are case-insensitive."""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Case-insensitive name -> entry lookup with aliases.

    ``kind`` names what is registered ("policy", "scorer", ...) in error
    messages. ``add`` refuses a name or alias that another entry already owns
    (in any case, as a name or an alias), unless asked to ``replace`` it.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}  # canonical name -> entry
        self._keys: dict[str, str] = {}  # lower-cased name or alias -> canonical name
        self._aliases: dict[str, tuple[str, ...]] = {}

    def add(self, name: str, entry: T, aliases=(), replace: bool = False) -> T:
        """Register ``entry`` under ``name`` and ``aliases``; returns ``entry``.

        ValueError when a name or alias (case-insensitive) is taken by an
        entry already registered, even under the same name: registering a
        second "LRU" would silently change what "LRU" means everywhere. Two
        exceptions, where nothing changes meaning: the entry itself again, or
        the same definition made again (a class or function of the same module
        and qualified name: a notebook cell or a module run a second time).
        ``replace=True`` drops the older entries that hold the names first.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty str, got {name!r}")
        if not isinstance(aliases, str):
            aliases = tuple(aliases)
        if isinstance(aliases, str) or not all(isinstance(a, str) and a for a in aliases):
            raise TypeError(f"{self.kind} aliases must be a tuple of non-empty str, got {aliases!r}")
        if not isinstance(replace, bool):
            raise TypeError(f"replace must be True or False, got {replace!r}")
        owners = {self._keys[label.lower()] for label in (name, *aliases) if label.lower() in self._keys}
        if not replace:
            for label in (name, *aliases):
                owner = self._keys.get(label.lower())
                if owner is not None and not (owner == name and _same_definition(self._entries[owner], entry)):
                    raise ValueError(f"{self.kind} name {label!r} is already taken by {owner!r}: pick another "
                                     f"name, or pass replace=True to replace {owner!r}")
        for owner in owners - {name}:  # name itself is replaced in place: the registration order stays
            self.remove(owner)
        if name in self._entries:
            for label in self._aliases.pop(name):
                self._keys.pop(label.lower(), None)
        self._entries[name] = entry
        self._aliases[name] = tuple(aliases)
        for label in (name, *aliases):
            self._keys[label.lower()] = name
        return entry

    def remove(self, name: str) -> None:
        """Forget ``name`` and its aliases (nothing happens if it is not registered)."""
        canonical = self._keys.get(name.lower()) if isinstance(name, str) else None
        if canonical is None:
            return
        del self._entries[canonical]
        for label in (canonical, *self._aliases.pop(canonical)):
            self._keys.pop(label.lower(), None)

    def canonical(self, name) -> str:
        """The registered spelling of ``name`` or one of its aliases; ValueError listing the known names."""
        if isinstance(name, str) and name.lower() in self._keys:
            return self._keys[name.lower()]
        aliases = sorted(a for names in self._aliases.values() for a in names)
        known = f"{self.names()}" + (f" (aliases: {aliases})" if aliases else "")
        raise ValueError(f"unknown {self.kind} {name!r}; known: {known}")

    def get(self, name) -> T:
        """The entry registered under ``name`` or an alias (case-insensitive); ValueError listing the known ones."""
        return self._entries[self.canonical(name)]

    def __getitem__(self, name) -> T:
        return self.get(name)

    def names(self) -> list[str]:
        """Canonical names, in registration order."""
        return list(self._entries)

    def aliases(self, name: str) -> tuple[str, ...]:
        """The aliases of ``name``."""
        return self._aliases[self.canonical(name)]

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name.lower() in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _same_definition(old, new) -> bool:
    """Whether ``new`` is ``old`` or the same definition made again: a class or function of the same module and
    qualified name (a re-run cell or reloaded module), or an equal value."""
    if old is new:
        return True
    if hasattr(old, "__qualname__") and hasattr(new, "__qualname__"):
        return (getattr(old, "__module__", None), old.__qualname__) == (getattr(new, "__module__", None),
                                                                         new.__qualname__)
    try:
        return bool(old == new)
    except Exception:  # noqa: BLE001 (an entry whose comparison fails is not the same)
        return False
