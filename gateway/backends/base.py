"""The backend adapter contract: send one request upstream, get back the response and its usage.

Usage extraction is part of the contract (as in envoy's translators): an adapter always reports
usage, from the upstream when it says, or counted by Tollgate and marked estimated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.call import Dialect, Endpoint, ResponseMeta, Usage
from gateway.tenancy import PromptCacheAsk


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    endpoint: Endpoint
    model: str
    body: Mapping[str, Any]
    stream: bool
    client_wants_usage: bool
    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    dialect: Dialect = "openai"
    prompt_cache: PromptCacheAsk | None = None  # a rule asked for the vendor's prompt cache


class UpstreamStream(Protocol):
    """Server-sent events to relay, each item one or more whole events, ready for the client."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def usage(self) -> Usage:
        """Usage of what was generated so far; complete once iteration ended."""
        ...

    def meta(self) -> ResponseMeta | None:
        """The response's id, model and finish reasons, as far as the stream told them."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class UpstreamResponse:
    """A finished non-stream response (or any error), or the head of a stream."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    usage: Usage | None = None
    stream: UpstreamStream | None = None
    meta: ResponseMeta | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend type can do, declared once by its kind (registry.py): the pipeline and
    the router ask this, never the adapter's class."""

    dialect: Dialect
    streaming_usage: bool  # reports usage at the end of a stream
    embeddings: bool
    completions: bool  # the legacy /v1/completions endpoint
    batch: bool  # an offline batch API (the batched tier)
    count_tokens: bool  # counts Anthropic-dialect prompts itself
    load_metrics: bool  # a Prometheus endpoint with vLLM's load gauges
    local: bool = False  # GPUs the organisation runs (cached tokens are prefix reuse)
    cache_salt: bool = False  # takes a per-request KV-cache salt (vLLM's `cache_salt`)
    prompt_cache_key: bool = False  # takes OpenAI's `prompt_cache_key`
    responses: bool = False  # serves the Responses API itself (else it is translated to chat)


class Backend(Protocol):
    """One upstream. `send` raises TollgateError subclasses for transport failures (502/504);
    upstream HTTP errors come back as an UpstreamResponse with their status and body."""

    name: str
    total_timeout: float
    capabilities: Capabilities

    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...

    async def probe(self, path: str, wait: float) -> tuple[int, bytes]:
        """GET `path` from the upstream server's root (health checks, load metrics), off the
        request path; raises UpstreamUnavailable when it cannot be reached."""
        ...

    async def aclose(self) -> None: ...
