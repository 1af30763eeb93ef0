"""Name registries (timm's ``register_model`` pattern).

A duplicate name raises; an unknown name raises listing what exists. A registry may
also know *lazy* names: entries defined in a module that is imported on first look-up
(an optional dependency, or a package that itself imports the registry's owner).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from cellblock.core.errors import ConfigError, RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to objects, filled with a decorator.

    Args:
        kind: What is registered ("block", "space", "strategy"...), used in messages.
        lazy: Name -> ``(module, pip requirement or None)``; the module registers the name
            when imported, which happens on the first look-up of the name.
        plugins: Modules of built-in entries, imported on the first look-up or listing
            (plugin discovery by name, so the registry's module never imports its plugins).
    """

    def __init__(self, kind: str, lazy: Mapping[str, tuple[str, str | None]] | None = None,
                 plugins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, tuple[str, str | None]] = dict(lazy or {})
        self._plugins = plugins
        self._discovered = not plugins
        self._version = 0

    def _discover(self) -> None:
        """Import the plugin modules once (they register their entries)."""
        if not self._discovered:
            self._discovered = True
            for module in self._plugins:
                importlib.import_module(module)

    def _load(self, name: str) -> None:
        """Import the module of a lazy ``name`` (once registered, the name is no longer lazy)."""
        if name not in self._lazy or name in self._items:
            return
        module, requirement = self._lazy[name]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if requirement is None:
                raise
            raise ConfigError(f"the {self.kind} {name!r} needs {exc.name!r}, which is not "
                              f"installed; pip install '{requirement}'") from None

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as ``@registry.register("name")``.

        Raises:
            RegistryError: if ``name`` is already registered or is not a non-empty string.
        """
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(item: T) -> T:
            if name in self._items:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered; choose another name"
                )
            self._items[name] = item
            self._version += 1
            return item

        if obj is not None:
            return add(obj)
        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and interactive sessions)."""
        self._items.pop(name, None)
        self._version += 1

    @property
    def version(self) -> int:
        """A counter bumped by every (un)registration: key caches of derived data on it."""
        return self._version

    def get(self, name: str) -> T:
        """Look ``name`` up.

        Raises:
            RegistryError: naming the unknown name and every registered one.
        """
        self._discover()
        self._load(name)
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """Registered names (lazy ones included, not imported), sorted."""
        self._discover()
        return sorted(set(self._items) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
