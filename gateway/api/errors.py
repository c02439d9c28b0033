"""TollgateError -> the OpenAI error JSON shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import orjson

from gateway.dialects.errors import anthropic_type
from gateway.errors import TollgateError


def client_message(err: TollgateError, request_id: str | None) -> str:
    """What the client reads: the gateway's own words; for a failure on our side, the request
    id to quote to the operators (who find the details under it in the log and audit)."""
    if err.status >= 500 and request_id:
        return f"{err.message} (request {request_id})"
    return err.message


def openai_error_body(err: TollgateError, request_id: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": client_message(err, request_id),
                "type": err.error_type,
                "param": err.param,
                "code": err.code,
            }
        }
    )


def openai_error_event(err: TollgateError) -> bytes:
    """An error inside an already-started stream, as OpenAI sends it (the SDKs raise on it)."""
    return b"data: " + openai_error_body(err) + b"\n\n"


def anthropic_error_type(err: TollgateError) -> str:
    """Anthropic's error type for an error Tollgate raised (its status is kept as is)."""
    if err.status == 401:
        return "authentication_error"
    if err.status == 503:
        return "api_error"  # ours (a store down), not Anthropic's fleet-wide "overloaded"
    return anthropic_type(err.status)


def anthropic_error_body(err: TollgateError, request_id: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {
                "type": anthropic_error_type(err),
                "message": client_message(err, request_id),
            },
            "request_id": request_id,
        }
    )


def anthropic_error_event(err: TollgateError) -> bytes:
    """An error inside an already-started stream, as Anthropic sends it."""
    return b"event: error\ndata: " + anthropic_error_body(err) + b"\n\n"
