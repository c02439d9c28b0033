"""Error types in each dialect: Anthropic's by HTTP status, OpenAI's for Anthropic's (an
upstream's error body is never passed on: backends/upstream_errors.py re-says it)."""

from __future__ import annotations

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
