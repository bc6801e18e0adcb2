"""Named registries of the parts an export is assembled from.

A leaf module: it imports nothing else of the project, so plugins can import it
without cycles. A name is registered once; a second registration raises instead
of silently replacing the first (two plugins claiming one name is a bug).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator


class RegistryError(LookupError):
    """A lookup or registration that the registry cannot satisfy."""


class Registry:
    """Maps names to objects (functions, plugin descriptions) of one kind."""

    def __init__(self, kind: str, *, hint: str = "") -> None:
        self.kind = kind
        self._hint = hint
        self._entries: dict[str, Any] = {}

    def register(self, name: str | None = None, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""
        if obj is not None:
            self._add(name or obj.__name__, obj)
            return obj

        def decorator(fn: Callable) -> Callable:
            self._add(name or fn.__name__, fn)
            return fn

        return decorator

    def _add(self, name: str, obj: Any) -> None:
        if name in self._entries:
            raise RegistryError(
                f"{self.kind} {name!r} is already registered (by "
                f"{_origin(self._entries[name])}); refusing to replace it with "
                f"{_origin(obj)}"
            )
        self._entries[name] = obj

    def get(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "nothing"
            hint = f" {self._hint}" if self._hint else ""
            raise RegistryError(
                f"no {self.kind} named {name!r}; registered: {known}.{hint}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _origin(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}"


MODELS = Registry(
    "model plugin",
    hint="Is the plugin package installed and imported (run_export.py imports "
    "the built-in ones; others register through the 'exportkit.models' entry point)?",
)
PREPROCESSORS = Registry("preprocessing pipeline")
HEADS = Registry("head")
