"""Error bodies in each dialect, and an upstream error carried across to the other one.

The status is kept wherever both dialects have it (a 429 stays a 429 with its retry-after, a
context-length 400 stays a 400); Anthropic's 529 "overloaded" becomes a 503 for OpenAI clients,
and an OpenAI-side 503 becomes `overloaded_error` (529) for Anthropic clients.
"""

from __future__ import annotations

from typing import Any

import orjson

ANTHROPIC_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

OPENAI_TYPE_BY_ANTHROPIC = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "billing_error": "insufficient_quota",
    "permission_error": "permission_error",
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "timeout_error": "timeout",
    "api_error": "api_error",
    "overloaded_error": "server_error",
}


def anthropic_type(status: int) -> str:
    if status in ANTHROPIC_TYPE_BY_STATUS:
        return ANTHROPIC_TYPE_BY_STATUS[status]
    return "invalid_request_error" if status < 500 else "api_error"


def anthropic_error(status: int, message: str, error_type: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": error_type or anthropic_type(status), "message": message},
        }
    )


def _message_of(body: bytes) -> tuple[str, Any]:
    """The message and the parsed `error` object of an error body in either dialect."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:2000] or "upstream error", None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or "upstream error"), error
    if isinstance(error, str):
        return error, None
    return str(parsed)[:2000], None


def openai_error_to_anthropic(status: int, body: bytes) -> tuple[int, bytes]:
    message, _ = _message_of(body)
    out_status = 529 if status == 503 else status
    return out_status, anthropic_error(out_status, message)


def anthropic_error_to_openai(status: int, body: bytes) -> tuple[int, bytes]:
    message, error = _message_of(body)
    kind = error.get("type") if isinstance(error, dict) else None
    out_status = 503 if status == 529 else status
    error_type = OPENAI_TYPE_BY_ANTHROPIC.get(
        str(kind), "api_error" if status >= 500 else "invalid_request_error"
    )
    code = "context_length_exceeded" if "prompt is too long" in message else None
    return out_status, orjson.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    )
