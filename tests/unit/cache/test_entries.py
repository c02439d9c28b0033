"""Entries: captured from either dialect, whole or streamed, and played back in either
(gateway/cache/entry.py, replay.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.cache import replay
from gateway.cache.entry import Entry, captured
from gateway.call import Call, Usage
from gateway.policies.rules.compare import answer_of

USAGE = Usage(12, 5)
TOOL = {"id": "call_1", "type": "function",
        "function": {"name": "lookup", "arguments": '{"city": "Paris"}'}}  # fmt: skip
COMPLETION = {
    "id": "chatcmpl-up", "object": "chat.completion", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                 "message": {"role": "assistant", "content": "Looking it up.",
                             "tool_calls": [TOOL]}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}  # fmt: skip


def call(dialect: str, stream: bool, *, usage: bool = False, endpoint: str = "") -> Call:
    point = endpoint or ("messages" if dialect == "anthropic" else "chat.completions")
    body: dict[str, Any] = {"model": "chat", "messages": [], "max_tokens": 9}
    return Call("req1", dialect, point, "chat", body, stream, usage)  # type: ignore[arg-type]


async def played(entry: Entry, to: Call) -> bytes:
    if not to.stream:
        return replay.whole(entry, to)
    return b"".join([part async for part in replay.ReplayStream(entry, to)])


def entry() -> Entry:
    found = captured(call("openai", False), orjson.dumps(COMPLETION), USAGE, 1.0)
    assert found is not None
    return found


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
async def test_an_entry_replays_to_either_dialect_whole_or_streamed(
    dialect: str, stream: bool
) -> None:
    raw = await played(entry(), call(dialect, stream))
    answer = answer_of(raw, dialect, stream)
    assert answer is not None
    assert answer.text == "Looking it up." and answer.tool_calls == (("lookup", {"city": "Paris"}),)
    if stream and dialect == "openai":
        assert raw.endswith(b"data: [DONE]\n\n")
    if stream and dialect == "anthropic":
        assert b"event: message_stop" in raw and b'"stop_reason":"tool_use"' in raw


async def test_a_replayed_stream_carries_the_usage_chunk_only_when_asked() -> None:
    asked = await played(entry(), call("openai", True, usage=True))
    assert b'"prompt_tokens":12' in asked
    assert b'"prompt_tokens"' not in await played(entry(), call("openai", True))


@pytest.mark.parametrize("source", ["openai", "anthropic"])
async def test_a_streamed_answer_is_captured_as_the_whole_one(source: str) -> None:
    streamed = await played(entry(), call(source, True))
    again = captured(call(source, True), streamed, USAGE, 2.0)
    assert again is not None
    message = again.body["choices"][0]["message"]
    assert message["content"] == "Looking it up."
    assert [t["function"]["name"] for t in message["tool_calls"]] == ["lookup"]
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert again.body["choices"][0]["finish_reason"] == "tool_calls"


def test_incomplete_or_failed_answers_are_not_entries() -> None:
    unfinished = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "finish_reason": None}]}
    assert captured(call("openai", False), orjson.dumps(unfinished), USAGE, 1) is None
    cut = b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    assert captured(call("openai", True), cut, USAGE, 1) is None
    error = b'data: {"error":{"message":"overloaded"}}\n\n'
    assert captured(call("openai", True), error, USAGE, 1) is None
    assert captured(call("openai", False), b"not json", USAGE, 1) is None


def test_entries_round_trip_and_garbage_decodes_to_nothing() -> None:
    e = Entry({"choices": []}, Usage(1, 2, 3, 4), 5.0, "q?")
    assert Entry.decode(e.encode()) == e
    for bad in (b"", b"{}", b"[1]", b'{"v":1,"body":[],"u":[1,2,3,4],"created":1}',
                b'{"v":1,"body":{},"u":[1,2],"created":1}', b'{"v":99}', b"\xff\x00"):  # fmt: skip
        assert Entry.decode(bad) is None


async def test_embeddings_replay_as_they_came() -> None:
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
            "model": "e", "usage": {"prompt_tokens": 1, "total_tokens": 1}}  # fmt: skip
    e = captured(call("openai", False, endpoint="embeddings"), orjson.dumps(body), USAGE, 1)
    assert e is not None
    assert orjson.loads(await played(e, call("openai", False, endpoint="embeddings"))) == body
