"""GET /v1/models and /v1/models/{id}: the aliases this caller may use, in the caller's dialect.

The Anthropic SDK lists models on the same path; it is recognised by its `anthropic-version`
header (or its `x-api-key`) and answered in Anthropic's shape and error format."""

from __future__ import annotations

import orjson
from starlette.types import Receive, Scope, Send

from gateway.api.asgi import RequestHeaders, send_whole
from gateway.api.errors import anthropic_error_body
from gateway.api.openai import JSON, send_openai_error
from gateway.errors import ModelNotFound, TollgateError
from gateway.runtime import Runtime
from gateway.services import Services


class ModelsEndpoint:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services = scope["state"]["services"]
        request_id = services.request_ids()
        headers = RequestHeaders(scope)
        anthropic = headers.api_key is not None or any(
            k == "anthropic-version" for k, _ in headers.forward
        )
        ids = [(b"x-tollgate-request-id", request_id.encode())]
        try:
            runtime = services.runtime.current
            principal = runtime.auth.authenticate(headers.key())
            allowed = [a for a in runtime.router.aliases() if principal.may_use(a)]
            model_id = scope.get("path_params", {}).get("model_id")
            if model_id is not None and model_id not in allowed:
                raise ModelNotFound(
                    f"The model '{model_id}' does not exist or you do not have access to it. "
                    f"Available models: {', '.join(allowed) or 'none'}.",
                    param="model",
                )
            render = _anthropic if anthropic else _openai
            await send_whole(send, 200, [JSON, *ids], render(runtime, allowed, model_id))
        except TollgateError as err:
            if anthropic:
                body = anthropic_error_body(err, request_id)
                await send_whole(send, err.status, [JSON, *ids], body)
            else:
                await send_openai_error(send, err, request_id)


def _openai(runtime: Runtime, allowed: list[str], model_id: str | None) -> bytes:
    cards = {
        a: {"id": a, "object": "model", "created": 0, "owned_by": runtime.config.models[a].owned_by}
        for a in allowed
    }
    if model_id is not None:
        return orjson.dumps(cards[model_id])
    return orjson.dumps({"object": "list", "data": list(cards.values())})


def _anthropic(runtime: Runtime, allowed: list[str], model_id: str | None) -> bytes:
    cards = {
        a: {"type": "model", "id": a, "display_name": a, "created_at": "1970-01-01T00:00:00Z"}
        for a in allowed
    }
    if model_id is not None:
        return orjson.dumps(cards[model_id])
    data = list(cards.values())
    return orjson.dumps(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )
