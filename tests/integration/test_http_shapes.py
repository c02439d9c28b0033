"""HTTP shapes a client meets before any upstream is involved, through the official SDK and
plain HTTP against the app in this process (tests/support/asgi.py): malformed and invalid
bodies, missing and wrong keys, a model the key may not use, a body over the limit, unknown
routes and methods. Each error is OpenAI's shape, as the SDK parses it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from tests.support.asgi import InProcess, in_process

KEY, NARROW = "tg-shapes-key-0123456789", "tg-shapes-narrow-0123456789"
CONFIG = """
version: 1
server: {max_body_bytes: 4096, reload_poll_seconds: 0}
auth:
  keys:
    - {name: tester, key_env: TG_KEY, team: qa}
    - {name: narrow, key_env: TG_NARROW, models: [chat]}
backends:
  gpu: {type: sim, time_scale: 0, models: [{name: m}, {name: e, kind: embedding}]}
models:
  chat: {backend: gpu, model: m}
  emb: {backend: gpu, model: e}
"""


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[InProcess]:
    config = tmp_path / "tollgate.yaml"
    config.write_text(CONFIG)
    async with in_process(config, tmp_path, {"TG_KEY": KEY, "TG_NARROW": NARROW}) as gateway:
        yield gateway


def sdk(gw: InProcess, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, http_client=gw.client,
                              max_retries=0)  # fmt: skip


async def test_400_malformed_json_and_invalid_fields(gw: InProcess) -> None:
    r = await gw.client.post("/v1/chat/completions", content=b"{not json",
                             headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        await sdk(gw).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=-3
        )
    assert info.value.body["param"] == "max_tokens"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        await sdk(gw).chat.completions.create(model="chat", messages="nope")  # type: ignore[arg-type]
    assert "messages" in info.value.message


async def test_401_missing_and_invalid_key(gw: InProcess) -> None:
    with pytest.raises(openai.AuthenticationError):
        await sdk(gw, "wrong-key").chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    r = await gw.client.post("/v1/chat/completions", json={"model": "chat"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


async def test_404_unknown_model_lists_what_the_caller_may_use(gw: InProcess) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await sdk(gw, NARROW).chat.completions.create(
            model="emb", messages=[{"role": "user", "content": "hi"}]
        )
    assert "Available models: chat." in info.value.message


async def test_413_body_over_limit(gw: InProcess) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await sdk(gw).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x" * 10_000}]
        )
    assert info.value.status_code == 413


async def test_unknown_routes_and_methods_are_json_with_a_request_id(gw: InProcess) -> None:
    r = await gw.client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["message"]
    assert len(r.headers["x-tollgate-request-id"]) == 32
    assert len((await gw.client.get("/healthz")).headers["x-tollgate-request-id"]) == 32
    r = await gw.client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_a_served_call_through_the_sdk(gw: InProcess) -> None:
    """The same app serves: the fixture is the whole gateway, not an error path."""
    reply = await sdk(gw).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.headers["x-tollgate-backend"] == "gpu"
    assert reply.parse().usage is not None
