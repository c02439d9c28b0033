"""Warnings on valid rules (`tollgate policy check`): a rule that can never match, a rule an
earlier one always stops before it is reached, an action an earlier rule always overrides."""

from __future__ import annotations

from typing import Any

from gateway.policies.rules.schema import Rule, RulesOptions


def lint(options: RulesOptions) -> list[str]:
    out: list[str] = []
    rules = options.rules
    for i, rule in enumerate(rules):
        out += [f"rule '{rule.name}': {why}" for why in _never(rule)]
        for earlier in rules[:i]:
            if earlier.mode != "enforce" or not _covers(earlier, rule):
                continue
            if earlier.actions.deny is not None or earlier.stop:
                what = "refuses" if earlier.actions.deny is not None else "stops"
                out.append(
                    f"rule '{rule.name}' is never reached: rule '{earlier.name}' matches every "
                    f"call it matches and {what}"
                )
                break
            for action in ("route", "max_tokens"):
                if getattr(earlier.actions, action) and getattr(rule.actions, action):
                    out.append(
                        f"rule '{rule.name}': its {action} is always overridden by rule "
                        f"'{earlier.name}' (which matches every call it matches)"
                    )
    return out


def _conditions(rule: Rule) -> dict[str, Any]:
    return rule.match.model_dump(exclude_none=True)


def _covers(earlier: Rule, later: Rule) -> bool:
    """Does `earlier` match every call `later` matches? (Each of its conditions also stands,
    identical, in `later`: a sufficient test, not a complete one.)"""
    mine, theirs = _conditions(earlier), _conditions(later)
    return all(theirs.get(name) == value for name, value in mine.items())


def _never(rule: Rule) -> list[str]:
    match = rule.match
    out = []
    if match.time is not None and not match.time.days:
        out.append("its time window lists no days: it can never match")
    endpoints = {match.endpoint} if isinstance(match.endpoint, str) else set(match.endpoint or ())
    if endpoints and endpoints <= {"embeddings", "count_tokens"}:
        if match.stream:
            out.append(f"{sorted(endpoints)} never stream: it can never match")
        if match.tools or match.json_mode:
            out.append(f"{sorted(endpoints)} carry no tools or response format: it can never "
                       "match")  # fmt: skip
    return out
