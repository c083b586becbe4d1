"""One registry pattern for everything built by name (backbones, heads, methods).

Hydra instantiates methods from YAML; inside a method the backbone is picked by
name through this registry so a new network needs one decorator and one YAML file.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of constructors with a helpful error on unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._table: Dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def wrap(fn: Callable[..., T]) -> Callable[..., T]:
            key = name or fn.__name__
            if key in self._table:
                raise KeyError(f"{self.kind} '{key}' is registered twice")
            self._table[key] = fn
            return fn

        return wrap

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._table:
            known = ", ".join(sorted(self._table)) or "(none)"
            raise KeyError(f"unknown {self.kind} '{name}'; known: {known}")
        return self._table[name]

    def build(self, name: str, **kwargs) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._table)

    def __contains__(self, name: str) -> bool:
        return name in self._table
