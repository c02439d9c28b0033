"""Golden translations between the OpenAI and Anthropic dialects, both ways."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.call import Usage
from gateway.dialects.requests import chat_to_messages, messages_to_chat
from gateway.dialects.responses import chat_completion_to_message, message_to_chat_completion
from gateway.dialects.streams import ChunksToEvents, EventsToChunks
from gateway.dialects.usage import usage_from_anthropic

TOOL = {"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}
FUNCTION = {
    "type": "function",
    "function": {"name": "get_weather", "description": "w", "parameters": {"type": "object"}},
}


def test_messages_request_to_chat() -> None:
    body = {
        "model": "claude",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "One. "}, {"type": "text", "text": "Two."}],
        "stop_sequences": ["END", "STOP"],
        "temperature": 0.2,
        "top_k": 5,
        "metadata": {"user_id": "u1"},
        "tools": [TOOL],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look: "},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"c": "A"}},
                    {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {"c": "B"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sun"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t2",
                        "content": [{"type": "text", "text": "boom"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "Thanks"},
                ],
            },
            {"role": "assistant", "content": []},
        ],
    }
    assert messages_to_chat(body) == {
        "model": "claude",
        "max_tokens": 64,
        "stop": ["END", "STOP"],
        "temperature": 0.2,
        "user": "u1",
        "tools": [FUNCTION],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": "One. Two."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look: "},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"c":"A"}'},
                    },
                    {
                        "id": "t2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"c":"B"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "sun"},
            {"role": "tool", "tool_call_id": "t2", "content": "Error: boom"},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": None},
        ],
    }


def test_tool_choice_kinds_both_ways() -> None:
    for anthropic, openai in (("auto", "auto"), ("any", "required"), ("none", "none")):
        chat = messages_to_chat(
            {"messages": [], "tools": [TOOL], "tool_choice": {"type": anthropic}}
        )
        assert chat["tool_choice"] == openai
        back = chat_to_messages({"messages": [], "tools": [FUNCTION], "tool_choice": openai}, 9)
        assert back["tool_choice"] == {"type": anthropic}


def test_chat_request_to_messages() -> None:
    body = {
        "model": "gpt",
        "max_completion_tokens": 77,
        "stop": "END",
        "user": "u2",
        "n": 2,
        "seed": 1,
        "parallel_tool_calls": False,
        "tools": [FUNCTION],
        "messages": [
            {"role": "system", "content": "Sys one."},
            {"role": "developer", "content": [{"type": "text", "text": "Sys two."}]},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBB"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"c": "A"}'}},
                {"id": "c2", "type": "function",
                 "function": {"name": "get_weather", "arguments": "not json"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sun"},
            {"role": "tool", "tool_call_id": "c2", "content": "rain"},
            {"role": "assistant", "content": ""},
        ],
    }  # fmt: skip
    assert chat_to_messages(body, default_max_tokens=4096) == {
        "model": "gpt",
        "max_tokens": 77,
        "system": "Sys one.\n\nSys two.",
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u2"},
        "tools": [TOOL],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                             "data": "BBB"}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"c": "A"}},
                {"type": "tool_use", "id": "c2", "name": "get_weather",
                 "input": {"_raw_arguments": "not json"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "sun"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "rain"}]},
            {"role": "assistant", "content": []},
        ],
    }  # fmt: skip
    assert chat_to_messages({"messages": []}, 4096)["max_tokens"] == 4096


def test_chat_completion_to_message() -> None:
    completion = {
        "id": "chatcmpl-9",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "a", "type": "function",
                         "function": {"name": "f", "arguments": '{"x":1}'}},
                        {"id": "b", "type": "function",
                         "function": {"name": "g", "arguments": "{}"}},
                    ],
                },
            }
        ],
    }  # fmt: skip
    usage = Usage(input_tokens=50, output_tokens=7, cached_tokens=30)
    assert chat_completion_to_message(completion, usage) == {
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "tool_use", "id": "a", "name": "f", "input": {"x": 1}},
            {"type": "tool_use", "id": "b", "name": "g", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 30,
            "output_tokens": 7,
        },
    }
    truncated = {"choices": [{"finish_reason": "length", "message": {"content": "abc"}}]}
    assert chat_completion_to_message(truncated, Usage())["stop_reason"] == "max_tokens"


def test_message_to_chat_completion() -> None:
    message = {
        "id": "msg_7",
        "model": "claude",
        "content": [
            {"type": "text", "text": "Two calls:"},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
            {"type": "tool_use", "id": "t2", "name": "f", "input": {"a": 2}},
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 90,
            "cache_creation_input_tokens": 4,
            "output_tokens": 3,
        },
    }
    usage = usage_from_anthropic(message["usage"])
    assert usage == Usage(input_tokens=104, output_tokens=3, cached_tokens=90, cache_write_tokens=4)
    out = message_to_chat_completion(message, usage)
    assert out["id"] == "chatcmpl-7" and out["object"] == "chat.completion"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Two calls:"
    assert [c["function"]["arguments"] for c in choice["message"]["tool_calls"]] == [
        '{"a":1}',
        '{"a":2}',
    ]
    assert out["usage"] == {
        "prompt_tokens": 104,
        "completion_tokens": 3,
        "total_tokens": 107,
        "prompt_tokens_details": {"cached_tokens": 90},
    }
    for stop, finish in (("max_tokens", "length"), ("stop_sequence", "stop"), ("end_turn", "stop")):
        empty = message_to_chat_completion({"content": [], "stop_reason": stop}, Usage())
        assert empty["choices"][0]["finish_reason"] == finish
        assert empty["choices"][0]["message"]["content"] is None


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for event in raw.split(b"\n\n"):
        if not event:
            continue
        kind, data = event.split(b"\n")
        out.append((kind[len(b"event: ") :].decode(), orjson.loads(data[len(b"data: ") :])))
    return out


def test_chunks_to_events_text_then_parallel_tools() -> None:
    translator = ChunksToEvents(prompt_tokens=12)
    base = {"id": "chatcmpl-1", "model": "m"}
    first_call = {"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}
    second_call = {"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo"}, None),
        ({"tool_calls": [first_call]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, None),
        ({"tool_calls": [second_call]}, None),
        ({}, "tool_calls"),
    ]
    raw = b"".join(
        translator.feed({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]})
        for delta, fin in deltas
    )
    raw += translator.feed({**base, "choices": [], "usage": {"prompt_tokens": 12,
                                                             "completion_tokens": 9}})  # fmt: skip
    raw += translator.finish(Usage(12, 9))
    events = _events(raw)
    assert [k for k, _ in events] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[0][1]["message"]["id"] == "msg_1"
    assert events[0][1]["message"]["usage"]["input_tokens"] == 12
    assert events[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "a",
        "name": "f",
        "input": {},
    }
    assert [e[1]["delta"].get("partial_json") for e in events[6:8]] == ['{"x":', "1}"]
    assert events[9][1]["index"] == 2
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == 9


def test_empty_stream_still_closes_properly() -> None:
    events = _events(ChunksToEvents(prompt_tokens=3).finish(Usage(3, 0)))
    assert [k for k, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert events[1][1]["delta"]["stop_reason"] == "end_turn"


def _chunks(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for event in raw.split(b"\n\n"):
        if event:
            data = event[len(b"data: ") :]
            out.append(data.decode() if data == b"[DONE]" else orjson.loads(data))
    return out


def test_events_to_chunks_with_usage_and_max_tokens() -> None:
    translator = EventsToChunks(include_usage=True)
    stream = [
        {"type": "message_start", "message": {"id": "msg_5", "model": "claude", "usage": {
            "input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "t", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": "{}"}},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
         "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ]  # fmt: skip
    chunks = _chunks(b"".join(translator.feed(e) for e in stream))
    assert chunks[0]["id"] == "chatcmpl-5"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["id"] == "t"
    assert chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert chunks[4]["choices"][0]["finish_reason"] == "length"
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["prompt_tokens"] == 15
    assert chunks[5]["usage"]["completion_tokens"] == 4
    assert chunks[6] == "[DONE]"
    assert translator.usage == Usage(15, 4, cached_tokens=5)
    quiet = EventsToChunks(include_usage=False)
    tail = _chunks(b"".join(quiet.feed(e) for e in stream))
    assert tail[-1] == "[DONE]" and all(c == "[DONE]" or c["choices"] for c in tail)


def test_errors_inside_streams_are_translated() -> None:
    anthropic_side = ChunksToEvents(prompt_tokens=1).feed(
        {"error": {"message": "The server is overloaded", "type": "server_error"}}
    )
    ((kind, payload),) = _events(anthropic_side)
    assert kind == "error" and payload["error"]["type"] == "overloaded_error"
    openai_side = EventsToChunks(include_usage=False).feed(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    (chunk,) = _chunks(openai_side)
    assert chunk["error"] == {
        "message": "Overloaded", "type": "server_error", "param": None, "code": None,
    }  # fmt: skip
