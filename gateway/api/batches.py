"""OpenAI's Files and Batch APIs (`/v1/files`, `/v1/batches`) and Anthropic's Message Batches
(`/v1/messages/batches`), in each vendor's shapes and errors, for the key that calls them; another
key's files and jobs do not exist here. The work itself is batches/."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.errors import anthropic_error_body
from gateway.api.replies import bearer, error_response, json_response
from gateway.batches.results import anthropic_batch, anthropic_results, file_object, openai_batch
from gateway.batches.submit import cancel, submit_anthropic, submit_openai
from gateway.call import Principal
from gateway.errors import InvalidRequest, ModelNotFound, PayloadTooLarge, TollgateError
from gateway.services import Services
from gateway.stores import batches as store
from gateway.stores.batches import FileRow

Handler = Callable[[Request, Services, Principal], Awaitable[Response]]


def _openai(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        services: Services = request.state.services
        try:
            _enabled(services)
            principal = services.runtime.current.auth.authenticate(bearer(request) or None)
            return await handler(request, services, principal)
        except TollgateError as err:
            return error_response(err)

    return endpoint


def _anthropic(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        services: Services = request.state.services
        try:
            _enabled(services)
            key = request.headers.get("x-api-key") or bearer(request) or None
            principal = services.runtime.current.auth.authenticate(key)
            return await handler(request, services, principal)
        except TollgateError as err:
            return Response(anthropic_error_body(err), err.status, headers=dict(err.headers),
                            media_type="application/json")  # fmt: skip

    return endpoint


def _enabled(services: Services) -> None:
    if not services.runtime.current.config.batch.enabled:
        raise ModelNotFound("Batches are not enabled on this gateway (batch.enabled).",
                            code="not_found")  # fmt: skip


def _engine(services: Services) -> Any:
    return services.accounts.engine


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


# -- files ------------------------------------------------------------------------------


async def upload(request: Request, services: Services, principal: Principal) -> Response:
    limit = services.runtime.current.config.batch.max_file_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + 64 * 1024:
        raise PayloadTooLarge(f"Files may hold up to {limit} bytes.")
    try:
        async with request.form(max_files=1, max_fields=8, max_part_size=limit) as form:
            purpose, upload_ = form.get("purpose"), form.get("file")
            if purpose != "batch":
                raise InvalidRequest("purpose: this gateway keeps files for 'batch' only.",
                                     param="purpose")  # fmt: skip
            if not isinstance(upload_, UploadFile):
                raise InvalidRequest("Missing required parameter: 'file'.", param="file")
            content = await upload_.read(limit + 1)
            filename = upload_.filename or "upload"
    except TollgateError:
        raise
    except Exception as exc:  # a malformed or oversize multipart body
        raise InvalidRequest(f"The upload could not be read: {exc}", param="file") from exc
    if len(content) > limit:
        raise PayloadTooLarge(f"Files may hold up to {limit} bytes.")
    row = FileRow("file-" + secrets.token_hex(12), principal.key_id, "batch", filename,
                  len(content), time.time(), content)  # fmt: skip
    await asyncio.to_thread(store.add_file, _engine(services), row)
    return json_response(file_object(row))


async def list_files(request: Request, services: Services, principal: Principal) -> Response:
    purpose = request.query_params.get("purpose")
    rows = await asyncio.to_thread(store.list_files, _engine(services), principal.key_id,
                                   purpose, _limit(request, 10_000))  # fmt: skip
    return json_response({"object": "list", "data": [file_object(r) for r in rows],
                          "has_more": False})  # fmt: skip


async def get_file(request: Request, services: Services, principal: Principal) -> Response:
    return json_response(file_object(await _file(request, services, principal)))


async def file_content(request: Request, services: Services, principal: Principal) -> Response:
    row = await _file(request, services, principal, content=True)
    return Response(row.content, media_type="application/jsonl")


async def delete_file(request: Request, services: Services, principal: Principal) -> Response:
    row = await _file(request, services, principal)
    await asyncio.to_thread(store.delete_file, _engine(services), row.id, principal.key_id)
    return json_response({"id": row.id, "object": "file", "deleted": True})


async def _file(
    request: Request, services: Services, principal: Principal, content: bool = False
) -> FileRow:
    ident = request.path_params["file_id"]
    row = await asyncio.to_thread(store.get_file, _engine(services), ident, principal.key_id,
                                  content)  # fmt: skip
    if row is None:
        raise InvalidRequest(f"No such File object: {ident}", param="id", status=404,
                             code="not_found")  # fmt: skip
    return row


# -- OpenAI batches ---------------------------------------------------------------------


async def create_batch(request: Request, services: Services, principal: Principal) -> Response:
    job = await submit_openai(_engine(services), services.runtime.current, principal,
                              await _json_body(request))  # fmt: skip
    if services.batches is not None:
        services.batches.nudge()
    return json_response(openai_batch(await _counted(services, job.id, principal)))


async def get_batch(request: Request, services: Services, principal: Principal) -> Response:
    return json_response(openai_batch(await _job(request, services, principal)))


async def list_batches(request: Request, services: Services, principal: Principal) -> Response:
    rows, more = await asyncio.to_thread(
        store.list_batches, _engine(services), principal.key_id, "openai", _limit(request, 100),
        request.query_params.get("after"),
    )  # fmt: skip
    data = [openai_batch(r) for r in rows]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return json_response({"object": "list", "data": data, "first_id": first, "last_id": last,
                          "has_more": more})  # fmt: skip


async def cancel_batch(request: Request, services: Services, principal: Principal) -> Response:
    job = await _cancelled(request, services, principal)
    return json_response(openai_batch(job))


# -- Anthropic message batches ----------------------------------------------------------


async def create_message_batch(
    request: Request, services: Services, principal: Principal
) -> Response:
    job = await submit_anthropic(_engine(services), services.runtime.current, principal,
                                 await _json_body(request))  # fmt: skip
    if services.batches is not None:
        services.batches.nudge()
    counted = await _counted(services, job.id, principal)
    return json_response(anthropic_batch(counted, _base(request)))


async def get_message_batch(request: Request, services: Services, principal: Principal) -> Response:
    return json_response(anthropic_batch(await _job(request, services, principal), _base(request)))


async def list_message_batches(
    request: Request, services: Services, principal: Principal
) -> Response:
    rows, more = await asyncio.to_thread(
        store.list_batches, _engine(services), principal.key_id, "anthropic",
        _limit(request, 1000, name="limit"), request.query_params.get("after_id"),
    )  # fmt: skip
    data = [anthropic_batch(r, _base(request)) for r in rows]
    return json_response({"data": data, "has_more": more,
                          "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None})  # fmt: skip


async def cancel_message_batch(
    request: Request, services: Services, principal: Principal
) -> Response:
    return json_response(anthropic_batch(await _cancelled(request, services, principal),
                                         _base(request)))  # fmt: skip


async def message_batch_results(
    request: Request, services: Services, principal: Principal
) -> Response:
    job = await _job(request, services, principal)
    if job.status not in ("completed", "cancelled", "expired", "failed"):
        raise InvalidRequest(f"Message batch {job.id} has not yet ended: its results are not "
                             "available.", status=409, code="conflict")  # fmt: skip
    lines = await asyncio.to_thread(store.results, _engine(services), job.id)
    return Response(anthropic_results(lines), media_type="application/x-jsonl")


# -- shared -----------------------------------------------------------------------------


async def _job(request: Request, services: Services, principal: Principal) -> store.BatchRow:
    ident = request.path_params["batch_id"]
    job = await asyncio.to_thread(store.get_batch, _engine(services), ident, principal.key_id)
    if job is None:
        raise InvalidRequest(f"No batch found with id '{ident}'.", status=404, code="not_found")
    return job


async def _counted(services: Services, ident: str, principal: Principal) -> store.BatchRow:
    job = await asyncio.to_thread(store.get_batch, _engine(services), ident, principal.key_id)
    assert job is not None
    return job


async def _cancelled(request: Request, services: Services, principal: Principal) -> store.BatchRow:
    ident = request.path_params["batch_id"]
    job = await cancel(_engine(services), ident, principal.key_id)
    if job is None:
        raise InvalidRequest(f"No batch found with id '{ident}'.", status=404, code="not_found")
    if services.batches is not None:
        services.batches.nudge()
    return job


def _limit(request: Request, most: int, name: str = "limit") -> int:
    raw = request.query_params.get(name, "20")
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise InvalidRequest(f"'{name}' must be an integer from 1 to {most}.", param=name)
    return int(raw)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def batch_routes() -> list[Route]:
    o, a = _openai, _anthropic
    return [
        Route("/v1/files", o(upload), methods=["POST"]),
        Route("/v1/files", o(list_files), methods=["GET"]),
        Route("/v1/files/{file_id}", o(get_file), methods=["GET"]),
        Route("/v1/files/{file_id}", o(delete_file), methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", o(file_content), methods=["GET"]),
        Route("/v1/batches", o(create_batch), methods=["POST"]),
        Route("/v1/batches", o(list_batches), methods=["GET"]),
        Route("/v1/batches/{batch_id}", o(get_batch), methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", o(cancel_batch), methods=["POST"]),
        Route("/v1/messages/batches", a(create_message_batch), methods=["POST"]),
        Route("/v1/messages/batches", a(list_message_batches), methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}", a(get_message_batch), methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}/cancel", a(cancel_message_batch), methods=["POST"]),
        Route("/v1/messages/batches/{batch_id}/results", a(message_batch_results), methods=["GET"]),
    ]
