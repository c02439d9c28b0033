"""The OpenAI Responses API through the official SDK (`client.responses.*`), in-process: on a
backend that serves it natively (the simulator's /v1/responses) and on one that only serves
chat completions (translated); conversations by `previous_response_id`, per key; streams with
their typed events; tools; stored responses; keys, rules and budgets apply; OpenAI's error
shapes for malformed requests."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from tests.support.asgi import InProcess, in_process

KEY, OTHER = "tg-responses-key-0123456789", "tg-responses-other-0123456789"
CONFIG = """
version: 1
server: {reload_poll_seconds: 0}
auth:
  keys:
    - {name: tester, key_env: TG_KEY, team: qa}
    - {name: other, key_env: TG_OTHER, team: web}
backends:
  gpu:
    type: sim
    time_scale: 0
    responses: NATIVE
    models: [{name: m, input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}]
models:
  chat: {backend: gpu, model: m}
policies:
  - use: rules
    with:
      rules:
        - name: no-web-responses
          match: {team: web, endpoint: responses, headers: {x-probe: deny}}
          actions: {deny: {message: "not for web", status: 403}}
limits:
  budgets:
    - {name: qa-day, scope: team, subject: qa, usd: "1", window: day}
"""
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture(params=["native", "translated"])
async def gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[InProcess]:
    config = tmp_path / "tollgate.yaml"
    config.write_text(CONFIG.replace("NATIVE", str(request.param == "native").lower()))
    async with in_process(config, tmp_path, {"TG_KEY": KEY, "TG_OTHER": OTHER}) as gateway:
        yield gateway


def sdk(gw: InProcess, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, http_client=gw.client,
                              max_retries=0)  # fmt: skip


async def test_create_retrieve_and_continue_a_conversation(gw: InProcess) -> None:
    client = sdk(gw)
    raw = await client.responses.with_raw_response.create(
        model="chat", input="Say hi", instructions="Be brief.", max_output_tokens=6
    )
    first = raw.parse()
    assert first.id.startswith("resp_") and first.object == "response"
    assert first.status == "incomplete" and first.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]
    assert first.output_text and first.usage is not None and first.usage.output_tokens == 6
    assert first.instructions == "Be brief." and first.max_output_tokens == 6
    # Like any call: priced, budgeted, told.
    assert Decimal(raw.headers["x-tollgate-cost-usd"]) > 0
    assert Decimal(raw.headers["x-tollgate-budget-remaining-usd"]) < 1
    second = await client.responses.create(
        model="chat", input="And again?", previous_response_id=first.id, max_output_tokens=4
    )
    assert second.previous_response_id == first.id
    # The whole conversation went upstream: the first turn's input and answer, then this one.
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    kept = await client.responses.retrieve(second.id)
    assert kept.id == second.id and kept.output_text == second.output_text
    items = await client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].id.startswith("msg_")  # type: ignore[union-attr]


async def test_another_keys_response_does_not_exist(gw: InProcess) -> None:
    mine = await sdk(gw).responses.create(model="chat", input="secret plans", max_output_tokens=3)
    theirs = sdk(gw, OTHER)
    with pytest.raises(openai.NotFoundError) as info:
        await theirs.responses.create(model="chat", input="tell me", previous_response_id=mine.id)
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await theirs.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.responses.delete(mine.id)
    assert (await sdk(gw).responses.retrieve(mine.id)).id == mine.id, "still the owner's"


async def test_store_false_keeps_nothing_and_delete_forgets(gw: InProcess) -> None:
    client = sdk(gw)
    fleeting = await client.responses.create(model="chat", input="x", store=False,
                                             max_output_tokens=2)  # fmt: skip
    assert fleeting.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(fleeting.id)
    kept = await client.responses.create(model="chat", input="y", max_output_tokens=2)
    await client.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(kept.id)


async def test_a_stream_has_the_typed_events_and_is_stored(gw: InProcess) -> None:
    client = sdk(gw)
    stream = await client.responses.create(model="chat", input="Stream it", stream=True,
                                           max_output_tokens=5)  # fmt: skip
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]  # fmt: skip
    assert kinds.count("response.output_text.delta") == 5
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.incomplete"]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert final.output_text == text and final.usage.output_tokens == 5
    assert (await client.responses.retrieve(final.id)).output_text == text


async def test_a_stream_carries_its_cost_before_its_final_event(gw: InProcess) -> None:
    r = await gw.client.post(
        "/v1/responses",
        json={"model": "chat", "input": "hi", "stream": True, "max_output_tokens": 3},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert re.search(rb": x-tollgate-cost-usd=[0-9.]+ x-tollgate-saved-usd=-?[0-9.]+\n\n"
                     rb"event: response.incomplete\n", r.content), r.content[-400:]  # fmt: skip


async def test_a_function_call_round_trip(gw: InProcess) -> None:
    client = sdk(gw)
    first = await client.responses.create(
        model="chat",
        input="Weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",  # type: ignore[list-item]
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert "city" in calls[0].arguments
    answer = await client.responses.create(
        model="chat",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny"}],
        tools=[WEATHER],  # type: ignore[list-item]
        max_output_tokens=5,
    )
    assert answer.output_text
    stream = await client.responses.create(
        model="chat", input="Weather in Rome?", tools=[WEATHER], tool_choice="required",  # type: ignore[list-item]
        stream=True,
    )  # fmt: skip
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output[0].type == "function_call" and final.output[0].name == "get_weather"


async def test_rules_apply_to_responses_calls(gw: InProcess) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        await sdk(gw, OTHER).responses.create(
            model="chat", input="hi", extra_headers={"x-probe": "deny"}
        )
    assert "not for web" in info.value.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "chat"}, "input"),
        ({"model": "chat", "input": 5}, "input"),
        ({"model": "chat", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "chat", "input": [{"type": "function_call_output", "output": "x"}]},
         "input[0].call_id"),
        ({"model": "chat", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "chat", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "chat", "input": "x", "previous_response_id": "resp_nope"},
         "previous_response_id"),
    ],
)  # fmt: skip
async def test_malformed_requests_get_openai_errors(
    gw: InProcess, body: dict[str, object], param: str
) -> None:
    r = await gw.client.post("/v1/responses", json=body,
                             headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
    error = r.json()["error"]
    assert r.status_code in (400, 404) and error["param"] == param, error
    assert error["type"] == "invalid_request_error"


async def test_unknown_model_and_missing_key(gw: InProcess) -> None:
    with pytest.raises(openai.NotFoundError):
        await sdk(gw).responses.create(model="nope", input="hi")
    r = await gw.client.get("/v1/responses/resp_x")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


async def test_input_items_are_paged(gw: InProcess) -> None:
    client = sdk(gw)
    turn = [{"role": "user", "content": f"part {i}"} for i in range(5)]
    made = await client.responses.create(model="chat", input=turn, max_output_tokens=2)  # type: ignore[arg-type]
    page = await client.responses.input_items.list(made.id, limit=2, order="asc")
    assert [i.content[0].text for i in page.data] == ["part 0", "part 1"]  # type: ignore[union-attr]
    assert page.has_more is True
    rest = await client.responses.input_items.list(made.id, after=page.data[-1].id, order="asc")  # type: ignore[union-attr]
    assert [i.content[0].text for i in rest.data] == ["part 2", "part 3", "part 4"]  # type: ignore[union-attr]
    bad = await gw.client.get(f"/v1/responses/{made.id}/input_items?limit=0",
                              headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


async def test_builtin_tools_need_a_native_backend(gw: InProcess) -> None:
    r = await gw.client.post(
        "/v1/responses",
        json={"model": "chat", "input": "news?", "tools": [{"type": "web_search"}]},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 400, r.text
    assert "web_search" in r.json()["error"]["message"]


async def test_a_store_that_fails_costs_the_retrieval_not_the_answer(
    gw: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("gateway.api.responses.save", broken)
    client = sdk(gw)
    whole = await client.responses.create(model="chat", input="hi", max_output_tokens=2)
    assert whole.output_text
    stream = await client.responses.create(model="chat", input="hi", stream=True,
                                           max_output_tokens=2)  # fmt: skip
    assert [e.type async for e in stream][-1] == "response.incomplete"
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(whole.id)
