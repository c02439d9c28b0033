"""What makes two calls the same question (gateway/cache/keys.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cache import keys
from gateway.call import Call, Principal
from gateway.config.cache_schema import AliasCache

ALICE = Principal("k-alice", "alice", team="ml", org="acme")
BOB = Principal("k-bob", "bob", team="web", org="acme")


def chat(**extra: Any) -> Call:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 0,
            "max_tokens": 50, **extra}  # fmt: skip
    return Call("r", "openai", "chat.completions", "chat", body, False, False, principal=ALICE)


def messages(**extra: Any) -> Call:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 0,
            "max_tokens": 50, **extra}  # fmt: skip
    return Call("r", "anthropic", "messages", "chat", body, False, False, principal=ALICE)


def digest(call: Call, tier: str = "fp16") -> str:
    return keys.digest(call, "chat", tier, keys.canonical(call))


def test_both_dialects_ask_the_same_question_alike() -> None:
    assert digest(chat()) == digest(messages())
    system = messages(system="be brief")
    turns = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert digest(system) == digest(chat(messages=turns))
    parts = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert digest(parts) == digest(chat())


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.0001}, {"top_p": 0.5}, {"max_tokens": 51}, {"seed": 1}, {"n": 2},
        {"stop": ["x"]}, {"presence_penalty": 0.1}, {"frequency_penalty": 0.1},
        {"logit_bias": {"1": 2}}, {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"tool_choice": "none"}, {"parallel_tool_calls": False}, {"logprobs": True},
        {"reasoning_effort": "low"}, {"a_parameter_added_tomorrow": 1},
        {"messages": [{"role": "user", "content": "hi!"}]},
    ],
)  # fmt: skip
def test_anything_that_changes_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    assert digest(chat(**change)) != digest(chat())


def test_anthropic_only_parameters_split_entries() -> None:
    assert digest(messages(top_k=5)) != digest(messages())
    assert digest(messages(thinking={"type": "enabled", "budget_tokens": 1024})) != digest(
        messages()
    )


def test_what_never_changes_the_answer_is_left_out() -> None:
    same = chat(stream=True, stream_options={"include_usage": True}, user="u-1",
                metadata={"a": "b"}, prompt_cache_key="x", n=1)  # fmt: skip
    assert digest(same) == digest(chat())
    assert digest(chat(max_completion_tokens=50, max_tokens=None)) != digest(chat())
    renamed = chat(max_completion_tokens=50)
    del renamed.body["max_tokens"]
    assert digest(renamed) == digest(chat())


def test_the_tier_is_part_of_the_key() -> None:
    assert digest(chat(), "int4") != digest(chat(), "fp16")


def test_a_request_whose_translation_would_lose_content_is_keyed_as_sent() -> None:
    source = {"type": "text", "data": "A", "media_type": "text/plain"}
    doc = [{"type": "document", "source": source}, {"type": "text", "text": "summarise"}]
    other = [{**doc[0], "source": {**doc[0]["source"], "data": "B"}}, doc[1]]
    a = messages(messages=[{"role": "user", "content": doc}])
    b = messages(messages=[{"role": "user", "content": other}])
    assert digest(a) != digest(b)


def test_namespaces_are_per_team_unless_opted_out() -> None:
    team = AliasCache()
    assert keys.namespace("chat", team, ALICE) != keys.namespace("chat", team, BOB)
    lone1, lone2 = Principal("k1", "one"), Principal("k2", "two")  # no team: their own
    assert keys.namespace("chat", team, lone1) != keys.namespace("chat", team, lone2)
    org = AliasCache(namespace="org")
    assert keys.namespace("chat", org, ALICE) == keys.namespace("chat", org, BOB)
    everyone = AliasCache(namespace="global")
    assert keys.namespace("chat", everyone, lone1) == keys.namespace("chat", everyone, BOB)
    assert keys.namespace("chat", team, ALICE) != keys.namespace("other", team, ALICE)


def test_only_deterministic_requests_count_as_such() -> None:
    assert keys.deterministic(chat())
    assert keys.deterministic(chat(temperature=0.7, seed=3))
    assert not keys.deterministic(chat(temperature=0.7))
    no_temperature = chat()
    del no_temperature.body["temperature"]
    assert not keys.deterministic(no_temperature)  # the vendor default is 1


def test_the_last_user_turn_is_split_from_the_rest() -> None:
    request = keys.canonical(chat(messages=[{"role": "system", "content": "s"},
                                            {"role": "user", "content": "q"}]))  # fmt: skip
    split = keys.last_user_turn(request)
    assert split is not None and split[0] == "q"
    assert split[1]["messages"] == [{"role": "system", "content": "s"}]
    tool_last = keys.canonical(
        chat(messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}])
    )
    assert keys.last_user_turn(tool_last) is None
