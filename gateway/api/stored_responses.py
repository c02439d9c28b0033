"""`GET /v1/responses/{id}`, `DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`:
a key's stored responses, in OpenAI's shapes. Another key's response does not exist here."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.replies import bearer, error_response, json_response
from gateway.api.responses import not_found
from gateway.errors import InvalidRequest, TollgateError
from gateway.services import Services
from gateway.stores.responses import StoredResponse, load, remove


async def _stored(request: Request) -> tuple[Services, str, StoredResponse]:
    services: Services = request.state.services
    principal = services.runtime.current.auth.authenticate(bearer(request) or None)
    ident = request.path_params["response_id"]
    found = await asyncio.to_thread(
        load, services.accounts.engine, ident, principal.key_id, time.time()
    )
    if found is None:
        raise not_found(ident)
    return services, principal.key_id, found


async def get_response(request: Request) -> Response:
    try:
        _, _, found = await _stored(request)
    except TollgateError as err:
        return error_response(err)
    return json_response(found.response)


async def delete_response(request: Request) -> Response:
    try:
        services, key_id, found = await _stored(request)
        await asyncio.to_thread(remove, services.accounts.engine, found.id, key_id)
    except TollgateError as err:
        return error_response(err)
    return json_response({"id": found.id, "object": "response", "deleted": True})


async def list_input_items(request: Request) -> Response:
    """A page of the response's input items: `order` (desc, the default, or asc), `limit`
    (1-100, default 20), `after` (an item id)."""
    try:
        _, _, found = await _stored(request)
        order, limit, after = _page(request)
    except TollgateError as err:
        return error_response(err)
    items: list[dict[str, Any]] = list(found.input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [i.get("id") for i in items]
        if after not in ids:
            return error_response(InvalidRequest(f"No item with id '{after}'.", param="after"))
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return json_response({
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    })  # fmt: skip


def _page(request: Request) -> tuple[str, int, str | None]:
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    raw = query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequest("'limit' must be an integer from 1 to 100.", param="limit")
    return order, int(raw), query.get("after")


def stored_response_routes() -> list[Route]:
    return [
        Route("/v1/responses/{response_id}", get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
    ]
