"""/dashboard: the spend dashboard (a static page and the JSON it draws), and
/admin/spend/rollups. Both read the spend rollups, i.e. exactly what the traces said.

Access: the admin key or the read-only dashboard key (`telemetry.dashboard.key_env`) as a
Bearer token; with neither configured (the embedded default) only clients on the loopback
interface get data. The page itself holds no data and is served to anyone.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from decimal import Decimal
from importlib import resources
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.accounting.ledger import StoreDown
from gateway.admin_ops import budget_report
from gateway.api.errors import openai_error_body
from gateway.config.runtime import yaml_budgets
from gateway.errors import (
    AuthenticationFailed,
    InvalidRequest,
    PermissionDenied,
    ServiceUnavailable,
    TollgateError,
)
from gateway.services import Services
from gateway.stores.budgets import BudgetRule, list_budgets
from gateway.stores.counters import StoreUnavailable
from gateway.telemetry import queries
from gateway.telemetry.queries import Range

RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
_ASSETS = {
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
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
    group_by: Literal["team", "key_id", "model", "tier", "cache"] = "team"
    limit: int = Field(50, ge=1, le=1000)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _error(err: TollgateError) -> Response:
    return Response(
        openai_error_body(err), err.status, headers=dict(err.headers), media_type="application/json"
    )


def _bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_dashboard(request: Request, services: Services) -> None:
    keys = [k for k in (services.admin_key, services.dashboard_key) if k]
    if not keys:
        if _loopback(request):
            return
        raise PermissionDenied(
            "The dashboard is open on 127.0.0.1 only while no admin or dashboard key is set: "
            f"set {services.runtime.current.config.telemetry.dashboard.key_env} (read-only) or "
            "the admin key and restart.",
            code="dashboard_disabled",
        )
    given = _bearer(request)
    if not given:
        raise AuthenticationFailed(
            "Missing key: send 'Authorization: Bearer <dashboard or admin key>'."
        )
    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
        raise AuthenticationFailed("Incorrect dashboard key.")


def _validated(model: type[BaseModel], params: dict[str, str]) -> Any:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"{field}: {first['msg']}", param=field) from exc


async def _fresh(services: Services) -> None:
    """This process's pending deltas in first, so the page shows its calls to the last one."""
    telemetry = services.telemetry
    if telemetry is None:
        raise ServiceUnavailable(
            "Telemetry is disabled (telemetry.enabled: false): there are no rollups to show.",
            code="telemetry_disabled",
        )
    try:
        await telemetry.flush()
    except Exception as exc:
        raise ServiceUnavailable(f"The rollups database is unreachable: {exc}") from exc


async def page(request: Request) -> Response:
    name, media = _ASSETS[request.url.path.rstrip("/") or "/dashboard"]
    body = resources.files("gateway.static").joinpath(name).read_bytes()
    headers = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
    return Response(body, media_type=media, headers=headers)


async def summary(request: Request) -> Response:
    services: Services = request.state.services
    try:
        check_dashboard(request, services)
        query = _validated(SummaryQuery, dict(request.query_params))
        await _fresh(services)
        data = await summary_data(services, query)
    except TollgateError as err:
        return _error(err)
    return _json(data)


async def summary_data(services: Services, query: SummaryQuery) -> dict[str, Any]:
    engine = services.accounts.engine
    now = time.time()
    r = Range.last(RANGES[query.range], now)
    series, sums, keys, lat, ttft = await asyncio.gather(
        asyncio.to_thread(queries.series, engine, r, query.stack),
        asyncio.to_thread(queries.totals, engine, r),
        asyncio.to_thread(queries.grouped, engine, r, "key_id", 10),
        asyncio.to_thread(queries.percentiles, engine, r, "latency"),
        asyncio.to_thread(queries.percentiles, engine, r, "ttft"),
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
            "stacks": series.stacks,
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
        "savings": queries.savings_of(sums),
        "top_keys": [
            {
                "key_id": row["key_id"] or "(none)",
                "name": row["key_name"] or row["key_id"] or "(none)",
                "team": row["team"] or None,
                "usd": row["cost_nanousd"] * _NANO,
                "requests": row["requests"],
                "tokens": row["input_tokens"] + row["output_tokens"],
            }
            for row in keys
        ],
        "latency_ms": lat,
        "ttft_ms": ttft,
        "budgets": await _budgets(services, now),
    }


