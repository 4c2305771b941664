"""The package version, in a module of its own: every layer may read it without importing lab's facade."""

__version__ = "0.1.0"  # as pyproject.toml's
