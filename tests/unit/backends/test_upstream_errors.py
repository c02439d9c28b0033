"""An upstream's error is said again in the gateway's words: never its body as sent, never a
secret, never the client's key blamed for the gateway's own."""

from __future__ import annotations

import orjson
import pytest

from gateway.backends.base import UpstreamResponse
from gateway.backends.scrub import Scrubber
from gateway.backends.upstream_errors import upstream_error
from gateway.errors import (
    ServiceUnavailable,
    UpstreamAuthFailed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)

SECRET = "sk-UPSTREAM-0123456789abcdef"
SCRUB = Scrubber([SECRET])


def response(
    status: int, body: object, headers: tuple[tuple[str, str], ...] = ()
) -> UpstreamResponse:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return UpstreamResponse(status, headers, raw)


def openai_body(message: str) -> dict[str, object]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


@pytest.mark.parametrize("status", [401, 403])
def test_an_upstream_auth_failure_is_the_gateways_not_the_clients(status: int) -> None:
    err = upstream_error(
        response(status, openai_body(f"Incorrect API key: Bearer {SECRET}")), SCRUB
    )
    assert isinstance(err, UpstreamAuthFailed) and err.status == 502
    assert err.code == "upstream_auth_failed" and "not about your key" in err.message
    assert SECRET not in err.message and SECRET not in (err.detail or "")


def test_a_rejected_request_keeps_the_upstreams_reason_without_secrets() -> None:
    said = {"type": "invalid_request_error", "message": f"prompt is too long (key {SECRET})"}
    anthropic = {"type": "error", "error": said}
    err = upstream_error(response(400, anthropic), SCRUB)
    assert isinstance(err, UpstreamRejected) and err.status == 400
    assert err.code == "context_length_exceeded"
    assert "prompt is too long" in err.message and SECRET not in err.message
    assert "[redacted]" in err.message


def test_html_and_text_bodies_never_reach_the_client() -> None:
    for body in (b"<html><body>502 Bad Gateway nginx</body></html>", b"oops: upstream crashed"):
        err = upstream_error(response(500, body), SCRUB)
        assert type(err) is UpstreamUnavailable and err.status == 502
        assert "nginx" not in err.message and "crashed" not in err.message
        assert err.message == "The upstream serving this model failed (HTTP 500)."
    rejected = upstream_error(response(404, b"<html>not here</html>"), SCRUB)
    assert rejected.message == "The upstream rejected the request: HTTP 404"


def test_rate_limits_and_overload_keep_their_retry_after() -> None:
    limited = upstream_error(response(429, openai_body("slow"), (("retry-after", "7"),)), SCRUB)
    assert isinstance(limited, UpstreamRateLimited) and limited.headers == {"retry-after": "7"}
    for status in (503, 529):
        busy = upstream_error(response(status, b"overloaded"), SCRUB)
        assert isinstance(busy, ServiceUnavailable) and busy.status == 503
        assert busy.headers["retry-after"]


def test_the_scrubber_removes_configured_secrets_and_key_shapes() -> None:
    scrub = Scrubber(["hunter2-secret-value"])
    text = "key hunter2-secret-value, Bearer abcdefghijklmnop, sk-ant-api03-xyzxyzxyz"
    assert scrub(text) == "key [redacted], [redacted], [redacted]"
