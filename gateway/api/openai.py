"""The OpenAI dialect: HTTP <-> Call, and errors in OpenAI's JSON shape. Nothing else."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from gateway.api.asgi import (
    ClientWatch,
    Receive,
    Send,
    raw_headers,
    read_body,
    send_stream,
    send_whole,
)
from gateway.api.errors import openai_error_body, openai_error_event
from gateway.call import Call, Endpoint, Principal
from gateway.errors import InternalError, InvalidRequest, ModelNotFound, TollgateError
from gateway.logs import request_id_var
from gateway.services import Services

log = logging.getLogger("gateway.api")
JSON = (b"content-type", b"application/json")
DISCONNECT_GRACE_S = 0.25

# Field that must be present per endpoint, beyond `model`.
_REQUIRED: dict[Endpoint, str] = {
    "chat.completions": "messages",
    "completions": "prompt",
    "embeddings": "input",
}


class _Headers:
    """The few request headers the hot path reads, found in one pass."""

    __slots__ = ("authorization", "content_length", "user_agent")

    def __init__(self, scope: dict[str, Any]) -> None:
        self.authorization: str | None = None
        self.content_length: int | None = None
        self.user_agent: str | None = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                self.authorization = value.decode("latin-1")
            elif key == b"content-length" and value.isdigit():
                self.content_length = int(value)
            elif key == b"user-agent":
                self.user_agent = value.decode("latin-1")

    def bearer(self) -> str | None:
        auth = self.authorization
        if auth and auth[:7].lower() == "bearer ":
            return auth[7:].strip() or None
        return None


class OpenAIEndpoint:
    """An ASGI endpoint for one OpenAI route (chat/completions/embeddings)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        services: Services = scope["state"]["services"]
        request_id = services.request_ids()
        token = request_id_var.set(request_id)
        watch: ClientWatch | None = None
        try:
            runtime = services.runtime.current
            headers = _Headers(scope)
            principal = runtime.auth.authenticate(headers.bearer())
            body = await read_body(
                receive, runtime.config.server.max_body_bytes, headers.content_length
            )
            call = self._call(body, principal, request_id, scope, headers)
            watch = ClientWatch(receive, DISCONNECT_GRACE_S)
            reply = await services.pipeline.handle(call, runtime)
            out = raw_headers(reply.headers)
            out.append((b"x-tollgate-request-id", request_id.encode()))
            if reply.stream is not None:
                await send_stream(send, watch, reply, out, openai_error_event)
            else:
                watch.stop()
                try:
                    await send_whole(send, reply.status, out, reply.body)
                finally:
                    await reply.done()
        except TollgateError as err:
            await _send_error(send, err, request_id)
        except asyncio.CancelledError:
            if watch is None or watch.reason is None:
                raise
            log.info("client disconnected before the response was sent")
        except Exception:
            log.exception("unhandled error")
            await _send_error(send, InternalError("Internal error in the gateway."), request_id)
        finally:
            if watch is not None:
                watch.stop()
            request_id_var.reset(token)

    def _call(
        self,
        raw: bytes,
        principal: Principal,
        request_id: str,
        scope: dict[str, Any],
        headers: _Headers,
    ) -> Call:
        body = parse_json_object(raw)
        model = body.get("model")
        if model is None:
            raise InvalidRequest("Missing required parameter: 'model'.", param="model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("'model' must be a non-empty string.", param="model")
        required = _REQUIRED[self.endpoint]
        if required not in body:
            raise InvalidRequest(f"Missing required parameter: '{required}'.", param=required)
        _check_fields(self.endpoint, body)
        stream = body.get("stream") is True
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        client = scope.get("client")
        return Call(
            request_id=request_id,
            dialect="openai",
            endpoint=self.endpoint,
            model=model,
            body=body,
            stream=stream,
            client_wants_usage=wants_usage,
            principal=principal,
            client_ip=client[0] if client else None,
            user_agent=headers.user_agent,
        )


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _check_fields(endpoint: Endpoint, body: dict[str, Any]) -> None:
    """Only the fields Tollgate acts on are checked; the rest pass through untouched."""
    if endpoint == "chat.completions":
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequest(
                    f"'messages[{i}]' must be an object with a string 'role'.",
                    param=f"messages[{i}]",
                )
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidRequest(f"'{name}' must be a positive integer.", param=name)


async def _send_error(send: Send, err: TollgateError, request_id: str) -> None:
    headers = [
        JSON,
        (b"x-tollgate-request-id", request_id.encode()),
        *raw_headers(err.headers.items()),
    ]
    try:
        await send_whole(send, err.status, headers, openai_error_body(err))
    except (OSError, RuntimeError):
        log.debug("could not send error response (client gone or response started)")


class ModelsEndpoint:
    """GET /v1/models and /v1/models/{id}: the aliases this caller may use."""

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        services: Services = scope["state"]["services"]
        request_id = services.request_ids()
        try:
            runtime = services.runtime.current
            principal = runtime.auth.authenticate(_Headers(scope).bearer())
            config = runtime.config
            allowed = [a for a in runtime.router.aliases() if principal.may_use(a)]
            cards = {
                a: {"id": a, "object": "model", "created": 0, "owned_by": config.models[a].owned_by}
                for a in allowed
            }
            model_id = scope.get("path_params", {}).get("model_id")
            if model_id is None:
                body = orjson.dumps({"object": "list", "data": list(cards.values())})
            elif model_id in cards:
                body = orjson.dumps(cards[model_id])
            else:
                raise ModelNotFound(
                    f"The model '{model_id}' does not exist or you do not have "
                    f"access to it. Available models: "
                    f"{', '.join(allowed) or 'none'}.",
                    param="model",
                )
            await send_whole(
                send, 200, [JSON, (b"x-tollgate-request-id", request_id.encode())], body
            )
        except TollgateError as err:
            await _send_error(send, err, request_id)
