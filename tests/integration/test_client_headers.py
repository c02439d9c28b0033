"""What a client can read off each response without the admin API: how much rate and budget it
has left (in OpenAI's and Anthropic's header conventions) and what the call cost, whole or
streamed, through the official SDKs."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from tests.support.asgi import InProcess, in_process

KEY = "tg-headers-key-0123456789"
LIMITED = """
version: 1
server: {reload_poll_seconds: 0}
auth:
  keys:
    - {name: tester, key_env: TG_KEY, team: qa}
backends:
  gpu:
    type: sim
    time_scale: 0
    models: [{name: m, input_price_per_mtok: 2.0, output_price_per_mtok: 8.0}]
models:
  chat: {backend: gpu, model: m}
limits:
  prompt_margin: 0
  budgets:
    - {name: qa-month, scope: team, subject: qa, usd: "5", window: month}
    - {name: qa-day, scope: team, subject: qa, usd: "1", window: day}
  rate_limits:
    - {name: per-key, scope: key, subject: "*", rpm: 3, tpm: 100000}
    - {name: loose, scope: team, subject: qa, rpm: 50}
"""
UNLIMITED = LIMITED.split("limits:\n  prompt_margin")[0]
HI = [{"role": "user", "content": "hi"}]


async def _gateway(tmp_path: Path, text: str) -> AsyncIterator[InProcess]:
    config = tmp_path / "tollgate.yaml"
    config.write_text(text)
    async with in_process(config, tmp_path, {"TG_KEY": KEY}) as gateway:
        yield gateway


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[InProcess]:
    async for gateway in _gateway(tmp_path, LIMITED):
        yield gateway


@pytest.fixture
async def open_gw(tmp_path: Path) -> AsyncIterator[InProcess]:
    async for gateway in _gateway(tmp_path, UNLIMITED):
        yield gateway


def oai(gw: InProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=KEY, http_client=gw.client,
                              max_retries=0)  # fmt: skip


async def clear_of_the_minutes_end() -> None:
    """Rate limits count calendar minutes: a test that needs its calls in one minute starts
    it clear of the minute's last seconds (its calls take well under one)."""
    into = time.time() % 60
    if into > 55:
        await asyncio.sleep(60.5 - into)


async def test_openai_rate_and_budget_headers_count_down_with_the_tightest_limit(
    gw: InProcess,
) -> None:
    await clear_of_the_minutes_end()
    seen = []
    for _ in range(2):
        raw = await oai(gw).chat.completions.with_raw_response.create(
            model="chat", messages=HI, max_tokens=5
        )
        seen.append(raw.headers)
    first, second = seen
    # The tightest of the two request limits (3 per key, not 50 per team) is the one told.
    assert first["x-ratelimit-limit-requests"] == "3"
    assert (first["x-ratelimit-remaining-requests"], second["x-ratelimit-remaining-requests"]) == (
        "2",
        "1",
    )
    assert re.fullmatch(r"\d+s", first["x-ratelimit-reset-requests"])
    assert first["x-ratelimit-limit-tokens"] == "100000"
    assert int(first["x-ratelimit-remaining-tokens"]) < 100000
    # The dollar budget with least left is the daily one; a whole body's figure is after cost.
    cost = Decimal(second["x-tollgate-cost-usd"])
    assert cost > 0
    remaining = Decimal(second["x-tollgate-budget-remaining-usd"])
    assert remaining <= Decimal(1) - cost
    assert remaining > Decimal("0.99")
    assert int(second["x-tollgate-budget-resets"]) > 0
    assert Decimal(second["x-tollgate-saved-usd"]) >= 0


async def test_rate_limit_refusal_says_none_remain(gw: InProcess) -> None:
    await clear_of_the_minutes_end()
    for _ in range(3):
        await oai(gw).chat.completions.create(model="chat", messages=HI, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as info:
        await oai(gw).chat.completions.create(model="chat", messages=HI, max_tokens=2)
    headers = info.value.response.headers
    assert headers["x-tollgate-cost-usd"] == "0", "a refused call is told it cost nothing"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert "retry-after" in headers


async def test_anthropic_clients_get_anthropic_rate_headers(gw: InProcess) -> None:
    # (The Anthropic SDK rides on httpx2, which cannot take this in-process transport; its own
    # end-to-end tests run it against a served gateway.)
    body = {"model": "chat", "messages": HI, "max_tokens": 5}
    r = await gw.client.post(
        "/v1/messages", json=body, headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    )
    headers = r.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "3"
    assert headers["anthropic-ratelimit-requests-remaining"] == "2"
    reset = headers["anthropic-ratelimit-requests-reset"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", reset)
    assert headers["anthropic-ratelimit-tokens-limit"] == "100000"
    assert "x-ratelimit-limit-requests" not in headers
    assert Decimal(headers["x-tollgate-cost-usd"]) > 0


async def test_a_stream_carries_its_cost_as_a_comment_before_its_final_event(
    gw: InProcess,
) -> None:
    body = {"model": "chat", "messages": HI, "max_tokens": 5, "stream": True}
    r = await gw.client.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
    )
    text = r.text
    assert r.headers["x-ratelimit-remaining-requests"] == "2"
    # Headers go out before the answer: the budget figure still counts the worst case.
    assert Decimal(r.headers["x-tollgate-budget-remaining-usd"]) < 1
    match = re.search(r"\n: x-tollgate-cost-usd=([0-9.]+) x-tollgate-saved-usd=(-?[0-9.]+)\n\n"
                      r"data: \[DONE\]\n\n$", text)  # fmt: skip
    assert match is not None, text[-300:]
    assert Decimal(match.group(1)) > 0
    # ...and the SDK, which skips comments, reads the stream as usual.
    stream = await oai(gw).chat.completions.create(
        model="chat", messages=HI, max_tokens=5, stream=True
    )
    chunks = [c async for c in stream]
    assert chunks and chunks[0].choices[0].delta is not None


async def test_anthropic_stream_cost_comment_precedes_message_stop(gw: InProcess) -> None:
    body = {"model": "chat", "messages": HI, "max_tokens": 5, "stream": True}
    r = await gw.client.post("/v1/messages", json=body, headers={"x-api-key": KEY})
    assert re.search(r": x-tollgate-cost-usd=[0-9.]+ x-tollgate-saved-usd=-?[0-9.]+\n\n"
                     r"event: message_stop\n", r.text), r.text[-300:]  # fmt: skip


async def test_without_limits_only_the_cost_is_told(open_gw: InProcess) -> None:
    raw = await oai(open_gw).chat.completions.with_raw_response.create(
        model="chat", messages=HI, max_tokens=5
    )
    assert Decimal(raw.headers["x-tollgate-cost-usd"]) > 0
    assert "x-ratelimit-limit-requests" not in raw.headers
    assert "x-tollgate-budget-remaining-usd" not in raw.headers
