from __future__ import annotations

import orjson
import pytest

from gateway.api.errors import openai_error_body, openai_error_event
from gateway.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    PolicyDenied,
    TollgateError,
    UpstreamTimeout,
    UpstreamUnavailable,
)


@pytest.mark.parametrize(
    ("error", "status", "error_type", "code"),
    [
        (InvalidRequest("bad", param="messages"), 400, "invalid_request_error", None),
        (AuthenticationFailed("who"), 401, "invalid_request_error", "invalid_api_key"),
        (ModelNotFound("gone"), 404, "invalid_request_error", "model_not_found"),
        (PayloadTooLarge("big"), 413, "invalid_request_error", "request_too_large"),
        (PolicyDenied("no", status=429, code="budget"), 429, "policy_error", "budget"),
        (UpstreamUnavailable("down"), 502, "api_error", "upstream_unreachable"),
        (UpstreamTimeout("slow"), 504, "api_error", "upstream_timeout"),
    ],
)
def test_openai_shape_and_status(
    error: TollgateError, status: int, error_type: str, code: str | None
) -> None:
    body = orjson.loads(openai_error_body(error))
    assert error.status == status
    assert body == {
        "error": {"message": error.message, "type": error_type, "param": error.param, "code": code}
    }


def test_stream_error_event_is_one_sse_event() -> None:
    event = openai_error_event(UpstreamUnavailable("cut"))
    assert event.startswith(b"data: {") and event.endswith(b"\n\n")
    assert orjson.loads(event[6:])["error"]["code"] == "upstream_unreachable"
