"""One registry mechanism for every named thing in nfzoo: architectures, flow layers, presets,
kinds of pretrained entry, pretrained entries, flow-VAE posteriors, export endpoints, targets,
toy datasets and NPE tasks. Lookup by name or alias, listing, and errors that suggest close
names.

Not every table is a registry: the export kernels are found by a layer's type, walking its
MRO so that a subclass inherits its parent's kernel (``nfzoo.exporting.graphs``), which a
name lookup cannot do; config.json's model keys (``config_checks.MODEL_KEYS``) are a fixed
file-format vocabulary, not entries anyone registers."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> entry mapping with helpful errors. An entry may also answer to aliases
    (former names, kept so that old code keeps working); ``names()`` lists canonical names
    only.

    Args:
      kind: what the entries are, for messages ("architecture", "pretrained entry").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self:
            raise ValueError(f"The {self.kind} {name!r} is already registered.")
        self._entries[name] = entry
        return entry

    def alias(self, alias: str, name: str) -> None:
        """Makes ``alias`` another name of the registered entry ``name``."""
        if name not in self._entries:
            raise ValueError(f"Cannot alias {alias!r} to {name!r}: no {self.kind} {name!r}.")
        if alias in self:
            raise ValueError(f"The {self.kind} {alias!r} is already registered.")
        self._aliases[alias] = name

    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` (itself, or the entry an alias points to)."""
        if not isinstance(name, str):
            raise ValueError(f"A {self.kind} name must be a string; received {name!r}.")
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = [*self._entries, *self._aliases]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}.")

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in registration order (where order means something: export
        endpoints are listed in a manifest in the order they were declared)."""
        return list(self._entries.items())

    def values(self) -> list[T]:
        """The entries in registration order."""
        return list(self._entries.values())

    def aliases_of(self, name: str) -> list[str]:
        """The aliases of the entry ``name``, sorted."""
        name = self.canonical(name)
        return sorted(a for a, target in self._aliases.items() if target == name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
