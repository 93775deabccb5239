"""A tiny named registry: every building block (model, optimizer, ...) is looked up by name here,
so an unknown name always produces the same message listing the valid ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """Raised for a name that is not registered; the message lists the choices."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    doc: str


@dataclass
class Registry(Generic[T]):
    """Maps names to values (builders or specs) with a one-line description each."""

    kind: str
    _entries: dict[str, Entry[T]] = field(default_factory=dict)

    def add(self, name: str, value: T, doc: str) -> None:
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = Entry(name, value, doc)

    def register(self, name: str, doc: str) -> Callable[[T], T]:
        def deco(value: T) -> T:
            self.add(name, value, doc)
            return value

        return deco

    @property
    def plural(self) -> str:
        return self.kind + ("es" if self.kind.endswith("s") else "s")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def get(self, name: str) -> T:
        try:
            return self._entries[name].value
        except KeyError:
            raise UnknownName(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        return f"unknown {self.kind} {name!r} (choose from: {', '.join(self.names())})"
