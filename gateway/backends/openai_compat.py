"""Adapter for OpenAI-compatible upstreams (vLLM, SGLang, TGI, llama.cpp, Ollama, OpenAI)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import httpx
import orjson

from gateway.accounting.tokens import TokenCounter
from gateway.backends.base import UpstreamRequest, UpstreamResponse
from gateway.backends.errors import map_transport_error
from gateway.backends.openai_stream import StreamRelay
from gateway.backends.openai_usage import usage_of_body
from gateway.errors import InvalidRequest

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

    dialect = "openai"

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
        url_for: Callable[[str, str], str] | None = None,
    ) -> None:
        self.name = name
        self._url_for = url_for  # per (endpoint, model) URLs (Azure deployments), cached
        self._model_urls: dict[tuple[str, str], httpx.URL] = {}
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
        if request.endpoint not in self._urls:
            raise InvalidRequest(
                f"backend {self.name} (OpenAI-compatible) does not serve {request.endpoint}"
            )
        http_request = httpx.Request(
            "POST",
            self._url(request.endpoint, request.model),
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
            relay = StreamRelay(
                response, body_chunks(response), request, self._tokens, self.name, self._slots
            )
            return UpstreamResponse(response.status_code, headers, stream=relay)
        try:
            content = await read_all(response)
        except (httpx.HTTPError, OSError) as exc:
            raise map_transport_error(exc, self.name) from exc
        finally:
            await response.aclose()
            self._slots.release()
        usage = None
        if response.status_code < 400:
            usage = usage_of_body(content, request, self._tokens)
        return UpstreamResponse(response.status_code, headers, content, usage)

    def _url(self, endpoint: str, model: str) -> httpx.URL:
        if self._url_for is None:
            return self._urls[endpoint]
        key = (endpoint, model)
        url = self._model_urls.get(key)
        if url is None:
            url = self._model_urls[key] = httpx.URL(self._url_for(endpoint, model))
        return url

    def _headers_for(self, request: UpstreamRequest) -> httpx.Headers:
        if not request.headers:
            return self._headers
        merged = self._headers.copy()
        merged.update(request.headers)
        return merged

    async def aclose(self) -> None:
        return None


async def read_all(response: httpx.Response) -> bytes:
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
