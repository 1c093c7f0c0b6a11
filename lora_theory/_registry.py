"""A lazily populated name -> entry registry: the one mechanism behind claims and figures.

Entries are registered by decorators at import time of their modules; the registry imports its
modules the first time it is read, so ``import lora_theory`` stays cheap and a registry can name
modules that do not exist yet (a paper not implemented) without failing.

Example:
    >>> reg = LazyRegistry("thing", modules=())
    >>> reg.add("a", 1)
    >>> reg.get("a"), reg.names()
    (1, ['a'])
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Generic, TypeVar

from ._validate import InvalidArgumentError

__all__ = ["LazyRegistry"]

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    """{name: entry}, filled by importing ``modules`` on first read.

    Args:
        what: the kind of entry, for error messages ("claim", "figure").
        modules: dotted module names that register entries when imported; one that does not
            exist is skipped, an import error inside an existing one propagates.
    """

    def __init__(self, what: str, modules: Iterable[str]) -> None:
        self.what = what
        self.modules = tuple(modules)
        self._entries: dict[str, T] = {}
        self._loaded = False

    def add(self, name: str, entry: T, *, same=None) -> None:
        """Register ``entry`` as ``name``; registering a different entry under a taken name is an error.

        ``same(old, new) -> bool`` decides whether a re-registration (a module imported twice) is
        the same entry; default: identity.
        """
        old = self._entries.get(name)
        if old is not None and not (same(old, entry) if same else old is entry):
            raise InvalidArgumentError(f"name: {self.what} {name!r} is registered twice")
        self._entries[name] = entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests register throw-away entries); unknown names are ignored."""
        self._entries.pop(name, None)

    def _load(self) -> None:
        if self._loaded:
            return
        for mod in self.modules:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:  # a real import error inside an existing module
                    raise
        self._loaded = True

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load()
        return sorted(self._entries)

    def all(self) -> list[T]:
        """Every entry, sorted by name."""
        return [self._entries[k] for k in self.names()]

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an InvalidArgumentError lists the known names otherwise, and the nearest ones."""
        self._load()
        if name not in self._entries:
            near = difflib.get_close_matches(str(name), sorted(self._entries), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
            raise InvalidArgumentError(f"{self.what}: expected one of {', '.join(sorted(self._entries))}, got {name!r}{hint}")
        return self._entries[name]
