"""What the dashboard and /admin/spend/rollups show, read from the spend rollups (and, for
budget burn-down, the budget counters the budgets are enforced on). No HTTP here."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from gateway.accounting.ledger import Ledger, StoreDown
from gateway.admin.budgets import BudgetRule, budget_report, budget_rules, list_budgets
from gateway.admin.keys import key_ids
from gateway.admin.policy import rules_status
from gateway.errors import InvalidRequest, ServiceUnavailable
from gateway.services import Services
from gateway.stores.counters import StoreUnavailable
from gateway.telemetry import queries
from gateway.telemetry.queries import Group, Range, ShadowSaving
from gateway.telemetry.tables import GRANULARITIES

RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
_NANO = 1e-9


class SummaryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    range: Literal["1h", "6h", "24h", "7d", "30d"] = "24h"
    stack: Literal["team", "model", "tier"] = "team"


class RollupQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    range: Literal["1h", "6h", "24h", "7d", "30d"] | None = None
    start: int | None = Field(None, alias="from", ge=0)
    end: int | None = Field(None, alias="to", ge=0)
    granularity: Literal["minute", "hour", "day"] | None = None
    group_by: Literal["team", "key", "key_id", "model", "tier", "cache"] = "team"
    limit: int = Field(50, ge=1, le=1000)


async def fresh(services: Services) -> None:
    """This process's pending deltas in first, so the page shows its calls to the last one."""
    telemetry = services.telemetry
    if telemetry is None:
        raise ServiceUnavailable(
            "Telemetry is disabled (telemetry.enabled: false): there are no rollups to show.",
            code="telemetry_disabled",
        )
    if not telemetry.config.rollups.enabled:
        raise ServiceUnavailable(
            "Spend rollups are disabled (telemetry.rollups.enabled: false): nothing to show.",
            code="rollups_disabled",
        )
    try:
        await telemetry.flush()
    except Exception as exc:
        raise ServiceUnavailable(f"The rollups database is unreachable: {exc}") from exc


async def summary_data(services: Services, query: SummaryQuery) -> dict[str, Any]:
    engine = services.accounts.engine
    now = time.time()
    r = Range.last(RANGES[query.range], now)
    series, sums, keys, lat, ttft, shadow = await asyncio.gather(
        asyncio.to_thread(queries.series, engine, r, query.stack),
        asyncio.to_thread(queries.totals, engine, r),
        asyncio.to_thread(queries.grouped, engine, r, "key_id", 10),
        asyncio.to_thread(queries.percentiles, engine, r, "latency"),
        asyncio.to_thread(queries.percentiles, engine, r, "ttft"),
        asyncio.to_thread(queries.shadow_savings, engine, r),
    )
    requests = sums["requests"]
    hits = sums["cache_hits"]
    return {
        "range": {"name": query.range, "from": r.start, "to": r.end, "granularity": r.granularity},
        "stack": query.stack,
        "generated_at": now,
        "refresh_seconds": services.runtime.current.config.telemetry.dashboard.refresh_seconds,
        "series": {
            "buckets": series.buckets,
            "stacks": [
                {"name": st.name, "usd": [n * _NANO for n in st.nanos]} for st in series.stacks
            ],
            "requests": series.requests,
            "errors": series.errors,
        },
        "totals": {
            "usd": sums["cost_nanousd"] * _NANO,
            "counterfactual_usd": sums["counterfactual_nanousd"] * _NANO,
            "saved_usd": (sums["counterfactual_nanousd"] - sums["cost_nanousd"]) * _NANO,
            "requests": requests,
            "errors": sums["errors"],
            "denied": sums["denied"],
            "cache_hits": hits,
            "cache_hit_rate": hits / requests if requests else None,
            "input_tokens": sums["input_tokens"],
            "output_tokens": sums["output_tokens"],
            "cached_tokens": sums["cached_tokens"],
            "prompt_cache_rate": sums["cached_tokens"] / sums["input_tokens"]
            if sums["input_tokens"]
            else None,
        },
        "savings": [
            {"kind": kind, "usd": nanos * _NANO} for kind, nanos in queries.savings_of(sums)
        ],
        "top_keys": [
            {
                "key_id": row.value or "(none)",
                "name": row.key_name or row.value or "(none)",
                "team": row.team or None,
                "usd": row.sums["cost_nanousd"] * _NANO,
                "requests": row.sums["requests"],
                "tokens": row.sums["input_tokens"] + row.sums["output_tokens"],
            }
            for row in keys
        ],
        "latency_ms": lat,
        "ttft_ms": ttft,
        "budgets": await _budgets(services, now),
        "rules": _rules(services, shadow),
    }


def _rules(services: Services, shadow: list[ShadowSaving]) -> list[dict[str, Any]]:
    """The running rules with their guard's state, and what each shadow rule would have saved
    over the range (rules since removed from the config included, from the rollups)."""
    saved = {row.rule: {"rule": row.rule, "calls": row.calls, "would_save_usd": row.nanos * _NANO}
             for row in shadow}  # fmt: skip
    out = []
    for rule in rules_status(services.runtime.current):
        row = saved.pop(rule.rule, None)
        out.append({**rule.public(), "shadow": row})
    out += [{"rule": name, "mode": "removed", "guard": None, "shadow": row}
            for name, row in saved.items()]  # fmt: skip
    return out


