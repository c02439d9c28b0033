"""What a config may name, by name: policy plugins (`use:`), routing strategies (`strategy:`)
and quality-guard comparators (`compare:`). Each is a built-in or an entry point of its group,
found by name and checked when the config loads, never on the first request.

The built-ins are written as `module:attribute` strings and imported only when named, so the
config layer knows what exists without importing the layers that implement it (the import
contract keeps config below policies, routing and backends). Those layers wrap `strategy()`
and `comparator()` with their own types.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from gateway import entrypoints
from gateway.errors import Fault

POLICY_GROUP = "tollgate.policies"
STRATEGY_GROUP = "tollgate.routing"
COMPARATOR_GROUP = "tollgate.comparators"

POLICIES: Mapping[str, str] = {
    "max_tokens": "gateway.policies.max_tokens:MaxTokensCap",
    "budgets": "gateway.policies.budgets:BudgetGuard",
    "audit_capture": "gateway.policies.audit_capture:AuditCapture",
    "rules": "gateway.policies.rules.engine:Rules",
}
STRATEGIES: Mapping[str, str] = {
    "least_outstanding": "gateway.routing.strategies:LeastOutstanding",
    "round_robin": "gateway.routing.strategies:RoundRobin",
    "weighted": "gateway.routing.strategies:Weighted",
    "prefix_aware": "gateway.routing.prefix_aware:PrefixAware",
}
COMPARATORS: Mapping[str, str] = {
    "auto": "gateway.policies.rules.compare:Auto",
    "exact": "gateway.policies.rules.compare:Exact",
    "text": "gateway.policies.rules.compare:Text",
    "embedding": "gateway.policies.rules.compare:Embedding",
}

_HOOKS = {"on_request": 1, "on_response": 2, "aclose": 0}


class PluginLoadError(Fault):
    """A policy plugin that is unknown, cannot be imported or does not have the hooks."""


class StrategyLoadError(Fault):
    """A routing strategy that is unknown, cannot be imported or has no `order`."""


@dataclass(frozen=True, slots=True)
class PolicyView:
    """What a plugin's options may name, for checking them at load (a plugin's optional
    `references(options, view)` classmethod returns (path under `with:`, why) problems)."""

    tiers: Mapping[str, frozenset[str]]  # model alias -> its tiers
    budgets: frozenset[str]  # budgets declared in YAML
    # model alias -> its reference tier (None: an explicit backend and model)
    references: Mapping[str, str | None] = field(default_factory=dict)


def policies() -> dict[str, str]:
    """Every plugin name that `use:` accepts, mapped to where it comes from."""
    return entrypoints.available(POLICIES, POLICY_GROUP)


def policy(name: str) -> type[Any]:
    """The plugin class registered under `name`, verified; PluginLoadError if unusable."""
    try:
        cls = entrypoints.load(POLICIES, POLICY_GROUP, name, "policy plugin")
    except (LookupError, ImportError) as exc:
        raise PluginLoadError(str(exc)) from exc
    verify_policy(cls, name)
    return cls  # type: ignore[no-any-return]


def verify_policy(cls: Any, name: str) -> None:
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


def strategies() -> dict[str, str]:
    return entrypoints.available(STRATEGIES, STRATEGY_GROUP)


def strategy(name: str) -> type[Any]:
    """The strategy class registered under `name`; StrategyLoadError (a config error) if
    there is none or it does not have `order`."""
    try:
        cls = entrypoints.load(STRATEGIES, STRATEGY_GROUP, name, "routing strategy")
    except (LookupError, ImportError) as exc:
        raise StrategyLoadError(str(exc)) from exc
    if not callable(getattr(cls, "order", None)):
        raise StrategyLoadError(f"routing strategy {name!r} has no order() method")
    return cls  # type: ignore[no-any-return]


def comparator(name: str) -> Any:
    """An instance of the comparator registered under `name`; LookupError or ImportError
    (worded for a config error) if there is none or it has no `agree`."""
    cls = entrypoints.load(COMPARATORS, COMPARATOR_GROUP, name, "comparator")
    if not callable(getattr(cls, "agree", None)):
        raise ImportError(f"comparator {name!r} has no agree() method")
    return cls()
