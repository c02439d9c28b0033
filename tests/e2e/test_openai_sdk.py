"""The real `tollgate serve` process in front of a fake upstream, driven by the official SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import KEY, NARROW_KEY
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import GatewayProcess

_CLIENTS: dict[tuple[str, str], openai.OpenAI] = {}


def client(gw: GatewayProcess, key: str = KEY) -> openai.OpenAI:
    """One SDK client per gateway and key, closed when the module is done: a client left to
    the garbage collector with a pooled connection warns (an error here) at a random moment."""
    found = _CLIENTS.get((gw.url, key))
    if found is None:
        found = _CLIENTS[(gw.url, key)] = openai.OpenAI(
            base_url=gw.url + "/v1", api_key=key, max_retries=0
        )
    return found


@pytest.fixture(autouse=True, scope="module")
def _close_clients() -> Iterator[None]:
    yield
    for c in _CLIENTS.values():
        c.close()
    _CLIENTS.clear()


def test_chat_non_stream_sync(gateway_proc: GatewayProcess) -> None:
    raw = client(gateway_proc).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake."
    assert completion.usage is not None and completion.usage.prompt_tokens == 11
    assert len(raw.headers["x-tollgate-request-id"]) == 32
    assert raw.headers["x-tollgate-backend"] == "fake"


async def test_chat_non_stream_async(gateway_proc: GatewayProcess) -> None:
    async with openai.AsyncOpenAI(
        base_url=gateway_proc.url + "/v1", api_key=KEY, max_retries=0
    ) as aclient:
        completion = await aclient.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content == "Hello from the fake."


async def test_chat_stream_async(gateway_proc: GatewayProcess) -> None:
    async with openai.AsyncOpenAI(
        base_url=gateway_proc.url + "/v1", api_key=KEY, max_retries=0
    ) as aclient:
        stream = await aclient.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "one two three four five"


def test_stream_without_include_usage_hides_usage_chunk(
    gateway_proc: GatewayProcess, upstream: tuple[FakeUpstream, str]
) -> None:
    chunks = list(
        client(gateway_proc).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk must not reach the client"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three four five"
    # ... while the upstream was asked for usage all the same.
    sent = upstream[0].requests[-1]
    assert sent["stream_options"] == {"include_usage": True}


def test_stream_with_include_usage_keeps_usage_chunk(gateway_proc: GatewayProcess) -> None:
    chunks = list(
        client(gateway_proc).chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_unreported_usage_is_counted_and_marked_estimated(gateway_proc: GatewayProcess) -> None:
    client(gateway_proc).chat.completions.create(
        model="nousage", messages=[{"role": "user", "content": "count me"}]
    )
    list(
        client(gateway_proc).chat.completions.create(
            model="nousage", messages=[{"role": "user", "content": "count me"}], stream=True
        )
    )
    lines = _access_lines(gateway_proc, "nousage", 2)
    for line in lines:
        assert line["usage_estimated"] is True
        assert line["output_tokens"] > 0 and line["input_tokens"] > 0


def test_completions_and_embeddings(gateway_proc: GatewayProcess) -> None:
    c = client(gateway_proc)
    completion = c.completions.create(model="chat", prompt="say")
    assert completion.choices[0].text == " done"
    embedding = c.embeddings.create(model="emb", input="hello", encoding_format="float")
    assert embedding.data[0].embedding == [0.6, 0.8]


def test_models_list_and_retrieve(gateway_proc: GatewayProcess) -> None:
    c = client(gateway_proc)
    ids = {m.id for m in c.models.list()}
    assert {"chat", "emb", "slow"} <= ids
    assert c.models.retrieve("chat").id == "chat"
    assert [m.id for m in client(gateway_proc, NARROW_KEY).models.list()] == ["chat"]
    with pytest.raises(openai.NotFoundError):
        client(gateway_proc, NARROW_KEY).models.retrieve("emb")


def test_passthrough_fields_reach_upstream_untouched(
    gateway_proc: GatewayProcess, upstream: tuple[FakeUpstream, str]
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    client(gateway_proc).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice="auto",
        seed=7,
        user="u-1",
        logprobs=True,
        n=1,
        response_format={"type": "json_object"},
        extra_body={"vendor_knob": {"x": 1}},
    )
    sent = upstream[0].requests[-1]
    assert sent["model"] == "fake-chat"
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["seed"] == 7 and sent["user"] == "u-1" and sent["logprobs"] is True
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["vendor_knob"] == {"x": 1}
    assert upstream[0].headers[-1]["authorization"] == "Bearer sk-upstream-secret"


def test_an_unreachable_upstream_is_retried_then_a_503_naming_nothing_internal(
    gateway_proc: GatewayProcess,
) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client(gateway_proc).chat.completions.create(
            model="down", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 503
    assert info.value.body["code"] in ("upstream_exhausted", "no_healthy_replica")  # type: ignore[index]
    assert info.value.response.headers["retry-after"]
    message = info.value.body["message"]  # type: ignore[index]
    assert "127.0.0.1" not in message and "down" not in message, message


def test_an_upstream_that_times_out_is_retried_then_a_503(gateway_proc: GatewayProcess) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client(gateway_proc).chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 503
    assert info.value.body["code"] in ("upstream_exhausted", "no_healthy_replica")  # type: ignore[index]


def test_an_upstream_429_keeps_its_status_and_retry_after(gateway_proc: GatewayProcess) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client(gateway_proc).chat.completions.create(
            model="limited", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.response.headers["retry-after"] == "7"
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "upstream_rate_limited"
    assert "retry after 7 s" in body["message"]


def test_client_disconnect_cancels_upstream(
    gateway_proc: GatewayProcess, upstream: tuple[FakeUpstream, str]
) -> None:
    fake = upstream[0]
    fake.cancelled.clear()
    stream = client(gateway_proc).chat.completions.create(
        model="endless", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    stream.close()  # the client goes away mid-stream
    assert fake.cancelled.wait(5), "the upstream generation was not cancelled"
    line = _access_lines(gateway_proc, "endless", 1)[0]
    assert line["disconnected"] is True and line["output_tokens"] >= 3


def test_client_giving_up_on_a_non_stream_call_cancels_it(gateway_proc: GatewayProcess) -> None:
    """The upstream takes 3 s; the client leaves after 0.6 s; the gateway stops waiting."""
    body = {"model": "slowlong", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            gateway_proc.url + "/v1/chat/completions",
            json=body,
            timeout=0.6,
            headers={"authorization": f"Bearer {KEY}"},
        )
    line = _access_lines(gateway_proc, "slowlong", 1)[0]
    assert line["disconnected"] is True and line["status"] == 499
    assert line["latency_ms"] < 2000, "the upstream call was not abandoned"


def _access_lines(gw: GatewayProcess, model: str, count: int) -> list[dict[str, object]]:
    """The gateway's access-log lines for `model`, once `count` of them are flushed."""
    import json

    deadline = time.monotonic() + 5
    while True:
        lines = [
            json.loads(line)
            for line in gw.log_lines()
            if line.startswith("{") and '"gateway.access"' in line
        ]
        found = [line for line in lines if line.get("model") == model]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"expected {count} access lines for {model}"
            return found[-count:]
        time.sleep(0.02)


def test_the_sdk_sees_the_request_id(gateway_proc: GatewayProcess) -> None:
    reply = client(gateway_proc).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.request_id == reply.headers["x-tollgate-request-id"]
    assert len(reply.request_id or "") == 32


def test_a_clamped_max_tokens_is_told_and_a_denied_one_is_the_clients_error(
    gateway_proc: GatewayProcess,
) -> None:
    reply = client(gateway_proc).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=5000
    )
    assert reply.headers["x-tollgate-max-tokens"] == "1000; requested=5000"


def test_an_anthropic_client_without_a_key_is_told_about_x_api_key(
    gateway_proc: GatewayProcess,
) -> None:
    r = httpx.post(
        gateway_proc.url + "/v1/messages",
        json={"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 401
    assert r.json()["error"] == {
        "type": "authentication_error",
        "message": "x-api-key header is required",
    }
