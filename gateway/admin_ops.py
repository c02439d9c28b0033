"""What admins do to keys, budgets and spend, shared by `tollgate keys|budgets|spend` and /admin.

Inputs are validated by pydantic models here, once, so the CLI and the HTTP API accept exactly
the same things and say the same things when they are wrong.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine

from gateway.accounting.ledger import Ledger
from gateway.accounting.limits import budget_counter, subject_label
from gateway.accounting.pricing import usd
from gateway.accounting.spend import SPEND_DIMENSIONS
from gateway.accounting.windows import WINDOW_KINDS, WindowKind, window_at
from gateway.config.accounting_schema import BudgetConfig
from gateway.config.runtime import yaml_budgets
from gateway.config.schema import Config
from gateway.stores.budgets import BUDGET_WINDOWS, BudgetRule
from gateway.stores.keys import KeyRow, create_key

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyCreate(_Input):
    name: str = Field(min_length=1, max_length=200)
    team: str | None = None
    user: str | None = None
    org: str | None = None
    tags: tuple[str, ...] = ()
    models: tuple[str, ...] | None = None
    expires: str | None = None  # ISO 8601 instant, or a duration from now: 30d, 12h, 90m

    def expires_at(self, now: float) -> float | None:
        return parse_expiry(self.expires, now) if self.expires is not None else None

    @field_validator("expires")
    @classmethod
    def _parsable(cls, value: str | None) -> str | None:
        if value is not None:
            parse_expiry(value, 0.0)
        return value


def parse_expiry(value: str, now: float) -> float:
    """An ISO 8601 instant (with its zone), or a duration from `now` such as 30d or 12h."""
    found = _DURATION.match(value)
    if found:
        return now + int(found.group(1)) * _SECONDS[found.group(2)]
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is neither an ISO 8601 time nor a duration like 30d") from exc
    if when.tzinfo is None:
        raise ValueError("give the time zone too (e.g. 2027-01-01T00:00:00Z)")
    return when.timestamp()


class BudgetSet(BudgetConfig):
    """A run-time budget: the same fields and checks as a YAML one."""

    def stored(self) -> BudgetRule:
        return self.rule("sql")


class SpendQuery(_Input):
    group_by: Literal["team", "key", "model"] = "team"
    window: WindowKind = "day"
    at: float | None = None

    @field_validator("window")
    @classmethod
    def _spend_window(cls, value: str) -> str:
        if value == "minute":
            raise ValueError(f"window must be one of {', '.join(WINDOW_KINDS[1:])}")
        return value


def new_key(engine: Engine, secret: bytes, spec: KeyCreate) -> tuple[KeyRow, str]:
    return create_key(
        engine,
        secret,
        name=spec.name,
        user=spec.user,
        team=spec.team,
        org=spec.org,
        tags=spec.tags,
        models=spec.models,
        expires_at=spec.expires_at(time.time()),
    )


async def spend_report(ledger: Ledger, query: SpendQuery) -> dict[str, Any]:
    assert query.group_by in SPEND_DIMENSIONS
    window = window_at(query.window, ledger.clock() if query.at is None else query.at, ledger.zone)
    rows = await ledger.spend(query.group_by, query.window, query.at)
    out = [
        {
            query.group_by: value,
            "usd": str(usd(figures["usd"])),
            "input_tokens": figures["in"],
            "output_tokens": figures["out"],
            "requests": figures["req"],
        }
        for value, figures in sorted(rows.items(), key=lambda kv: -kv[1]["usd"])
    ]
    total = {name: sum(f[name] for f in rows.values()) for name in ("usd", "in", "out", "req")}
    return {
        "group_by": query.group_by,
        "window": {"kind": window.kind, "start": window.start, "end": window.end},
        "timezone": ledger.zone.key,
        "rows": out,
        "total": {
            "usd": str(usd(total["usd"])),
            "input_tokens": total["in"],
            "output_tokens": total["out"],
            "requests": total["req"],
        },
    }


def budget_rules(config: Config, sql: Sequence[BudgetRule]) -> list[BudgetRule]:
    """Every budget in force: the YAML's, then the run-time ones (a YAML name wins)."""
    declared = yaml_budgets(config)
    names = {b.name for b in declared}
    return [*declared, *(b for b in sql if b.name not in names)]


async def budget_report(ledger: Ledger, rule: BudgetRule, value: str | None) -> dict[str, Any]:
    """A budget's definition and, for one subject, what its current window has used."""
    report = rule.public()
    if rule.scope == "global":
        value = "all"
    elif rule.subject != "*":
        value = rule.subject
    if value is None:
        report["usage"] = None
        report["note"] = "this budget applies to each subject separately: pass one to see usage"
        return report
    window, stem = budget_counter(
        rule, subject_label(rule.scope, value), ledger.clock(), ledger.zone
    )
    used_usd, used_tokens = await ledger.values([f"{stem}:usd", f"{stem}:tokens"])
    report["usage"] = {
        "subject": value,
        "window": {"kind": window.kind, "start": window.start, "end": window.end},
        "usd": str(usd(used_usd)) if rule.usd_nanos is not None else None,
        "tokens": used_tokens if rule.tokens is not None else None,
        "usd_remaining": str(usd(max(rule.usd_nanos - used_usd, 0)))
        if rule.usd_nanos is not None
        else None,
        "tokens_remaining": max(rule.tokens - used_tokens, 0) if rule.tokens is not None else None,
    }
    return report


__all__ = [
    "BUDGET_WINDOWS",
    "BudgetSet",
    "KeyCreate",
    "SpendQuery",
    "budget_report",
    "budget_rules",
    "new_key",
    "spend_report",
]
