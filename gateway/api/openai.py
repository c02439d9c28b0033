"""The OpenAI dialect: HTTP <-> Call, and errors in OpenAI's JSON shape. Nothing else."""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import Scope, Send

from gateway.api.asgi import RequestHeaders, raw_headers, send_whole
from gateway.api.bodies import check_completions, check_openai_chat, parse_json_object
from gateway.api.endpoint import DialectEndpoint
from gateway.api.errors import openai_error_body, openai_error_event
from gateway.call import Call, Endpoint, Principal
from gateway.errors import InvalidRequest, TollgateError
from gateway.runtime import Runtime

log = logging.getLogger("gateway.api")
JSON = (b"content-type", b"application/json")

# Field that must be present per endpoint, beyond `model`.
_REQUIRED: dict[Endpoint, str] = {
    "chat.completions": "messages",
    "completions": "prompt",
    "embeddings": "input",
}


class OpenAIEndpoint(DialectEndpoint):
    """An ASGI endpoint for one OpenAI route (chat/completions/embeddings)."""

    error_event = staticmethod(openai_error_event)
    dialect = "openai"

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def id_headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        # `x-request-id` is where the OpenAI SDK looks for it (`response._request_id`).
        encoded = request_id.encode()
        return [(b"x-tollgate-request-id", encoded), (b"x-request-id", encoded)]

    async def send_error(self, send: Send, err: TollgateError, request_id: str) -> None:
        await send_openai_error(send, err, request_id)

    def build(
        self,
        raw: bytes,
        principal: Principal,
        request_id: str,
        scope: Scope,
        headers: RequestHeaders,
        runtime: Runtime,
    ) -> Call:
        body = parse_json_object(raw)
        model = body.get("model")
        if model is None:
            raise InvalidRequest("Missing required parameter: 'model'.", param="model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("'model' must be a non-empty string.", param="model")
        self.check(body, runtime)
        client = scope.get("client")
        return Call(
            request_id=request_id,
            dialect="openai",
            endpoint=self.endpoint,
            model=model,
            body=body,
            stream=body.get("stream") is True,
            client_wants_usage=self.wants_usage(body),
            principal=principal,
            client_ip=client[0] if client else None,
            user_agent=headers.user_agent,
            raw_body=raw,
            traceparent=headers.traceparent,
            tracestate=headers.tracestate,
            raw_headers=scope["headers"],
        )

    def check(self, body: dict[str, Any], runtime: Runtime) -> None:
        """The fields this endpoint reads, in the shapes OpenAI accepts (a 400 otherwise)."""
        required = _REQUIRED[self.endpoint]
        if required not in body:
            raise InvalidRequest(f"Missing required parameter: '{required}'.", param=required)
        _check_fields(self.endpoint, body)
        check_completions(self.endpoint, body, runtime.config.server.max_completions)

    def wants_usage(self, body: dict[str, Any]) -> bool:
        """Whether the client asked for a stream's usage chunk (relayed only then)."""
        options = body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True


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
        check_openai_chat(body)
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    if endpoint == "embeddings" and body.get("stream"):
        raise InvalidRequest("Embeddings cannot be streamed.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidRequest(f"'{name}' must be a positive integer.", param=name)


async def send_openai_error(send: Send, err: TollgateError, request_id: str) -> None:
    encoded = request_id.encode()
    headers = [
        JSON,
        (b"x-tollgate-request-id", encoded),
        (b"x-request-id", encoded),
        *raw_headers(err.headers.items()),
    ]
    try:
        await send_whole(send, err.status, headers, openai_error_body(err, request_id))
    except (OSError, RuntimeError):
        log.debug("could not send error response (client gone or response started)")
