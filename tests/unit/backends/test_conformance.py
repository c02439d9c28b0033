"""Every backend type the registry builds keeps the adapter contract (backends/base.py): a call
in its dialect is answered with usage, whole or streamed; an upstream's HTTP error comes back
as a response, never raised; a transport failure is UpstreamUnavailable naming no host; what a
kind declares it can do (embeddings), it does; its probe reaches the server's root."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.backends.base import Backend, UpstreamRequest
from gateway.backends.registry import KINDS, BuildContext, build_backend
from gateway.config.backends_schema import (
    AnthropicBackend,
    AzureOpenAIBackend,
    OpenAIBackend,
    SimBackend,
)
from gateway.errors import UpstreamUnavailable
from gateway.sim.config import SimModel
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_upstream import FakeUpstream

SETTINGS: dict[str, Callable[[], Any]] = {
    "openai": lambda: OpenAIBackend(type="openai", base_url="http://up.test/v1"),
    "anthropic": lambda: AnthropicBackend(type="anthropic", base_url="http://up.test"),
    "azure_openai": lambda: AzureOpenAIBackend(
        type="azure_openai", endpoint="http://up.test", api_version="2024-10-21"
    ),
    "sim": lambda: SimBackend(
        type="sim",
        time_scale=0,
        models=(SimModel(name="fake-chat"), SimModel(name="fake-embed", kind="embedding")),
    ),
}
MODEL = {"anthropic": "claude-fake"}


def test_every_kind_is_covered() -> None:
    assert set(SETTINGS) == set(KINDS)


def _app(kind: str) -> Any:
    return FakeAnthropic().app if kind == "anthropic" else FakeUpstream().app


def _build(kind: str, transport: httpx.AsyncBaseTransport, tokens: TokenCounter) -> Backend:
    return build_backend(kind, SETTINGS[kind](), BuildContext(transport, tokens, {}))


def _chat(kind: str, stream: bool) -> UpstreamRequest:
    dialect = KINDS[kind].capabilities.dialect
    messages = [{"role": "user", "content": "hello there"}]
    if dialect == "anthropic":
        body: dict[str, Any] = {"messages": messages, "max_tokens": 5, "stream": stream}
        return UpstreamRequest("messages", MODEL.get(kind, "fake-chat"), body, stream, False, "r",
                               {}, "anthropic")  # fmt: skip
    body = {"messages": messages, "max_tokens": 5, "stream": stream}
    return UpstreamRequest("chat.completions", "fake-chat", body, stream, True, "r", {}, "openai")


@pytest.fixture(params=sorted(KINDS))
async def backend(request: pytest.FixtureRequest, tokens: TokenCounter) -> AsyncIterator[Backend]:
    kind = request.param
    transport = httpx.ASGITransport(app=_app(kind))
    adapter = _build(kind, transport, tokens)
    adapter.kind = kind  # type: ignore[attr-defined]
    yield adapter
    await adapter.aclose()
    await transport.aclose()


async def test_a_call_in_its_dialect_is_answered_with_usage(backend: Backend) -> None:
    response = await backend.send(_chat(backend.kind, stream=False))  # type: ignore[attr-defined]
    assert response.status == 200 and response.usage is not None
    assert response.usage.output_tokens > 0


async def test_a_stream_in_its_dialect_ends_with_usage(backend: Backend) -> None:
    response = await backend.send(_chat(backend.kind, stream=True))  # type: ignore[attr-defined]
    assert response.status == 200 and response.stream is not None
    blocks = [block async for block in response.stream]
    await response.stream.aclose()
    assert blocks and response.stream.usage().output_tokens > 0
    if backend.capabilities.streaming_usage:
        assert not response.stream.usage().estimated


async def test_embeddings_work_where_declared(backend: Backend) -> None:
    if not backend.capabilities.embeddings:
        pytest.skip("this kind declares no embeddings")
    body = {"input": "hello"}
    request = UpstreamRequest("embeddings", "fake-embed", body, False, False, "r", {}, "openai")
    response = await backend.send(request)
    assert response.status == 200 and response.usage is not None


async def test_the_probe_reaches_the_server(backend: Backend) -> None:
    status, _ = await backend.probe("/health", 2.0)
    assert 200 <= status < 500  # an answer (the fakes serve no /health: 404 is an answer)


@pytest.mark.parametrize("kind", sorted(k for k in KINDS if k != "sim"))
async def test_a_transport_failure_is_unavailable_naming_no_host(
    kind: str, tokens: TokenCounter
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    adapter = _build(kind, transport, tokens)
    with pytest.raises(UpstreamUnavailable) as info:
        await adapter.send(_chat(kind, stream=False))
    assert "up.test" not in info.value.message
    with pytest.raises(UpstreamUnavailable):
        await adapter.probe("/health", 1.0)


@pytest.mark.parametrize("kind", sorted(k for k in KINDS if k != "sim"))
async def test_an_upstream_error_is_a_response_not_an_exception(
    kind: str, tokens: TokenCounter
) -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(500, json={"error": {"message": "boom"}})
    )
    adapter = _build(kind, transport, tokens)
    response = await adapter.send(_chat(kind, stream=False))
    assert response.status == 500 and b"boom" in response.body