async def _budgets(services: Services, now: float) -> list[dict[str, Any]]:
    """Each USD budget with a subject the rollups can follow: its window's burn so far, the
    live figure the budget is enforced on, and when it runs out at the current rate."""
    sql = await asyncio.to_thread(list_budgets, services.accounts.engine)
    declared = yaml_budgets(services.runtime.current.config)
    names = {b.name for b in declared}
    rules = [*declared, *(b for b in sql if b.name not in names)]
    out = []
    for rule in rules:
        if rule.usd_nanos is None or rule.subject == "*":
            continue
        if rule.scope not in ("global", "team", "key"):
            continue
        out.append(await _burn(services, rule, now))
    return out


async def _burn(services: Services, rule: BudgetRule, now: float) -> dict[str, Any]:
    try:
        report = await budget_report(services.ledger, rule, None)
    except (StoreUnavailable, StoreDown):
        report = {"usage": None}
    usage = report.get("usage") or {}
    window = usage.get("window") or {}
    start, end = int(window.get("start") or now - 86400), int(window.get("end") or now)
    granularity = "hour" if end - start <= 8 * 86400 else "day"
    r = Range.last(max(int(now) - start, 60), now, granularity)
    filters: dict[str, str] = {}
    if rule.scope in ("team", "key"):
        filters = {"team" if rule.scope == "team" else "key_id": rule.subject or ""}
    burn = await asyncio.to_thread(queries.cumulative, services.accounts.engine, r, **filters)
    assert rule.usd_nanos is not None
    limit = rule.usd_nanos * _NANO
    spent = float(usage["usd"]) if usage.get("usd") is not None else (burn[-1][1] * _NANO)
    elapsed = max(now - start, 1.0)
    rate = spent / elapsed
    exhaustion = None
    if spent >= limit:
        exhaustion = now
    elif rate > 0:
        at = now + (limit - spent) / rate
        exhaustion = at if at < end else None
    return {
        "name": rule.name,
        "scope": rule.scope,
        "subject": rule.subject,
        "limit_usd": limit,
        "spent_usd": spent,
        "window": {"kind": rule.window, "start": start, "end": end},
        "burn": [[t, v * _NANO] for t, v in burn if t <= now + 3600],
        "projected_exhaustion": exhaustion,
        "enforcement": rule.enforcement,
    }


async def rollups(request: Request) -> Response:
    """GET /admin/spend/rollups: spend from the rollups by one dimension over a time range."""
    services: Services = request.state.services
    try:
        if not services.admin_key:
            raise PermissionDenied(
                "The admin API is disabled: set the admin key and restart.", code="admin_disabled"
            )
        given = _bearer(request)
        if not given or not hmac.compare_digest(given.encode(), services.admin_key.encode()):
            raise AuthenticationFailed("Missing or incorrect admin key.")
        query: RollupQuery = _validated(RollupQuery, dict(request.query_params))
        await _fresh(services)
        data = await asyncio.to_thread(rollup_report, services, query, time.time())
    except TollgateError as err:
        return _error(err)
    return _json(data)


def rollup_report(services: Services, query: RollupQuery, now: float) -> dict[str, Any]:
    if query.start is not None or query.end is not None:
        start = query.start if query.start is not None else int(now) - 86400
        end = query.end if query.end is not None else int(now) + 1
        if end <= start:
            raise InvalidRequest("'to' must be after 'from'.", param="to")
        granularity = query.granularity or "hour"
        width = {"minute": 60, "hour": 3600, "day": 86400}[granularity]
        r = Range(start // width * width, -(-end // width) * width, granularity)
    else:
        r = Range.last(RANGES[query.range or "24h"], now, query.granularity)
    engine = services.accounts.engine
    rows = queries.grouped(engine, r, query.group_by, query.limit)
    total = queries.totals(engine, r)
    return {
        "object": "spend.rollups",
        "from": r.start,
        "to": r.end,
        "granularity": r.granularity,
        "group_by": query.group_by,
        "rows": [_usd_row(row) for row in rows],
        "total": _usd_row(total),
    }


def _usd_row(row: dict[str, Any]) -> dict[str, Any]:
    """Money as exact decimal strings (nano-dollar integers underneath), as /admin/spend does."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name.endswith("_nanousd"):
            out[name[: -len("_nanousd")] + "_usd"] = str(Decimal(value) / 10**9)
        else:
            out[name] = value
    return out


def dashboard_routes() -> list[Route]:
    return [
        *(Route(path, page, methods=["GET"]) for path in _ASSETS),
        Route("/dashboard/", page, methods=["GET"]),
        Route("/dashboard/api/summary", summary, methods=["GET"]),
        Route("/admin/spend/rollups", rollups, methods=["GET"]),
    ]