async def _budgets(services: Services, now: float) -> list[dict[str, Any]]:
    """Each USD budget with a subject the rollups can follow: its window's burn so far, the
    live figure the budget is enforced on, and when it runs out at the current rate."""
    sql = await asyncio.to_thread(list_budgets, services.accounts.engine)
    rules = budget_rules(services.runtime.current.config, sql)
    out = []
    for rule in rules:
        if rule.usd_nanos is None or rule.subject == "*":
            continue
        if rule.scope not in ("global", "team", "key"):
            continue
        out.append(await _burn(services, rule, now))
    return out


async def _burn(services: Services, rule: BudgetRule, now: float) -> dict[str, Any]:
    engine = services.accounts.engine
    ids = await asyncio.to_thread(key_ids, services.runtime.current.config, engine, os.environ)
    return await budget_burn(engine, services.ledger, rule, now, ids)


async def budget_burn(
    engine: Engine,
    ledger: Ledger,
    rule: BudgetRule,
    now: float,
    key_id: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """One budget's current window: cumulative spend per bucket from the window's first bucket
    to now (hourly; by the minute for windows of a few hours), the live figure it is enforced
    on, and when it runs out at the current rate. A window that does not start on an hour (a
    zone with a half-hour offset) includes the part of its first hour before it."""
    try:
        usage = (await budget_report(ledger, rule, None, key_id)).usage
    except (StoreUnavailable, StoreDown):
        usage = None
    window = usage.window if usage is not None else None
    start = window.start if window and window.start else int(now) - 86400  # total: a day
    end = window.end if window and window.end else int(now)
    granularity = "minute" if end - start <= 6 * 3600 else "hour"
    r = Range.since(start, now, granularity)
    filters: dict[str, str] = {}
    if rule.scope in ("team", "key"):
        filters = {"team" if rule.scope == "team" else "key_id": rule.subject or ""}
    burn = await asyncio.to_thread(queries.cumulative, engine, r, **filters)
    assert rule.usd_nanos is not None
    limit = rule.usd_nanos * _NANO
    live = usage.used_usd_nanos if usage is not None else None
    spent = live * _NANO if live is not None else burn[-1][1] * _NANO
    exhaustion = projected_exhaustion(spent, limit, start, end, now)
    return {
        "name": rule.name,
        "scope": rule.scope,
        "subject": rule.subject,
        "limit_usd": limit,
        "spent_usd": spent,
        "window": {"kind": rule.window, "start": start, "end": end},
        "burn": [[t, v * _NANO] for t, v in burn],
        "projected_exhaustion": exhaustion,
        "enforcement": rule.enforcement,
        # Calls it refused this window: a budget with money left still refuses what does not fit.
        "refused": usage.refused if usage is not None else 0,
    }


def projected_exhaustion(
    spent: float, limit: float, start: float, end: float, now: float
) -> float | None:
    """When the budget runs out at the window's average rate so far: now if it already has,
    None if not before the window resets."""
    if spent >= limit:
        return now
    rate = spent / max(now - start, 1.0)
    if rate <= 0:
        return None
    at = now + (limit - spent) / rate
    return at if at < end else None


def rollup_report(services: Services, query: RollupQuery, now: float) -> dict[str, Any]:
    if query.start is not None or query.end is not None:
        start = query.start if query.start is not None else int(now) - 86400
        end = query.end if query.end is not None else int(now) + 1
        if end <= start:
            raise InvalidRequest("'to' must be after 'from'.", param="to")
        granularity = query.granularity or "hour"
        width = GRANULARITIES[granularity]
        r = Range(start // width * width, -(-end // width) * width, granularity)
    else:
        r = Range.last(RANGES[query.range or "24h"], now, query.granularity)
    engine = services.accounts.engine
    by = "key_id" if query.group_by == "key" else query.group_by
    rows = queries.grouped(engine, r, by, query.limit)
    total = queries.totals(engine, r)
    return {
        "object": "spend.rollups",
        "from": r.start,
        "to": r.end,
        "granularity": r.granularity,
        "group_by": by,
        "rows": [_usd_row(_row_of(by, row)) for row in rows],
        "total": _usd_row(total),
    }


def _row_of(by: str, group: Group) -> dict[str, object]:
    named = {"key_name": group.key_name, "team": group.team} if by == "key_id" else {}
    return {by: group.value, **group.sums, **named}


def _usd_row(row: Mapping[str, object]) -> dict[str, Any]:
    """Money as exact decimal strings (nano-dollar integers underneath), as /admin/spend does."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name.endswith("_nanousd") and isinstance(value, int):
            out[name[: -len("_nanousd")] + "_usd"] = str(Decimal(value) / 10**9)
        else:
            out[name] = value
    return out
