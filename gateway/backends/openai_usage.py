"""Usage in the OpenAI dialect: read it from a response, or count it when the upstream is silent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from gateway.accounting.tokens import TokenCounter, content_text, prompt_tokens
from gateway.accounting.usage_guard import estimated_instead, flagged, read_count, trusted
from gateway.backends.base import UpstreamRequest
from gateway.call import ResponseMeta, Usage
from gateway.errors import UpstreamBadResponse


def usage_from_openai(usage: Any) -> Usage | None:
    """OpenAI's usage object (incl. prompt_tokens_details.cached_tokens), or the Responses
    API's (input_tokens, output_tokens, input_tokens_details), in internal form; implausible
    counts give a usage flagged with the anomaly (usage_guard.py)."""
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage:
        names = ("prompt_tokens", "completion_tokens", "prompt_tokens_details")
    elif "input_tokens" in usage and "output_tokens" in usage:
        names = ("input_tokens", "output_tokens", "input_tokens_details")
    else:
        return None
    bad: list[str] = []
    reported = Usage(
        input_tokens=read_count(usage, names[0], bad),
        output_tokens=read_count(usage, names[1], bad),
        cached_tokens=read_count(usage.get(names[2]), "cached_tokens", bad),
    )
    return flagged(reported, bad)


# What a successful answer of each endpoint holds, at the least.
_REQUIRED = {"chat.completions": "choices", "completions": "choices", "embeddings": "data",
             "responses": "output"}  # fmt: skip


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
    if request.endpoint == "responses":
        texts = [output_text(item) for item in payload.get("output") or ()]
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
            delta = chunk.get("delta")  # a Responses event's text or arguments
            if isinstance(delta, str) and str(chunk.get("type", "")).endswith(".delta"):
                text.append(delta)
    return estimate(request, tokens, "".join(text))


def estimate(request: UpstreamRequest, tokens: TokenCounter, completion: str) -> Usage:
    return Usage(
        prompt_tokens(request.endpoint, request.body, tokens),
        tokens.count(completion),
        estimated=True,
    )


def output_text(item: Any) -> str:
    """A Responses output item's generated text (message text, function call arguments)."""
    if not isinstance(item, dict):
        return ""
    if item.get("type") == "function_call":
        return str(item.get("arguments") or "")
    return content_text(item.get("content"))


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
