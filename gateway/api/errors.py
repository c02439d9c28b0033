"""TollgateError -> the OpenAI error JSON shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import orjson

from gateway.errors import TollgateError


def openai_error_body(err: TollgateError) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": err.message,
                "type": err.error_type,
                "param": err.param,
                "code": err.code,
            }
        }
    )


def openai_error_event(err: TollgateError) -> bytes:
    """An error inside an already-started stream, as OpenAI sends it (the SDKs raise on it)."""
    return b"data: " + openai_error_body(err) + b"\n\n"
