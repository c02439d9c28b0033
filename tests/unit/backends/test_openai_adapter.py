"""The OpenAI-compatible adapter against httpx.MockTransport: usage is always learnt."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.backends.base import UpstreamRequest
from gateway.backends.openai_compat import OpenAICompatBackend
from gateway.backends.registry import OPENAI
from gateway.errors import UpstreamUnavailable


def backend(
    handler: Callable[[httpx.Request], httpx.Response], tokens: TokenCounter
) -> OpenAICompatBackend:
    return OpenAICompatBackend(
        "mock",
        transport=httpx.MockTransport(handler),
        base_url="http://up/v1",
        tokens=tokens,
        api_key="sk-x",
        timeout=httpx.Timeout(5),
        total_timeout=5,
        max_connections=4,
        capabilities=OPENAI,
    )


def request(stream: bool, wants_usage: bool = False) -> UpstreamRequest:
    body = {
        "model": "alias",
        "messages": [{"role": "user", "content": "hello world"}],
        "stream": stream,
    }
    return UpstreamRequest("chat.completions", "upstream-model", body, stream, wants_usage, "r1")


def sse(*payloads: object) -> AsyncIterator[bytes]:
    """A streamed body, delivered in small pieces that cut through events."""
    body = b"".join(b"data: " + orjson.dumps(p) + b"\n\n" for p in payloads) + b"data: [DONE]\n\n"

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    return pieces()


async def test_non_stream_usage_reported(tokens: TokenCounter) -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(
            200,
            json={
                "choices": [],
                "usage": {
                    "prompt_tokens": 7,
                    "completion_tokens": 3,
                    "prompt_tokens_details": {"cached_tokens": 4},
                },
            },
        )

    response = await backend(handler, tokens).send(request(False))
    assert response.usage is not None
    assert (
        response.usage.input_tokens,
        response.usage.output_tokens,
        response.usage.cached_tokens,
        response.usage.estimated,
    ) == (7, 3, 4, False)
    sent = orjson.loads(seen[0].content)
    assert sent["model"] == "upstream-model" and "stream_options" not in sent
    assert seen[0].headers["authorization"] == "Bearer sk-x"


async def test_non_stream_usage_estimated_when_missing(tokens: TokenCounter) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "one two three"}}
                ]
            },
        )

    response = await backend(handler, tokens).send(request(False))
    assert response.usage is not None and response.usage.estimated
    assert response.usage.output_tokens == 3
    assert response.usage.input_tokens == tokens.count_messages(
        [{"role": "user", "content": "hello world"}]
    )


@pytest.mark.parametrize("wants_usage", [False, True])
async def test_stream_usage_chunk_removed_unless_asked(
    tokens: TokenCounter, wants_usage: bool
) -> None:
    seen: list[httpx.Request] = []
    chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        body = sse(chunk, {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    response = await backend(handler, tokens).send(request(True, wants_usage))
    assert response.stream is not None
    out = b"".join([part async for part in response.stream])
    await response.stream.aclose()
    assert orjson.loads(seen[0].content)["stream_options"] == {"include_usage": True}
    assert (b'"usage":{' in out) is wants_usage
    assert (b'"usage":null' in out) is wants_usage
    assert out.endswith(b"data: [DONE]\n\n")
    usage = response.stream.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (5, 1, False)


async def test_stream_usage_estimated_when_upstream_never_reports(tokens: TokenCounter) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        body = sse(
            *(
                {"choices": [{"index": 0, "delta": {"content": w}}]}
                for w in ["one", " two", " three"]
            )
        )
        return httpx.Response(200, content=body)

    response = await backend(handler, tokens).send(request(True))
    assert response.stream is not None
    _ = [part async for part in response.stream]
    usage = response.stream.usage()
    assert usage.estimated and usage.output_tokens == 3


async def test_upstream_error_is_relayed_not_raised(tokens: TokenCounter) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"error": {"message": "slow"}}, headers={"retry-after": "3"}
        )

    response = await backend(handler, tokens).send(request(True))
    assert response.status == 429 and response.stream is None
    assert ("retry-after", "3") in response.headers


async def test_transport_failure_maps_to_502(tokens: TokenCounter) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(UpstreamUnavailable):
        await backend(handler, tokens).send(request(False))


async def test_spaced_usage_null_is_hidden_too(tokens: TokenCounter) -> None:
    body = (
        b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": null}\n\n'
        b"data: [DONE]\n\n"
    )

    async def pieces() -> AsyncIterator[bytes]:
        yield body

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=pieces())

    response = await backend(handler, tokens).send(request(True))
    assert response.stream is not None
    out = b"".join([part async for part in response.stream])
    assert b"usage" not in out
    assert b'"content": "hi"' in out


async def test_compressed_upstream_bodies_are_decoded(tokens: TokenCounter) -> None:
    import gzip

    payload = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}})

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=gzip.compress(payload), headers={"content-encoding": "gzip"}
        )

    response = await backend(handler, tokens).send(request(False))
    assert response.body == payload
    assert response.usage is not None and response.usage.input_tokens == 2


@pytest.mark.parametrize("wants_usage", [False, True])
async def test_usage_chunk_in_the_same_read_as_content(
    tokens: TokenCounter, wants_usage: bool
) -> None:
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
        b"data: [DONE]\n\n"
    )

    async def one_read() -> AsyncIterator[bytes]:
        yield body

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=one_read())

    response = await backend(handler, tokens).send(request(True, wants_usage))
    assert response.stream is not None
    out = b"".join([part async for part in response.stream])
    assert (
        out == body
        if wants_usage
        else out == (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\ndata: [DONE]\n\n')
    )
    assert response.stream.usage().input_tokens == 3
