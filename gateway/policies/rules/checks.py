"""The rules' load-time checks: every tier, alias, budget and comparator a rule names must
exist in the config; each problem is reported at its file:line by the loader."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.policies.base import PolicyView
from gateway.policies.rules.compare import resolve as resolve_comparator
from gateway.policies.rules.schema import Rule, RulesOptions

Problem = tuple[tuple[Any, ...], str]


def reference_problems(options: RulesOptions, view: PolicyView) -> list[Problem]:
    problems: list[tuple[tuple[Any, ...], str]] = []
    for i, rule in enumerate(options.rules):
        at: tuple[Any, ...] = ("rules", i)
        route = rule.actions.route
        if route is not None:
            problems += _route_problems(route.alias, route.tier, rule, view, at)
        models = rule.match.model
        for alias in (models,) if isinstance(models, str) else models or ():
            if alias not in view.tiers:
                problems.append(((*at, "match", "model"), f"unknown model alias {alias!r}"))
        problems += _guard_problems(rule, view, at)
        budget = rule.match.budget
        if budget is not None and budget.name not in view.budgets:
            known = ", ".join(sorted(view.budgets)) or "none defined in YAML"
            why = f"unknown budget {budget.name!r} (budgets: {known})"
            problems.append(((*at, "match", "budget", "name"), why))
    return problems


def _route_problems(
    alias: str | None, tier: str | None, rule: Rule, view: PolicyView, at: tuple[Any, ...]
) -> Iterable[Problem]:
    loc = (*at, "actions", "route")
    if alias is not None and alias not in view.tiers:
        known = ", ".join(sorted(view.tiers))
        yield (*loc, "alias"), f"unknown model alias {alias!r} (models: {known})"
        return
    if tier is None:
        return
    aliases = [alias] if alias is not None else _aliases_of(rule, view)
    having = [name for name in aliases if tier in view.tiers[name]]
    if not having:
        tiers = ", ".join(sorted({t for name in aliases for t in view.tiers[name]}))
        if len(aliases) == 1:
            why = f"model {aliases[0]!r} has no tier {tier!r} (tiers: {tiers})"
        else:
            why = f"none of its models has a tier {tier!r} (tiers: {tiers})"
        yield (*loc, "tier"), why


def _guard_problems(rule: Rule, view: PolicyView, at: tuple[Any, ...]) -> Iterable[Problem]:
    guard = rule.quality_guard
    if guard is None:
        return
    loc = (*at, "quality_guard")
    if guard.budget not in view.budgets:
        known = ", ".join(sorted(view.budgets)) or "none defined in YAML"
        yield (*loc, "budget"), f"unknown budget {guard.budget!r} (budgets: {known})"
    if guard.embedding_model is not None and guard.embedding_model not in view.tiers:
        yield (*loc, "embedding_model"), f"unknown model alias {guard.embedding_model!r}"
    if guard.compare == "embedding" and guard.embedding_model is None:
        yield (*loc, "compare"), "the embedding comparator needs an embedding_model"
    try:
        resolve_comparator(guard.compare)
    except (LookupError, ImportError) as exc:
        yield (*loc, "compare"), str(exc)
    route = rule.actions.route
    aliases = [route.alias] if route and route.alias else _aliases_of(rule, view)
    for alias in aliases:
        if alias not in view.tiers:
            continue
        reference = guard.reference or view.references.get(alias)
        if reference is None:
            yield (
                (*loc, "reference"),
                (
                    f"model {alias!r} has no reference tier (its reference is a backend): name "
                    "the tier to compare with"
                ),
            )
        elif reference not in view.tiers[alias]:
            yield (*loc, "reference"), f"model {alias!r} has no tier {reference!r}"


def _aliases_of(rule: Rule, view: PolicyView) -> list[str]:
    """The aliases a route without `alias` applies to: the rule's models, or every alias."""
    models = rule.match.model
    if models is None:
        return sorted(view.tiers)
    return [m for m in ((models,) if isinstance(models, str) else models) if m in view.tiers]
