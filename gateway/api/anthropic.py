"""The Anthropic dialect: POST /v1/messages and /v1/messages/count_tokens, HTTP <-> Call.

Keys come as `x-api-key` (what the Anthropic SDK sends) or `Authorization: Bearer`; the client's
`anthropic-version` and `anthropic-beta` travel to Anthropic upstreams; every error Tollgate
raises is in Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import Scope, Send

from gateway.api.asgi import RequestHeaders, raw_headers, send_whole
from gateway.api.bodies import check_anthropic_messages, parse_json_object
from gateway.api.endpoint import DialectEndpoint
from gateway.api.errors import anthropic_error_body, anthropic_error_event
from gateway.call import Call, Principal
from gateway.errors import AuthenticationFailed, InvalidRequest, TollgateError
from gateway.runtime import Runtime

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

    def key_of(self, headers: RequestHeaders) -> str | None:
        """Anthropic clients send `x-api-key`; Bearer is accepted too."""
        return headers.key()

    def authenticate(self, runtime: Runtime, headers: RequestHeaders) -> Principal:
        try:
            return super().authenticate(runtime, headers)
        except AuthenticationFailed as err:
            if err.code == "missing_api_key":  # said the way Anthropic's clients know it
                err.message = "x-api-key header is required"
                err.args = (err.message,)
            raise

    def build(
        self,
        raw: bytes,
        principal: Principal,
        request_id: str,
        scope: Scope,
        headers: RequestHeaders,
        runtime: Runtime,
    ) -> Call:
        payload = parse_json_object(raw)
        call = _call(payload, principal, request_id, scope, headers, count=self.count)
        call.raw_body = raw
        return call

    async def send_error(self, send: Send, err: TollgateError, request_id: str) -> None:
        headers = [JSON, *self.id_headers(request_id), *raw_headers(err.headers.items())]
        try:
            await send_whole(send, err.status, headers, anthropic_error_body(err, request_id))
        except (OSError, RuntimeError):
            log.debug("could not send error response (client gone or response started)")


def _call(
    body: dict[str, Any],
    principal: Principal,
    request_id: str,
    scope: Scope,
    headers: RequestHeaders,
    count: bool = False,
) -> Call:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required (a non-empty string)", param="model")
    max_tokens = body.get("max_tokens")
    bad = isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    if bad and not (count and max_tokens is None):  # counting needs no max_tokens
        raise InvalidRequest("max_tokens: Field required (a positive integer)", param="max_tokens")
    _check_messages(body)
    check_anthropic_messages(body)
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise InvalidRequest("stream: Input should be a valid boolean", param="stream")
    client = scope.get("client")
    return Call(
        request_id=request_id,
        dialect="anthropic",
        endpoint="count_tokens" if count else "messages",
        model=model,
        body=body,
        stream=body.get("stream") is True and not count,
        client_wants_usage=True,
        principal=principal,
        client_ip=client[0] if client else None,
        user_agent=headers.user_agent,
        forward=tuple(headers.forward),
        traceparent=headers.traceparent,
        tracestate=headers.tracestate,
        raw_headers=scope["headers"],
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
