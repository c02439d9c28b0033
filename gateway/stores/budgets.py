"""Budgets set at run time (`tollgate budgets set`, /admin/budgets), kept in SQL.

Budgets declared in YAML are the same `BudgetRule` (gateway/budget_rules.py); the two sets are
merged when loaded, a YAML budget winning over a SQL one of the same name (the file is what ops
review).
"""

from __future__ import annotations

import time

from sqlalchemy import Engine, RowMapping, delete, insert, select, update

from gateway.budget_rules import BudgetRule
from gateway.stores.keys import bump
from gateway.stores.sql import budgets


def set_budget(engine: Engine, rule: BudgetRule) -> None:
    values = {
        "scope": rule.scope,
        "subject": rule.subject,
        "usd_nanos": rule.usd_nanos,
        "tokens": rule.tokens,
        "window": rule.window,
        "enforcement": rule.enforcement,
        "updated_at": time.time(),
    }
    with engine.begin() as conn:
        exists = conn.execute(select(budgets.c.name).where(budgets.c.name == rule.name)).first()
        if exists:
            conn.execute(update(budgets).where(budgets.c.name == rule.name).values(**values))
        else:
            conn.execute(insert(budgets).values(name=rule.name, **values))
        bump(conn, "budgets")


def delete_budget(engine: Engine, name: str) -> bool:
    with engine.begin() as conn:
        gone = conn.execute(delete(budgets).where(budgets.c.name == name)).rowcount
        if gone:
            bump(conn, "budgets")
    return bool(gone)


def list_budgets(engine: Engine) -> list[BudgetRule]:
    with engine.connect() as conn:
        rows = conn.execute(select(budgets).order_by(budgets.c.name)).mappings().all()
    return [_rule(r) for r in rows]


def _rule(m: RowMapping) -> BudgetRule:
    return BudgetRule(
        name=m["name"],
        scope=m["scope"],
        subject=m["subject"],
        usd_nanos=m["usd_nanos"],
        tokens=m["tokens"],
        window=m["window"],
        enforcement=m["enforcement"],
    )
