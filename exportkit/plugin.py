"""What a model plugin hands to exportkit, and how plugins are found."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable, Iterator

ENTRY_POINT_GROUP = "exportkit.models"



def _no_alternatives(params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    return iter(())


def _accept_all(params: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class ModelPlugin:
    """A network that exportkit can export.

    build(images, params) -> logits: ``images`` is a float32 NHWC batch from the
    preprocessing, ``params`` the resolved ``model`` config as plain values, with
    ``data_format`` already concrete. Variables must be created with the names
    and shapes the original training code used, so its checkpoints restore.

    alternatives(params) yields (override, params) for the other variants a
    checkpoint might belong to (e.g. other sizes); a checkpoint that does not
    fit the chosen variant is tried against these to name the right override.

    validate(params) checks the ``model`` params before TensorFlow is imported,
    for what the schema cannot express (a size of the form 6n+2); it raises
    ``exportkit.config.ConfigError`` naming the key.

    test_overrides are the Hydra overrides of the smallest variant: the test
    suite exports every registered model with them (docs/plugins.md).
    """

    name: str
    build: Callable[[Any, dict[str, Any]], Any]
    alternatives: Callable[[dict[str, Any]], Iterable[tuple[str, dict[str, Any]]]] = field(
        default=_no_alternatives
    )
    validate: Callable[[dict[str, Any]], None] = field(default=_accept_all)
    test_overrides: tuple[str, ...] = ()
    description: str = ""


def builtin_plugins() -> tuple[str, ...]:
    """The plugins that ship with exportkit: each package of ``exportkit.models`` (the
    repository's models/ folder), so a built-in plugin is a folder and its config files.
    Third-party ones come in through the ENTRY_POINT_GROUP entry points."""
    import exportkit.models as package

    return tuple(f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if m.ispkg)


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import the built-in plugins, the given plugin modules, then every
    ``exportkit.models`` entry point.

    Returns the module names imported. Registration happens on import, so a
    plugin that is never imported is simply absent: this is the one place
    that imports them.
    """
    loaded: list[str] = []
    for module in (*builtin_plugins(), *modules):
        if module not in loaded:
            importlib.import_module(module)
            loaded.append(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value not in loaded:
            ep.load()
            loaded.append(ep.value)
    return loaded
