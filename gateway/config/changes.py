"""What a reload changes, in words ops read in the log, and which changes are too drastic to
apply from a file watcher alone (a half-written save that still parses)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config.loader import LoadedConfig


def _names(before: Iterable[str], after: Iterable[str]) -> str | None:
    old, new = sorted(set(before)), sorted(set(after))
    if old == new:
        return None
    added = [n for n in new if n not in old]
    removed = [n for n in old if n not in new]
    parts = [f"{len(old)} -> {len(new)}"]
    if added:
        parts.append("added " + ", ".join(added))
    if removed:
        parts.append("removed " + ", ".join(removed))
    return "; ".join(parts)


def describe(old: LoadedConfig, new: LoadedConfig) -> list[str]:
    """One line per section that changed: models, backends, policies, budgets, rate limits."""
    a, b = old.config, new.config
    lines = []
    for label, before, after in (
        ("models", a.models, b.models),
        ("backends", a.backends, b.backends),
        ("budgets", [x.name for x in a.limits.budgets], [x.name for x in b.limits.budgets]),
        (
            "rate limits",
            [x.name for x in a.limits.rate_limits],
            [x.name for x in b.limits.rate_limits],
        ),
        ("policy files", old.files[1:], new.files[1:]),
    ):
        names = _names(before, after)
        if names is not None:
            lines.append(f"{label}: {names}")
    changed = [n for n in set(a.models) & set(b.models) if a.models[n] != b.models[n]] + [
        n for n in set(a.backends) & set(b.backends) if a.backends[n] != b.backends[n]
    ]
    if changed:
        lines.append("changed: " + ", ".join(sorted(changed)))
    policies = ([p.label for p in old.policies], [p.label for p in new.policies])
    if policies[0] != policies[1]:
        lines.append(f"policies: [{', '.join(policies[0])}] -> [{', '.join(policies[1])}]")
    elif old.policies != new.policies:
        lines.append("policies: options changed")
    if a.pricing != b.pricing:
        lines.append(f"pricing: {len(a.pricing)} -> {len(b.pricing)} rules")
    return lines or ["no change in models, backends, policies, budgets or rate limits"]


def drastic(old: LoadedConfig, new: LoadedConfig) -> list[str]:
    """What the new config would remove entirely that the running one has: every model,
    every limit, every policy. Applied only when asked for deliberately (SIGHUP)."""
    a, b = old.config, new.config
    out = []
    if a.models and not b.models:
        out.append("every model")
    if (a.limits.budgets or a.limits.rate_limits) and not (
        b.limits.budgets or b.limits.rate_limits
    ):
        out.append("every budget and rate limit")
    if old.policies and not new.policies:
        out.append("every policy")
    return out
