"""docs/configuration.md describes every config key, once, and no key that does not exist."""

from __future__ import annotations

import re

from exportkit.config import config_dir, to_plain
from tests.helpers import REPO, compose_config


def _leaf_keys(config: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        if isinstance(value, dict) and value:
            keys |= _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def _documented_keys(text: str) -> list[str]:
    """The keys in the first column of the tables: `a.b`, `a.{b, c}`, `a.b`, `a.c` forms."""
    keys = []
    for row in re.findall(r"^\| ([^|]+) \|", text, flags=re.MULTILINE):
        if row.startswith("**group") or row in ("key", "---"):
            continue
        for name in re.findall(r"`([^`]+)`", row):
            match = re.fullmatch(r"([a-z_.]+)\{([a-z_, ]+)\}", name)
            keys += [match.group(1) + part.strip() for part in match.group(2).split(",")] if match else [name]
    return keys


def test_the_configuration_page_names_every_key_of_every_model_once():
    composed = set()
    for option in sorted(p.stem for p in (config_dir() / "model").glob("*.yaml")):
        composed |= _leaf_keys(to_plain(compose_config(f"model={option}")))
    documented = _documented_keys((REPO / "docs" / "configuration.md").read_text())
    assert sorted(k for k in set(documented) if documented.count(k) > 1) == [], "described twice"
    assert sorted(composed - set(documented)) == [], "keys the page does not describe"
    assert sorted(set(documented) - composed) == [], "the page describes keys that do not exist"
