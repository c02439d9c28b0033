"""Adapter for OpenAI-compatible upstreams (vLLM, SGLang, TGI, llama.cpp, Ollama, OpenAI)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from gateway.accounting.tokens import TokenCounter, content_text
from gateway.backends.base import UpstreamRequest, UpstreamResponse
from gateway.backends.errors import map_transport_error
from gateway.backends.sse import EventSplitter, event_data
from gateway.call import Usage

_USAGE_NULL = re.compile(rb'"usage"\s*:\s*null')
_USAGE_NULL_FIELD = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')
_PATHS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
# Upstream response headers worth relaying; hop-by-hop and length headers are the server's job.
_RELAY = frozenset(
    {
        b"content-type",
        b"retry-after",
        b"x-request-id",
        b"openai-processing-ms",
        b"x-ratelimit-limit-requests",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-limit-tokens",
        b"x-ratelimit-remaining-tokens",
    }
)


class OpenAICompatBackend:
    """Sends the client's body through untouched except `model` and `stream_options`."""

    def __init__(
        self,
        name: str,
        *,
        transport: httpx.AsyncBaseTransport,
        base_url: str,
        tokens: TokenCounter,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout,
        total_timeout: float,
        max_connections: int,
    ) -> None:
        self.name = name
        self.total_timeout = total_timeout
        self._transport = transport
        self._base_url = base_url
        self._tokens = tokens
        self._urls = {e: httpx.URL(base_url + path) for e, path in _PATHS.items()}
        self._extensions = {"timeout": timeout.as_dict()}
        self._slots = asyncio.Semaphore(max_connections)
        fixed = {"content-type": "application/json", **(headers or {})}
        if api_key:
            fixed["authorization"] = f"Bearer {api_key}"
        self._headers = httpx.Headers(fixed)  # normalised once, copied cheaply per request

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        body = dict(request.body)
        body["model"] = request.model
        if request.stream and request.endpoint != "embeddings":
            options = body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        # A plain httpx.Request with a pre-parsed URL, straight to the shared transport.
        http_request = httpx.Request(
            "POST",
            self._urls[request.endpoint],
            content=orjson.dumps(body),
            headers=self._headers_for(request),
            extensions=self._extensions,
        )
        await self._slots.acquire()
        try:
            response = await self._transport.handle_async_request(http_request)
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            self._slots.release()
            raise map_transport_error(exc, self.name) from exc
        except BaseException:
            self._slots.release()
            raise
        headers = _relayed(response.headers)
        if request.stream and response.status_code < 400:
            relay = _StreamRelay(response, request, self._tokens, self.name, self._slots)
            return UpstreamResponse(response.status_code, headers, stream=relay)
        try:
            content = await _read_all(response)
        except (httpx.HTTPError, OSError) as exc:
            raise map_transport_error(exc, self.name) from exc
        finally:
            await response.aclose()
            self._slots.release()
        usage = None
        if response.status_code < 400:
            usage = _usage_of_body(content, request, self._tokens)
        return UpstreamResponse(response.status_code, headers, content, usage)

    def _headers_for(self, request: UpstreamRequest) -> httpx.Headers:
        if not request.headers:
            return self._headers
        merged = self._headers.copy()
        merged.update(request.headers)
        return merged

    async def aclose(self) -> None:
        return None


