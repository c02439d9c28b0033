"""What admins do to keys, budgets and spend, shared by `tollgate keys|budgets|spend` and /admin.

Inputs are validated by pydantic models here, once, so the CLI and the HTTP API accept exactly
the same things and say the same things when they are wrong.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine

from gateway.accounting.ledger import Ledger
from gateway.accounting.limits import budget_counter, subject_label
from gateway.accounting.pricing import usd
from gateway.accounting.spend import SPEND_DIMENSIONS
from gateway.accounting.windows import WINDOW_KINDS, WindowKind, window_at
from gateway.auth import key_digest
from gateway.config.accounting_schema import BudgetConfig
from gateway.config.schema import Config
from gateway.stores.budgets import BUDGET_WINDOWS, BudgetRule
from gateway.stores.keys import KeyError_, KeyRow, create_key, list_keys

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


def key_ids(config: Config, engine: Engine, env: Mapping[str, str]) -> Callable[[str], str | None]:
    """A key's id by its name: a virtual key's from SQL, a static key's from its hash (given,
    or of its secret when this process has it)."""
    virtual = {row.name: row.id for row in list_keys(engine)}
    static: dict[str, str] = {}
    for key in config.auth.keys:
        secret = env.get(key.key_env) if key.key_env else None
        sha = key.key_sha256 or (key_digest(secret) if secret else None)
        if sha is not None:
            static[key.name] = sha[:16]
    return lambda name: virtual.get(name) or static.get(name)


def new_key(
    engine: Engine, secret: bytes, spec: KeyCreate, config: Config | None = None
) -> tuple[KeyRow, str]:
    """A virtual key; its name may not be a static key's either (names are unique across
    both, so per-key spend rows and reports never mix two keys)."""
    if config is not None and any(k.name == spec.name for k in config.auth.keys):
        raise KeyError_(f"a static key named {spec.name!r} is configured; choose another name")
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
