"""An upstream's error response, read and re-said in the gateway's own words.

Clients never see an upstream's error body as sent: it may be HTML, plain text or another
dialect's JSON, may echo the gateway's own upstream key, and says nothing useful about whose
fault it was. Each becomes one TollgateError that the API edge renders in the client's
dialect: what the upstream said about the request itself (a 400 about a parameter) is kept,
scrubbed of secrets; an upstream 401/403 is the gateway's credentials failing (a 502, never
`invalid_api_key` blaming the client's key); 429 keeps its `retry-after`; anything else is
the upstream failing. The upstream's own words go to `detail` (log and audit only).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.backends.base import UpstreamResponse
from gateway.backends.scrub import Scrubber
from gateway.errors import (
    ServiceUnavailable,
    TollgateError,
    UpstreamAuthFailed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)

_KEEP_HEADERS = ("retry-after",)
# How engines and vendors say a prompt does not fit: OpenAI's clients expect this code for it.
_TOO_LONG = ("prompt is too long", "maximum context length", "context_length_exceeded")


def upstream_error(response: UpstreamResponse, scrub: Scrubber) -> TollgateError:
    status = response.status
    said = scrub(_message_of(response.body) or "")
    detail = f"upstream HTTP {status}: {said[:500] or '(no message)'}"
    headers = {k: v for k, v in response.headers if k in _KEEP_HEADERS}
    if status in (401, 403):
        return UpstreamAuthFailed(
            f"The gateway could not authenticate with the upstream serving this model "
            f"(HTTP {status}). This is not about your key; the gateway's operators are told.",
            detail=detail,
        )
    if status == 429:
        wait = headers.get("retry-after")
        return UpstreamRateLimited(
            "The upstream serving this model is rate limiting requests"
            + (f"; retry after {wait} s." if wait else "; retry shortly."),
            headers=headers,
            detail=detail,
        )
    if 400 <= status < 500 and status not in (408, 409):
        text = said[:1000] if said else f"HTTP {status}"
        too_long = any(m in said.lower() for m in _TOO_LONG)
        return UpstreamRejected(
            f"The upstream rejected the request: {text}",
            status=status,
            code="context_length_exceeded" if too_long else None,
            detail=detail,
        )
    if status in (503, 529):
        return ServiceUnavailable(
            "The upstream serving this model is overloaded; retry shortly.",
            headers=headers or {"retry-after": "1"},
            code="upstream_overloaded",
            detail=detail,
        )
    return UpstreamUnavailable(
        f"The upstream serving this model failed (HTTP {status}).", detail=detail
    )


def _message_of(body: bytes) -> str | None:
    """The message of an error body in either dialect's JSON shape; None for anything else
    (HTML, plain text: not something to show a client)."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return None