async def _read_all(response: httpx.Response) -> bytes:
    """The body straight from the transport's stream: `aread` adds a decoder, a re-chunker and
    a context manager per chunk that an identity-encoded body does not need."""
    chunks = [chunk async for chunk in body_chunks(response)]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """Decoded body chunks: the raw stream when the upstream did not compress (we never ask it
    to), httpx's decoding iterator when it did anyway."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    stream = response.stream
    if encoding in ("", "identity") and isinstance(stream, httpx.AsyncByteStream):
        return stream.__aiter__()
    return response.aiter_bytes()


def _relayed(headers: httpx.Headers) -> tuple[tuple[str, str], ...]:
    """Relay-worthy headers from the raw pairs: `items()` would decode every header first,
    measured at ~0.1 ms per call on the hot path."""
    return tuple(
        (key.decode("latin-1").lower(), value.decode("latin-1"))
        for key, value in headers.raw
        if key.lower() in _RELAY
    )


def _usage_of_body(content: bytes, request: UpstreamRequest, tokens: TokenCounter) -> Usage:
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict):
        reported = usage_from_openai(payload.get("usage"))
        if reported is not None:
            return reported
        texts = [_choice_text(c, "message") for c in payload.get("choices") or ()]
        return _estimate(request, tokens, "".join(texts))
    return _estimate(request, tokens, "")


def usage_from_openai(usage: Any) -> Usage | None:
    """OpenAI's usage object (incl. prompt_tokens_details.cached_tokens) in internal form."""
    if not isinstance(usage, dict) or "prompt_tokens" not in usage:
        return None
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
    )


def _estimate(request: UpstreamRequest, tokens: TokenCounter, completion: str) -> Usage:
    body = request.body
    if request.endpoint == "chat.completions":
        prompt = tokens.count_messages(body.get("messages") or ())
    else:
        prompt = tokens.count_prompt(body.get("prompt", body.get("input")))
    return Usage(prompt, tokens.count(completion), estimated=True)


def _choice_text(choice: Any, key: str) -> str:
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


class _StreamRelay:
    """Relays whole events as they arrive; learns usage from the usage chunk, which it removes
    when the client did not ask for it, and counts tokens itself if the upstream never says."""

    def __init__(
        self,
        response: httpx.Response,
        request: UpstreamRequest,
        tokens: TokenCounter,
        backend: str,
        slots: asyncio.Semaphore,
    ) -> None:
        self._response = response
        self._slots: asyncio.Semaphore | None = slots
        self._request = request
        self._tokens = tokens
        self._backend = backend
        self._reported: Usage | None = None
        self._payloads: list[bytes] = []

    async def __aiter__(self) -> AsyncIterator[bytes]:
        splitter = EventSplitter()
        try:
            async for raw in body_chunks(self._response):
                events = splitter.feed(raw)
                if events:
                    out = [kept for e in events if (kept := self._filter(e)) is not None]
                    if out:
                        yield out[0] if len(out) == 1 else b"".join(out)
            rest = splitter.rest()
            if rest.strip():
                yield rest
        except (httpx.HTTPError, OSError) as exc:
            raise map_transport_error(exc, self._backend) from exc

    def _filter(self, event: bytes) -> bytes | None:
        """The event as the client should see it, or None to drop it."""
        data = event_data(event)
        if data is None or data == b"[DONE]":
            return event
        at = data.find(b'"usage"')
        if at >= 0:
            if data.startswith(b'"usage":null', at) or _USAGE_NULL.match(data, at):
                if not self._request.client_wants_usage:
                    # We asked for usage on the client's behalf: hide the null it adds
                    # (compact JSON, as vLLM and OpenAI send it, skips the regex).
                    compact = event.replace(b',"usage":null', b"", 1)
                    if len(compact) < len(event):
                        event = compact
                    else:
                        event = _USAGE_NULL_FIELD.sub(b"", event, count=1)
            else:
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    return event
                usage = usage_from_openai(chunk.get("usage")) if isinstance(chunk, dict) else None
                if usage is not None:
                    self._reported = usage
                    if not self._request.client_wants_usage and not chunk.get("choices"):
                        return None
        if self._reported is None:
            self._payloads.append(data)
        return event

    def usage(self) -> Usage:
        if self._reported is not None:
            return self._reported
        text: list[str] = []
        for data in self._payloads:
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                text.extend(_choice_text(c, "delta") for c in chunk.get("choices") or ())
        return _estimate(self._request, self._tokens, "".join(text))

    async def aclose(self) -> None:
        """Closing before the end drops the upstream connection, which cancels the generation."""
        try:
            await self._response.aclose()
        finally:
            if self._slots is not None:
                self._slots.release()
                self._slots = None
