"""Plugins found by name: a package's built-ins first, then an entry-point group, so a
third-party package adds a policy or a routing strategy by declaring it, never by editing
Tollgate."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any


def available(builtins: Mapping[str, str], group: str) -> dict[str, str]:
    """Every name the group accepts, mapped to where it comes from (`module:attribute`)."""
    names = dict(builtins)
    for ep in entry_points(group=group):
        names.setdefault(ep.name, ep.value)
    return names


def load(builtins: Mapping[str, str], group: str, name: str, kind: str) -> Any:
    """The object registered under `name`; LookupError naming the known ones if there is none,
    ImportError if it cannot be imported (both worded for a config error)."""
    names = available(builtins, group)
    target = names.get(name)
    if target is None:
        raise LookupError(f"unknown {kind} {name!r} (available: {', '.join(sorted(names))})")
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"cannot import {kind} {name!r} from {target}: {exc}") from exc
