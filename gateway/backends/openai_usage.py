"""Usage in the OpenAI dialect: read it from a response, or count it when the upstream is silent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from gateway.accounting.tokens import TokenCounter, content_text
from gateway.accounting.usage_guard import estimated_instead, flagged, read_count, trusted
from gateway.backends.base import UpstreamRequest
from gateway.call import ResponseMeta, Usage
from gateway.errors import UpstreamBadResponse


def usage_from_openai(usage: Any) -> Usage | None:
    """OpenAI's usage object (incl. prompt_tokens_details.cached_tokens) in internal form;
    implausible counts give a usage flagged with the anomaly (usage_guard.py)."""
    if not isinstance(usage, dict) or "prompt_tokens" not in usage:
        return None
    bad: list[str] = []
    reported = Usage(
        input_tokens=read_count(usage, "prompt_tokens", bad),
        output_tokens=read_count(usage, "completion_tokens", bad),
        cached_tokens=read_count(usage.get("prompt_tokens_details"), "cached_tokens", bad),
    )
    return flagged(reported, bad)


# What a successful answer of each endpoint holds, at the least.
_REQUIRED = {"chat.completions": "choices", "completions": "choices", "embeddings": "data"}


def usage_of_body(
    content: bytes, request: UpstreamRequest, tokens: TokenCounter
) -> tuple[Usage, ResponseMeta | None]:
    """A whole (non-stream) response's usage (reported, else estimated from its choices) and
    what it says about itself. A 200 that is not the endpoint's JSON object (HTML, a list,
    garbage) is the upstream failing: UpstreamBadResponse, never a success billed as one."""
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        payload = None
    required = _REQUIRED.get(request.endpoint)
    if not isinstance(payload, dict) or (
        required is not None and not isinstance(payload.get(required), list)
    ):
        raise UpstreamBadResponse(
            "The upstream returned an invalid response.", detail=f"body: {content[:200]!r}"
        )
    meta = meta_of(payload)
    reported = usage_from_openai(payload.get("usage"))
    believed = trusted(reported)
    if believed is not None:
        return believed, meta
    choices = payload.get("choices")
    texts = [choice_text(c, "message") for c in choices] if isinstance(choices, list) else []
    return estimated_instead(estimate(request, tokens, "".join(texts)), reported), meta


def meta_of(payload: dict[str, Any], finish_reasons: tuple[str, ...] | None = None) -> ResponseMeta:
    """An OpenAI response's (or chunk's) id and model; finish reasons from its choices unless
    given (a stream's come from earlier chunks)."""
    if finish_reasons is None:
        finish_reasons = tuple(
            str(c["finish_reason"])
            for c in payload.get("choices") or ()
            if isinstance(c, dict) and c.get("finish_reason")
        )
    ident, model = payload.get("id"), payload.get("model")
    return ResponseMeta(
        ident if isinstance(ident, str) else None,
        model if isinstance(model, str) else None,
        finish_reasons,
    )


def usage_of_chunks(
    payloads: Iterable[bytes], request: UpstreamRequest, tokens: TokenCounter
) -> Usage:
    """Estimated usage of a stream from its chunks' `data:` payloads (deltas and tool args)."""
    text: list[str] = []
    for data in payloads:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            text.extend(choice_text(c, "delta") for c in chunk.get("choices") or ())
    return estimate(request, tokens, "".join(text))


def estimate(request: UpstreamRequest, tokens: TokenCounter, completion: str) -> Usage:
    body = request.body
    if request.endpoint == "chat.completions":
        prompt = tokens.count_messages(body.get("messages") or ())
    else:
        prompt = tokens.count_prompt(body.get("prompt", body.get("input")))
    return Usage(prompt, tokens.count(completion), estimated=True)


def choice_text(choice: Any, key: str) -> str:
    """The generated text of one choice (`message` or `delta`), tool-call arguments included."""
    if not isinstance(choice, dict):
        return ""
    if "text" in choice:
        return str(choice.get("text") or "")
    part = choice.get(key)
    if not isinstance(part, dict):
        return ""
    text = content_text(part.get("content"))
    for call in part.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            text += str(function.get("arguments") or "")
    return text
