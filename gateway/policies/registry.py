"""Plugins by name: the built-ins plus the `tollgate.policies` entry-point group.

A plugin is checked when it is loaded (hooks present, async, right arity), never on the first
request, so a bad plugin is a config error with a file and line.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from gateway import entrypoints
from gateway.errors import Fault

ENTRY_POINT_GROUP = "tollgate.policies"

BUILTINS: Mapping[str, str] = {
    "max_tokens": "gateway.policies.max_tokens:MaxTokensCap",
    "budgets": "gateway.policies.budgets:BudgetGuard",
    "audit_capture": "gateway.policies.audit_capture:AuditCapture",
    "rules": "gateway.policies.rules.engine:Rules",
}

_HOOKS = {"on_request": 1, "on_response": 2, "aclose": 0}


class PluginLoadError(Fault):
    pass


def available() -> dict[str, str]:
    """Every plugin name that `use:` accepts, mapped to where it comes from."""
    return entrypoints.available(BUILTINS, ENTRY_POINT_GROUP)


def resolve(name: str) -> type[Any]:
    """The plugin class registered under `name`, verified; PluginLoadError if unusable."""
    try:
        cls = entrypoints.load(BUILTINS, ENTRY_POINT_GROUP, name, "policy plugin")
    except (LookupError, ImportError) as exc:
        raise PluginLoadError(str(exc)) from exc
    verify(cls, name)
    return cls  # type: ignore[no-any-return]


def verify(cls: Any, name: str) -> None:
    options = getattr(cls, "Options", None)
    if not (inspect.isclass(options) and issubclass(options, BaseModel)):
        raise PluginLoadError(f"policy plugin {name!r}: Options must be a pydantic model class")
    for hook, arity in _HOOKS.items():
        fn = getattr(cls, hook, None)
        if fn is None or not inspect.iscoroutinefunction(fn):
            raise PluginLoadError(f"policy plugin {name!r}: {hook} must be an async method")
        params = list(inspect.signature(fn).parameters.values())[1:]
        if len(params) != arity:
            raise PluginLoadError(
                f"policy plugin {name!r}: {hook} takes {arity} argument(s), not {len(params)}"
            )
