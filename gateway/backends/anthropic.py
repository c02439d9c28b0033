"""Adapter for Anthropic's Messages API: native pass-through, usage learned on the way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from gateway.accounting.tokens import TokenCounter, anthropic_prompt_tokens
from gateway.accounting.usage_guard import estimated_instead, read_count, trusted
from gateway.backends.base import Capabilities, UpstreamRequest, UpstreamResponse
from gateway.backends.errors import map_transport_error
from gateway.backends.http import (
    body_chunks,
    open_response,
    probe,
    read_and_release,
    relayed,
    server_root,
)
from gateway.backends.prompt_cache import anthropic_breakpoints
from gateway.backends.sse import EventSplitter, event_data
from gateway.call import ResponseMeta, Usage
from gateway.dialects.usage import usage_from_anthropic
from gateway.errors import InvalidRequest, UpstreamBadResponse

_RELAY = frozenset(
    {
        b"content-type",
        b"retry-after",
        b"request-id",
        b"anthropic-ratelimit-requests-limit",
        b"anthropic-ratelimit-requests-remaining",
        b"anthropic-ratelimit-tokens-limit",
        b"anthropic-ratelimit-tokens-remaining",
    }
)
# The client's API version and betas, and the W3C trace context the gateway adds.
_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta", "traceparent", "tracestate")


ANTHROPIC_CAPABILITIES = Capabilities(
    dialect="anthropic", streaming_usage=True, embeddings=False, completions=False, batch=False,
    count_tokens=True, load_metrics=False,
)  # fmt: skip


class AnthropicBackend:
    capabilities = ANTHROPIC_CAPABILITIES

    def __init__(
        self,
        name: str,
        *,
        transport: httpx.AsyncBaseTransport,
        base_url: str,
        tokens: TokenCounter,
        api_key: str | None,
        version: str,
        headers: Mapping[str, str] | None,
        timeout: httpx.Timeout,
        total_timeout: float,
        max_connections: int,
    ) -> None:
        self.name = name
        self.total_timeout = total_timeout
        self._transport = transport
        self._tokens = tokens
        self._root = server_root(base_url)
        self._urls = {
            "messages": httpx.URL(base_url + "/v1/messages"),
            "count_tokens": httpx.URL(base_url + "/v1/messages/count_tokens"),
        }
        self._extensions = {"timeout": timeout.as_dict()}
        self._slots = asyncio.Semaphore(max_connections)
        fixed = {"content-type": "application/json", "anthropic-version": version}
        fixed.update(headers or {})
        if api_key:
            fixed["x-api-key"] = api_key
        self._headers = fixed

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.endpoint not in self._urls:
            raise InvalidRequest(
                f"backend {self.name} (Anthropic) serves chat and messages, not {request.endpoint}"
            )
        ask = request.prompt_cache
        body = anthropic_breakpoints(request.body, ask.min_tokens) if ask else dict(request.body)
        body["model"] = request.model
        outgoing = dict(self._headers)
        for key in _CLIENT_HEADERS:  # the client's API version and betas win over ours
            if key in request.headers:
                outgoing[key] = request.headers[key]
        http_request = httpx.Request(
            "POST",
            self._urls[request.endpoint],
            content=orjson.dumps(body),
            headers=outgoing,
            extensions=self._extensions,
        )
        response = await open_response(self._transport, http_request, self._slots, self.name)
        headers = relayed(response.headers, _RELAY)
        if request.stream and response.status_code < 400:
            relay = EventRelay(response, body, self._tokens, self.name, self._slots)
            return UpstreamResponse(response.status_code, headers, stream=relay)
        content = await read_and_release(response, self._slots, self.name)
        usage = meta = None
        if response.status_code < 400 and request.endpoint == "messages":
            usage, meta = self._usage_of(content, body)
        return UpstreamResponse(response.status_code, headers, content, usage, meta=meta)

    def _usage_of(
        self, content: bytes, body: Mapping[str, object]
    ) -> tuple[Usage, ResponseMeta | None]:
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("content"), list):
            raise UpstreamBadResponse(
                "The upstream returned an invalid response.", detail=f"body: {content[:200]!r}"
            )
        meta = anthropic_meta(payload, payload.get("stop_reason"))
        reported = usage_from_anthropic(payload.get("usage"))
        believed = trusted(reported)
        if believed is not None:
            return believed, meta
        blocks = payload.get("content")
        text = (
            "".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))
            if isinstance(blocks, list)
            else ""
        )
        prompt = anthropic_prompt_tokens(body, self._tokens)
        estimate = Usage(prompt, self._tokens.count(text), estimated=True)
        return estimated_instead(estimate, reported), meta

    async def probe(self, path: str, wait: float) -> tuple[int, bytes]:
        headers = httpx.Headers(self._headers)
        return await probe(self._transport, self._root + path, headers, wait, self.name)

    async def aclose(self) -> None:
        return None


def anthropic_meta(message: dict[str, Any], stop_reason: object) -> ResponseMeta:
    ident, model = message.get("id"), message.get("model")
    return ResponseMeta(
        ident if isinstance(ident, str) else None,
        model if isinstance(model, str) else None,
        (stop_reason,) if isinstance(stop_reason, str) else (),
    )


class EventRelay:
    """Relays Anthropic stream events untouched; usage comes from `message_start` (prompt and
    cache counts) and `message_delta` (cumulative output), or is counted if never reported."""

    def __init__(
        self,
        response: httpx.Response,
        body: Mapping[str, object],
        tokens: TokenCounter,
        backend: str,
        slots: asyncio.Semaphore,
    ) -> None:
        self._response = response
        self._body = body
        self._tokens = tokens
        self._backend = backend
        self._slots: asyncio.Semaphore | None = slots
        self._start: dict[str, object] = {}
        self._output: int | None = None
        self._message: dict[str, Any] = {}
        self._stop: object = None
        self._seen: list[bytes] = []  # relayed blocks, for an estimate if usage never comes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        splitter = EventSplitter()
        try:
            async for raw in body_chunks(self._response):
                block = splitter.feed_block(raw)
                if block:
                    if self._output is None:
                        self._seen.append(block)
                    self._learn(block)
                    yield block
        except (httpx.HTTPError, OSError) as exc:
            raise map_transport_error(exc, self._backend) from exc

    def _learn(self, block: bytes) -> None:
        for event in block[:-2].split(b"\n\n"):
            data = event_data(event + b"\n\n")
            if not data or data[:1] != b"{":
                continue
            if b'"message_start"' in data or b'"message_delta"' in data:
                try:
                    payload = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(payload, dict):
                    self._learn_event(payload)

    def _learn_event(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type")
        if kind == "message_start":
            message = payload.get("message")
            self._message = message if isinstance(message, dict) else {}
            usage = self._message.get("usage")
            self._start = dict(usage) if isinstance(usage, dict) else {}
        elif kind == "message_delta":
            delta = payload.get("delta")
            self._stop = delta.get("stop_reason") if isinstance(delta, dict) else None
            usage = payload.get("usage")
            usage = usage if isinstance(usage, dict) else {}
            self._start.update({k: v for k, v in usage.items() if v is not None})
            bad: list[str] = []
            self._output = read_count(usage, "output_tokens", bad)
            if bad:
                self._output = None  # implausible: estimated from the text instead
                self._start["output_tokens"] = None
            self._seen.clear()

    def usage(self) -> Usage:
        reported = usage_from_anthropic(self._start, self._output)
        believed = trusted(reported)
        if believed is not None and self._output is not None:
            return believed
        prompt = (
            believed.input_tokens
            if believed is not None
            else anthropic_prompt_tokens(self._body, self._tokens)
        )
        text = []
        for block in self._seen:
            for event in block[:-2].split(b"\n\n"):
                data = event_data(event + b"\n\n")
                if data and b'"text_delta"' in data:
                    text.append(str((orjson.loads(data).get("delta") or {}).get("text", "")))
        estimate = Usage(prompt, self._tokens.count("".join(text)), estimated=True)
        return estimated_instead(estimate, reported)

    def meta(self) -> ResponseMeta | None:
        return anthropic_meta(self._message, self._stop) if self._message else None

    async def aclose(self) -> None:
        slots, self._slots = self._slots, None
        if slots is None:
            return
        try:
            await self._response.aclose()
        finally:
            slots.release()
