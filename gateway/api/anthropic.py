"""The Anthropic dialect: POST /v1/messages and /v1/messages/count_tokens, HTTP <-> Call.

Keys come as `x-api-key` (what the Anthropic SDK sends) or `Authorization: Bearer`; the client's
`anthropic-version` and `anthropic-beta` travel to Anthropic upstreams; every error Tollgate
raises is in Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from gateway.accounting.tokens import anthropic_prompt_tokens
from gateway.api.asgi import Receive, RequestHeaders, Send, raw_headers, read_body, send_whole
from gateway.api.endpoint import DialectEndpoint
from gateway.api.errors import anthropic_error_body, anthropic_error_event
from gateway.api.openai import parse_json_object
from gateway.backends.base import UpstreamRequest
from gateway.backends.bridge import dialect_of
from gateway.call import Call, Principal
from gateway.config.runtime import Runtime
from gateway.errors import InvalidRequest, ModelNotFound, TollgateError, UpstreamTimeout
from gateway.services import Services

log = logging.getLogger("gateway.api.anthropic")
JSON = (b"content-type", b"application/json")


class MessagesEndpoint(DialectEndpoint):
    """POST /v1/messages (and, with `count=True`, /v1/messages/count_tokens)."""

    error_event = staticmethod(anthropic_error_event)
    dialect = "anthropic"

    def __init__(self, count: bool = False) -> None:
        self.count = count
        self.endpoint = "count_tokens" if count else "messages"

    def id_headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        # `request-id` is where the Anthropic SDK looks for it (`message._request_id`).
        encoded = request_id.encode()
        return [(b"x-tollgate-request-id", encoded), (b"request-id", encoded)]

    async def prepare(
        self,
        scope: dict[str, Any],
        receive: Receive,
        send: Send,
        services: Services,
        runtime: Runtime,
        request_id: str,
    ) -> Call | None:
        headers = RequestHeaders(scope)
        principal = runtime.auth.authenticate(headers.key())
        body = await read_body(
            receive, runtime.config.server.max_body_bytes, headers.content_length
        )
        payload = parse_json_object(body)
        if self.count:
            ids = self.id_headers(request_id)
            await self._count(send, payload, principal, services, runtime, ids, headers)
            return None
        call = _call(payload, principal, request_id, scope, headers)
        call.raw_body = body
        return call

    async def send_error(self, send: Send, err: TollgateError, request_id: str) -> None:
        headers = [JSON, *self.id_headers(request_id), *raw_headers(err.headers.items())]
        try:
            await send_whole(send, err.status, headers, anthropic_error_body(err, request_id))
        except (OSError, RuntimeError):
            log.debug("could not send error response (client gone or response started)")

    async def _count(
        self,
        send: Send,
        payload: dict[str, Any],
        principal: Principal,
        services: Services,
        runtime: Runtime,
        ids: list[tuple[bytes, bytes]],
        headers: RequestHeaders,
    ) -> None:
        """Asked of Anthropic when the model's first target is an Anthropic backend (its own
        tokenizer is the one that bills); otherwise counted by Tollgate with tiktoken."""
        model = payload.get("model")
        if (
            not isinstance(model, str)
            or model not in runtime.router
            or not principal.may_use(model)
        ):
            raise ModelNotFound(f"model: {model}", param="model")
        _check_messages(payload)
        target = runtime.router.configured(model)[0]
        backend = runtime.backends[target.backend]
        if dialect_of(backend) == "anthropic":
            request = UpstreamRequest(
                "count_tokens", target.model, payload, False, False, "",
                dict(headers.forward), "anthropic",
            )  # fmt: skip
            try:
                async with asyncio.timeout(backend.total_timeout):
                    response = await backend.send(request)
            except TimeoutError as exc:
                raise UpstreamTimeout(
                    f"backend {target.backend} did not count within {backend.total_timeout:g}s"
                ) from exc
            out = [*raw_headers(response.headers), *ids]
            await send_whole(send, response.status, out, response.body)
            return
        count = anthropic_prompt_tokens(payload, services.tokens)
        tools = payload.get("tools")
        if tools:
            count += services.tokens.count(orjson.dumps(tools).decode())
        body = orjson.dumps({"input_tokens": count})
        await send_whole(send, 200, [JSON, *ids], body)


def _call(
    body: dict[str, Any],
    principal: Principal,
    request_id: str,
    scope: dict[str, Any],
    headers: RequestHeaders,
) -> Call:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required (a non-empty string)", param="model")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest("max_tokens: Field required (a positive integer)", param="max_tokens")
    _check_messages(body)
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise InvalidRequest("stream: Input should be a valid boolean", param="stream")
    client = scope.get("client")
    return Call(
        request_id=request_id,
        dialect="anthropic",
        endpoint="messages",
        model=model,
        body=body,
        stream=body.get("stream") is True,
        client_wants_usage=True,
        principal=principal,
        client_ip=client[0] if client else None,
        user_agent=headers.user_agent,
        forward=tuple(headers.forward),
        traceparent=headers.traceparent,
        tracestate=headers.tracestate,
    )


def _check_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: Field required (a non-empty list)", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest(
                f"messages.{i}.role: Input should be 'user' or 'assistant'",
                param=f"messages.{i}.role",
            )
        content = message.get("content")
        if not isinstance(content, str | list):
            raise InvalidRequest(
                f"messages.{i}.content: Input should be a string or a list of content blocks",
                param=f"messages.{i}.content",
            )
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise InvalidRequest("system: Input should be a string or a list of text blocks")
