"""One registry class for everything looked up by name: policies, scorers, hardware presets, model
presets, model types and trace formats. Names and aliases are case-insensitive."""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Case-insensitive name -> entry lookup with aliases.

    ``kind`` names what is registered ("policy", "scorer", ...) in error
    messages. ``add`` refuses a name or alias that another entry already owns.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}  # canonical name -> entry
        self._keys: dict[str, str] = {}  # lower-cased name or alias -> canonical name
        self._aliases: dict[str, tuple[str, ...]] = {}

    def add(self, name: str, entry: T, aliases=(), replace: bool = False) -> T:
        """Register ``entry`` under ``name`` and ``aliases``; returns ``entry``.

        ValueError when a name or alias is taken by another entry, unless
        ``replace`` (then the older entry is dropped first).
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.kind} name must be a non-empty str, got {name!r}")
        if replace and name.lower() in self._keys:
            self.remove(self._keys[name.lower()])
        for label in (name, *aliases):
            owner = self._keys.get(label.lower())
            if owner is not None and owner != name:
                raise ValueError(f"{self.kind} name {label!r} is already taken by {owner!r}")
        self.remove(name)
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
