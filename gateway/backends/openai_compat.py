"""Adapter for OpenAI-compatible upstreams (vLLM, SGLang, TGI, llama.cpp, Ollama, OpenAI)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import httpx
import orjson

from gateway.accounting.tokens import TokenCounter
from gateway.backends.base import Capabilities, UpstreamRequest, UpstreamResponse
from gateway.backends.coalesce import Coalescer
from gateway.backends.http import (
    body_chunks,
    open_response,
    probe,
    read_and_release,
    relayed,
    server_root,
)
from gateway.backends.openai_stream import StreamRelay
from gateway.backends.openai_usage import usage_of_body
from gateway.backends.prompt_cache import openai_cache_key
from gateway.errors import InvalidRequest

_PATHS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
}
# Upstream response headers worth relaying; hop-by-hop and length headers are the server's job.
_RELAY = frozenset(
    {
        b"content-type",
        b"retry-after",
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
        url_for: Callable[[str, str], str] | None = None,
        capabilities: Capabilities,
        coalesce: tuple[float, int] | None = None,
    ) -> None:
        self.name = name
        self.capabilities = capabilities
        self._root = server_root(base_url)
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
        # Concurrent embedding calls merged into one upstream call (window seconds, inputs).
        self._coalescer = Coalescer(self._send, tokens, *coalesce) if coalesce else None

    @property
    def coalesced(self) -> int:
        """Upstream embedding calls that carried more than one caller's inputs."""
        return self._coalescer.merged if self._coalescer is not None else 0

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if self._coalescer is not None and request.endpoint == "embeddings":
            return await self._coalescer.send(request)
        return await self._send(request)

    async def _send(self, request: UpstreamRequest) -> UpstreamResponse:
        ask = request.prompt_cache
        if ask is not None and self.capabilities.prompt_cache_key:
            body = openai_cache_key(request.body, ask.key)
        else:
            body = dict(request.body)
        body["model"] = request.model
        if request.stream and request.endpoint not in ("embeddings", "responses"):
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
        response = await open_response(self._transport, http_request, self._slots, self.name)
        headers = relayed(response.headers, _RELAY)
        if request.stream and response.status_code < 400:
            relay = StreamRelay(
                response, body_chunks(response), request, self._tokens, self.name, self._slots
            )
            return UpstreamResponse(response.status_code, headers, stream=relay)
        content = await read_and_release(response, self._slots, self.name)
        usage = meta = None
        if response.status_code < 400:
            usage, meta = usage_of_body(content, request, self._tokens)
        return UpstreamResponse(response.status_code, headers, content, usage, meta=meta)

    def _url(self, endpoint: str, model: str) -> httpx.URL:
        if self._url_for is None:
            return self._urls[endpoint]
        key = (endpoint, model)
        url = self._model_urls.get(key)
        if url is None:
            url = self._model_urls[key] = httpx.URL(self._url_for(endpoint, model))
        return url

    def _headers_for(self, request: UpstreamRequest) -> httpx.Headers:
        """Ours plus the call's (trace context; they win on a clash), built from raw pairs:
        Headers.copy() + update() re-parses both, on every traced call."""
        if not request.headers:
            return self._headers
        extra = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()
        ]
        names = {k for k, _ in extra}
        return httpx.Headers(
            [*(kv for kv in self._headers.raw if kv[0].lower() not in names), *extra]
        )

    async def probe(self, path: str, wait: float) -> tuple[int, bytes]:
        return await probe(self._transport, self._root + path, self._headers, wait, self.name)

    async def aclose(self) -> None:
        return None
