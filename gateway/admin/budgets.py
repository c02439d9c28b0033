"""Budgets, shared by `tollgate budgets` and /admin/budgets: set at run time (the same fields
and checks as a YAML one), listed with the YAML's, deleted, and reported against their
counters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gateway.accounting.ledger import Ledger
from gateway.accounting.limits import budget_counter, subject_label
from gateway.accounting.pricing import usd
from gateway.config.accounting_schema import BudgetConfig
from gateway.config.schema import Config
from gateway.stores.budgets import (
    BUDGET_WINDOWS,
    BudgetRule,
    delete_budget,
    list_budgets,
    set_budget,
)


class BudgetSet(BudgetConfig):
    """A run-time budget: the same fields and checks as a YAML one."""

    def stored(self) -> BudgetRule:
        return self.rule("sql")


def budget_rules(config: Config, sql: Sequence[BudgetRule]) -> list[BudgetRule]:
    """Every budget in force: the YAML's, then the run-time ones (a YAML name wins)."""
    declared = config.limits.budget_rules()
    names = {b.name for b in declared}
    return [*declared, *(b for b in sql if b.name not in names)]


async def budget_report(
    ledger: Ledger,
    rule: BudgetRule,
    value: str | None,
    key_id: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """A budget's definition and, for one subject, what its current window has used
    (`key_id`: a key's id by name, for key budgets: their counters are kept by key id)."""
    report = rule.public()
    if rule.scope == "global":
        value = "all"
    elif rule.subject != "*":
        value = rule.subject
    if value is None:
        report["usage"] = None
        report["note"] = "this budget applies to each subject separately: pass one to see usage"
        return report
    ident = None
    if rule.scope == "key":
        ident = key_id(value) if key_id is not None else None
        if ident is None:
            report["usage"] = None
            report["note"] = f"no key named {value!r} is known here (a static key needs its secret)"
            return report
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
    report["usage"] = {
        "subject": value,
        "refused": refused,
        "window": {"kind": window.kind, "start": window.start, "end": window.end},
        "usd": str(usd(used_usd)) if rule.usd_nanos is not None else None,
        "tokens": used_tokens if rule.tokens is not None else None,
        "usd_remaining": str(usd(max(rule.usd_nanos - used_usd, 0)))
        if rule.usd_nanos is not None
        else None,
        "tokens_remaining": max(rule.tokens - used_tokens, 0) if rule.tokens is not None else None,
    }
    return report


__all__ = ["BUDGET_WINDOWS", "BudgetRule", "BudgetSet", "budget_report", "budget_rules",
           "delete_budget", "list_budgets", "set_budget"]  # fmt: skip
