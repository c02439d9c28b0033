"""Budgets, shared by `tollgate budgets` and /admin/budgets: set at run time (the same fields
and checks as a YAML one), listed with the YAML's, deleted, and reported against their
counters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.accounting.ledger import Ledger
from gateway.accounting.limits import budget_counter, subject_label
from gateway.accounting.pricing import usd
from gateway.accounting.windows import Window
from gateway.admin.spend import window_public
from gateway.budget_rules import BUDGET_WINDOWS, BudgetRule
from gateway.config.accounting_schema import BudgetConfig
from gateway.config.schema import Config
from gateway.stores.budgets import delete_budget, list_budgets, set_budget


class BudgetSet(BudgetConfig):
    """A run-time budget: the same fields and checks as a YAML one."""

    def stored(self) -> BudgetRule:
        return self.rule("sql")


def budget_rules(config: Config, sql: Sequence[BudgetRule]) -> list[BudgetRule]:
    """Every budget in force: the YAML's, then the run-time ones (a YAML name wins)."""
    declared = config.limits.budget_rules()
    names = {b.name for b in declared}
    return [*declared, *(b for b in sql if b.name not in names)]


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """One subject's use of a budget in its current window; money in nano-USD until shown."""

    subject: str
    refused: int
    window: Window
    used_usd_nanos: int | None  # None: the budget has no USD limit
    used_tokens: int | None  # None: no token limit
    usd_limit_nanos: int | None
    token_limit: int | None

    def public(self) -> dict[str, Any]:
        limit_usd, limit_tokens = self.usd_limit_nanos, self.token_limit
        used_usd, used_tokens = self.used_usd_nanos, self.used_tokens
        return {
            "subject": self.subject,
            "refused": self.refused,
            "window": window_public(self.window),
            "usd": str(usd(used_usd)) if used_usd is not None else None,
            "tokens": used_tokens,
            "usd_remaining": str(usd(max(limit_usd - used_usd, 0)))
            if limit_usd is not None and used_usd is not None
            else None,
            "tokens_remaining": max(limit_tokens - used_tokens, 0)
            if limit_tokens is not None and used_tokens is not None
            else None,
        }


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """A budget's definition and, when a subject was named, its usage (else why not)."""

    rule: BudgetRule
    usage: BudgetUsage | None
    note: str | None = None

    def public(self) -> dict[str, Any]:
        out = {**self.rule.public(), "usage": self.usage.public() if self.usage else None}
        if self.note is not None:
            out["note"] = self.note
        return out


async def budget_report(
    ledger: Ledger,
    rule: BudgetRule,
    value: str | None,
    key_id: Callable[[str], str | None] | None = None,
) -> BudgetReport:
    """A budget's definition and, for one subject, what its current window has used
    (`key_id`: a key's id by name, for key budgets: their counters are kept by key id)."""
    if rule.scope == "global":
        value = "all"
    elif rule.subject != "*":
        value = rule.subject
    if value is None:
        why = "this budget applies to each subject separately: pass one to see usage"
        return BudgetReport(rule, None, why)
    ident = None
    if rule.scope == "key":
        ident = key_id(value) if key_id is not None else None
        if ident is None:
            why = f"no key named {value!r} is known here (a static key needs its secret)"
            return BudgetReport(rule, None, why)
    window, stem = budget_counter(
        rule, subject_label(rule.scope, value, ident), ledger.clock(), ledger.zone
    )
    seed = ("all", "all") if rule.scope == "global" else (rule.scope, value)
    ttl = int(window.end - ledger.clock()) + 3600 if window.end is not None else 0
    for unit in ("usd", "tokens"):  # a budget new in its window shows what was spent already
        await ledger.seed_counter(f"{stem}:{unit}", window, unit, seed, ttl)
    used_usd, used_tokens = await ledger.values([f"{stem}:usd", f"{stem}:tokens"])
    label = subject_label(rule.scope, value, ident)
    refused = (await ledger.refusals(window.tag)).get(f"{rule.name}|{label}", 0)
    usage = BudgetUsage(
        value, refused, window,
        used_usd if rule.usd_nanos is not None else None,
        used_tokens if rule.tokens is not None else None,
        rule.usd_nanos, rule.tokens,
    )  # fmt: skip
    return BudgetReport(rule, usage)


__all__ = [
    "BUDGET_WINDOWS", "BudgetReport", "BudgetRule", "BudgetSet", "BudgetUsage",
    "budget_report", "budget_rules", "delete_budget", "list_budgets", "set_budget",
]  # fmt: skip
