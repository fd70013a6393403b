"""Name -> implementation tables, one per ablation axis.

Each axis of the design space is one config field resolved through one registry, so an
ablation is a config change and validation can list the allowed names before any compute.
"""
from typing import Callable, TypeVar

T = TypeVar("T")


class Registry:
    """A named table of implementations for one config field (e.g. `diffusion.path`)."""

    def __init__(self, field: str):
        self.field = field
        self._entries: dict[str, object] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.field}: '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str):
        if name not in self._entries:
            raise ValueError(f"config.{self.field}='{name}' is not one of: {', '.join(self.names())}")
        return self._entries[name]
