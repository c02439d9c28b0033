"""/admin: keys, budgets and spend over HTTP, behind the admin key (OpenAI-shaped errors).

SQL work runs in a worker thread; after a change this process reloads at once (others within
keys.refresh_seconds).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.accounting.ledger import StoreDown
from gateway.admin.budgets import (
    BudgetSet,
    budget_report,
    budget_rules,
    delete_budget,
    list_budgets,
    set_budget,
)
from gateway.admin.keys import (
    KeyCreate,
    KeyNotFound,
    KeyRefused,
    KeyRotate,
    key_ids,
    list_keys,
    new_key,
    revoke_key,
    rotate,
)
from gateway.admin.policy import ExplainQuery, explain_call, resume, rules_status
from gateway.admin.spend import SpendQuery, spend_report
from gateway.api.health import replicas_public
from gateway.api.replies import M, bearer, error_response, json_response, validated
from gateway.api.spend_data import RollupQuery, fresh, rollup_report
from gateway.errors import (
    AuthenticationFailed,
    InvalidRequest,
    PermissionDenied,
    ServiceUnavailable,
    TollgateError,
)
from gateway.services import Services
from gateway.stores.counters import StoreUnavailable

Handler = Callable[[Request, Services], Awaitable[Any]]


def admin_route(path: str, handler: Handler, methods: list[str]) -> Route:
    async def endpoint(request: Request) -> Response:
        services: Services = request.state.services
        try:
            _check_admin(request, services)
            result = await handler(request, services)
            if isinstance(result, Response):
                return result
            return json_response(result)
        except TollgateError as err:
            return error_response(err)

    return Route(path, endpoint, methods=methods)


def _check_admin(request: Request, services: Services) -> None:
    expected = services.admin_key
    if not expected:
        raise PermissionDenied(
            "The admin API is disabled: set the admin key (environment variable "
            f"{services.runtime.current.config.admin.key_env}) and restart.",
            code="admin_disabled",
        )
    given = bearer(request)
    if not given:
        raise AuthenticationFailed("Missing admin key: send 'Authorization: Bearer <admin key>'.")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise AuthenticationFailed("Incorrect admin key.")


async def _body(request: Request, model: type[M], **extra: Any) -> M:
    raw = await request.body()
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return validated(model, {**data, **extra})


async def keys_get(request: Request, services: Services) -> Any:
    rows = await asyncio.to_thread(list_keys, services.accounts.engine)
    return {"object": "list", "data": [r.public() for r in rows]}


async def keys_post(request: Request, services: Services) -> Any:
    spec = await _body(request, KeyCreate)
    unknown = [m for m in spec.models or () if m not in services.runtime.current.config.models]
    if unknown:
        raise InvalidRequest(f"unknown model(s): {', '.join(unknown)}", param="models")
    try:
        row, secret = await asyncio.to_thread(
            new_key,
            services.accounts.engine,
            services.accounts.ring.secret,
            spec,
            services.runtime.current.config,
        )
    except KeyRefused as exc:
        raise InvalidRequest(str(exc.args[0]), param="name", status=409, code="conflict") from exc
    await services.accounts.refresh()
    return json_response({**row.public(), "key": secret}, 201)


async def key_delete(request: Request, services: Services) -> Any:
    try:
        row = await asyncio.to_thread(
            revoke_key, services.accounts.engine, request.path_params["key"]
        )
    except KeyRefused as exc:
        raise InvalidRequest(str(exc.args[0]), status=404, code="not_found") from exc
    await services.accounts.refresh()
    return row.public()


async def key_rotate(request: Request, services: Services) -> Any:
    spec = await _body(request, KeyRotate) if await request.body() else KeyRotate()
    try:
        row, secret = await asyncio.to_thread(
            rotate,
            services.accounts.engine,
            services.accounts.ring.secret,
            request.path_params["key"],
            spec,
        )
    except KeyRefused as exc:
        status, code = (404, "not_found") if isinstance(exc, KeyNotFound) else (409, "conflict")
        raise InvalidRequest(str(exc.args[0]), status=status, code=code) from exc
    await services.accounts.refresh()
    return {**row.public(), "key": secret}


async def budgets_get(request: Request, services: Services) -> Any:
    sql = await asyncio.to_thread(list_budgets, services.accounts.engine)
    return {
        "object": "list",
        "data": [b.public() for b in budget_rules(services.runtime.current.config, sql)],
    }


async def budget_get(request: Request, services: Services) -> Any:
    name = request.path_params["name"]
    sql = await asyncio.to_thread(list_budgets, services.accounts.engine)
    rule = next(
        (b for b in budget_rules(services.runtime.current.config, sql) if b.name == name), None
    )
    if rule is None:
        raise InvalidRequest(f"no budget named {name!r}", status=404, code="not_found")
    ids = await asyncio.to_thread(
        key_ids, services.runtime.current.config, services.accounts.engine, os.environ
    )
    report = await _store(
        budget_report(services.ledger, rule, request.query_params.get("for"), ids)
    )
    return report.public()


async def budget_put(request: Request, services: Services) -> Any:
    name = request.path_params["name"]
    spec = await _body(request, BudgetSet, name=name)
    if any(b.name == name for b in services.runtime.current.config.limits.budget_rules()):
        raise InvalidRequest(
            f"budget {name!r} is declared in the YAML config; change it there", status=409
        )
    await asyncio.to_thread(set_budget, services.accounts.engine, spec.stored())
    await services.accounts.refresh()
    return spec.stored().public()


async def budget_delete(request: Request, services: Services) -> Any:
    name = request.path_params["name"]
    if not await asyncio.to_thread(delete_budget, services.accounts.engine, name):
        raise InvalidRequest(f"no run-time budget named {name!r}", status=404, code="not_found")
    await services.accounts.refresh()
    return {"deleted": name}


# A time range asks the rollups (what the traces say, any period); otherwise the answer is the
# budget counters' current window (the live figure budgets are enforced on).
_ROLLUP_PARAMS = frozenset({"range", "from", "to", "granularity"})


async def spend_get(request: Request, services: Services) -> Any:
    params = dict(request.query_params)
    if _ROLLUP_PARAMS & params.keys():
        return await rollups_get(request, services)
    query = validated(SpendQuery, params)
    report = await _store(spend_report(services.ledger, query))
    return report.public()


async def rollups_get(request: Request, services: Services) -> Any:
    query = validated(RollupQuery, dict(request.query_params))
    await fresh(services)
    return await asyncio.to_thread(rollup_report, services, query, time.time())


async def _store(work: Awaitable[Any]) -> Any:
    try:
        return await work
    except (StoreUnavailable, StoreDown) as exc:
        raise ServiceUnavailable(f"The counter store is unreachable: {exc}") from exc


async def replicas_get(request: Request, services: Services) -> Any:
    """Every alias's tiers and replicas with their live state: circuit, in flight, latency,
    engine load, counters (the same view /readyz gives, behind the admin key)."""
    return {"replicas": replicas_public(services.runtime.current.router.replicas_by_tier())}


async def explain_get(request: Request, services: Services) -> Any:
    """What the running rules would do with a call like this (the counters as they are now)."""
    params = request.query_params
    raw: dict[str, Any] = {k: v for k, v in params.items() if k != "header"}
    raw["header"] = tuple(params.getlist("header"))
    if "stream" in raw:
        raw["stream"] = raw["stream"].lower() in ("1", "true", "yes")
    for name in ("prompt_tokens", "max_tokens"):
        if name in raw:
            if not str(raw[name]).isdigit():
                raise InvalidRequest(f"{name} must be a whole number", param=name)
            raw[name] = int(raw[name])
    query = validated(ExplainQuery, raw)
    try:
        return (await explain_call(services.runtime.current, query)).public()
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="model") from exc


async def rules_get(request: Request, services: Services) -> Any:
    return {"rules": [r.public() for r in rules_status(services.runtime.current)]}


async def rule_resume_post(request: Request, services: Services) -> Any:
    try:
        return resume(services.runtime.current, request.path_params["name"]).public()
    except LookupError as exc:
        raise InvalidRequest(str(exc), status=404, code="not_found") from exc


def admin_routes() -> list[Route]:
    return [
        admin_route("/admin/keys", keys_get, ["GET"]),
        admin_route("/admin/keys", keys_post, ["POST"]),
        admin_route("/admin/keys/{key}", key_delete, ["DELETE"]),
        admin_route("/admin/keys/{key}/rotate", key_rotate, ["POST"]),
        admin_route("/admin/budgets", budgets_get, ["GET"]),
        admin_route("/admin/budgets/{name}", budget_get, ["GET"]),
        admin_route("/admin/budgets/{name}", budget_put, ["PUT"]),
        admin_route("/admin/budgets/{name}", budget_delete, ["DELETE"]),
        admin_route("/admin/spend", spend_get, ["GET"]),
        admin_route("/admin/spend/rollups", rollups_get, ["GET"]),
        admin_route("/admin/replicas", replicas_get, ["GET"]),
        admin_route("/admin/policy/explain", explain_get, ["GET"]),
        admin_route("/admin/policy/rules", rules_get, ["GET"]),
        admin_route("/admin/policy/rules/{name}/resume", rule_resume_post, ["POST"]),
    ]
