"""The simulator answers like the APIs it stands in for: structured outputs that match their
schema, tool calls whose arguments match the tool's, realistic 400s, prompt arrays, bounded
generation, and Anthropic Messages natively."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest

from gateway.accounting.tokens import TokenCounter
from tests.sim.conftest import chat_body, sim_client, sim_config

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "role": {"type": "string", "enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "address": {"$ref": "#/$defs/Address"},
        "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "tags", "address", "nickname", "score", "active"],
    "additionalProperties": False,
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        }
    },
}


async def post(tokens: TokenCounter, path: str, body: dict[str, Any], **model: Any) -> Any:
    async with sim_client(sim_config(**model), tokens) as (_, client):
        return await client.post(path, json=body)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_json_schema_outputs_validate(tokens: TokenCounter, seed: int) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    r = await post(
        tokens, "/v1/chat/completions", chat_body("who?", 400, response_format=response_format,
                                                  seed=seed),
    )  # fmt: skip
    assert r.status_code == 200, r.text
    jsonschema.validate(orjson.loads(r.json()["choices"][0]["message"]["content"]), PERSON)


async def test_json_object_mode_gives_an_object(tokens: TokenCounter) -> None:
    body = chat_body("json please", 200, response_format={"type": "json_object"})
    r = await post(tokens, "/v1/chat/completions", body)
    assert isinstance(orjson.loads(r.json()["choices"][0]["message"]["content"]), dict)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "b"}}])
async def test_tool_arguments_match_the_tools_schema_and_ids_are_unique(
    tokens: TokenCounter, choice: Any
) -> None:
    tools = [
        {"type": "function", "function": {"name": name, "parameters": PERSON}}
        for name in ("a", "b")
    ]
    body = chat_body("call it", 400, tools=tools, tool_choice=choice)
    first, second = [await post(tokens, "/v1/chat/completions", body) for _ in range(2)]
    calls = [r.json()["choices"][0]["message"]["tool_calls"][0] for r in (first, second)]
    assert calls[0]["function"]["name"] == ("a" if choice == "required" else "b")
    for call in calls:
        jsonschema.validate(orjson.loads(call["function"]["arguments"]), PERSON)
    assert calls[0]["id"] != calls[1]["id"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": -0.5}, "top_p"),
        ({"n": 500}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"n": 128, "max_tokens": 100_000}, "max_tokens"),
        ({"max_tokens": 200_000}, "messages"),
    ],
)
async def test_what_the_real_api_refuses_is_a_400(
    tokens: TokenCounter, change: dict[str, Any], param: str
) -> None:
    r = await post(tokens, "/v1/chat/completions", {**chat_body("hi"), **change})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_prompt_arrays_get_one_choice_per_prompt_per_n(tokens: TokenCounter) -> None:
    body = {"model": "m", "prompt": ["one", "two", "three"], "n": 2, "max_tokens": 3}
    r = await post(tokens, "/v1/completions", body)
    data = r.json()
    assert [c["index"] for c in data["choices"]] == list(range(6))
    assert data["usage"]["completion_tokens"] == 18
    assert data["usage"]["prompt_tokens"] == sum(tokens.count(p) for p in body["prompt"])
    best = await post(tokens, "/v1/completions", {**body, "n": 1, "best_of": 3})
    # best_of candidates are generated and billed, n returned
    assert len(best.json()["choices"]) == 3 and best.json()["usage"]["completion_tokens"] == 27


async def test_a_template_adds_prompt_tokens_as_a_real_engine_does(tokens: TokenCounter) -> None:
    plain = await post(tokens, "/v1/chat/completions", chat_body("hi"))
    templated = await post(tokens, "/v1/chat/completions", chat_body("hi"), template_tokens=25)
    assert templated.json()["usage"]["prompt_tokens"] == plain.json()["usage"]["prompt_tokens"] + 25


async def test_stop_sequences_are_reported_as_vllm_does(tokens: TokenCounter) -> None:
    plain = await post(tokens, "/v1/chat/completions", chat_body("hi", 40))
    word = plain.json()["choices"][0]["message"]["content"].split()[5]
    r = await post(tokens, "/v1/chat/completions", chat_body("hi", 40, stop=[" " + word]))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == " " + word


async def test_anthropic_messages_natively(tokens: TokenCounter) -> None:
    tools = [{"name": "who", "input_schema": PERSON}]
    body = {
        "model": "m",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "who?"}],
        "tools": tools,
        "tool_choice": {"type": "tool", "name": "who"},
    }
    r = await post(tokens, "/v1/messages", body)
    message = r.json()
    assert message["type"] == "message" and message["stop_reason"] == "tool_use"
    (block,) = message["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    jsonschema.validate(block["input"], PERSON)
    bad = await post(tokens, "/v1/messages", {**body, "messages": [{"role": "system"}]})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    counted = await post(tokens, "/v1/messages/count_tokens", body)
    assert counted.json()["input_tokens"] > 0
