"""The Responses API said as chat completions and back: what a backend without it gets."""

from __future__ import annotations

import orjson
import pytest

from gateway.call import Usage
from gateway.dialects.responses_api import Unsupported, chat_to_response, responses_to_chat
from gateway.dialects.responses_stream import ChunksToResponseEvents


def test_instructions_items_tools_and_settings_become_a_chat_request() -> None:
    chat = responses_to_chat({
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
            ]},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "Let me check."}]},
            {"type": "function_call", "call_id": "c1", "name": "look", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "look", "arguments": "{\"a\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "a cat"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
        "tools": [{"type": "function", "name": "look", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "look"},
        "max_output_tokens": 50, "temperature": 0.2, "stream": True,
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "reasoning": {"effort": "low"},
    })  # fmt: skip
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "system", "user", "assistant", "tool"]
    assert chat["messages"][2]["content"][1] == {
        "type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}
    }  # fmt: skip
    assistant = chat["messages"][3]
    assert assistant["content"] == "Let me check."  # the turn's text and its calls, one message
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert chat["messages"][4] == {"role": "tool", "tool_call_id": "c1", "content": "a cat"}
    function = {"name": "look", "parameters": {"type": "object"}}
    assert chat["tools"] == [{"type": "function", "function": function}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "look"}}
    assert (chat["max_tokens"], chat["temperature"], chat["reasoning_effort"]) == (50, 0.2, "low")
    assert chat["stream_options"] == {"include_usage": True}
    assert chat["response_format"]["json_schema"]["name"] == "x"


@pytest.mark.parametrize(
    "body",
    [
        {"input": "x", "tools": [{"type": "web_search"}]},
        {"input": [{"type": "file_search_call", "id": "x"}]},
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
    ],
)
def test_what_only_a_native_backend_can_do_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(Unsupported):
        responses_to_chat(body)


def test_a_chat_completion_becomes_a_response() -> None:
    completion = {
        "id": "chatcmpl-1", "model": "m", "created": 7,
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "look", "arguments": "{}"}}]}}],
    }  # fmt: skip
    request = {"model": "chat", "instructions": "hi", "previous_response_id": "resp_0"}
    response = chat_to_response(completion, request, Usage(10, 4, cached_tokens=3))
    assert response["status"] == "completed" and response["created_at"] == 7
    assert [o["type"] for o in response["output"]] == ["message", "function_call"]
    assert response["output"][1]["call_id"] == "call_1"
    assert response["usage"] == {
        "input_tokens": 10, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 14,
    }  # fmt: skip
    assert (response["instructions"], response["previous_response_id"]) == ("hi", "resp_0")
    cut = chat_to_response({"choices": [{"finish_reason": "length", "message": {"content": "a"}}]},
                           {}, Usage())  # fmt: skip
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}


def _events(raw: bytes) -> list[dict[str, object]]:
    return [orjson.loads(block.split(b"\ndata: ")[1]) for block in raw.split(b"\n\n") if block]


def test_chunks_become_typed_events_with_sequence_numbers() -> None:
    events = ChunksToResponseEvents({"model": "chat"})
    raw = events.feed({"model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}}]})
    raw += events.feed({"choices": [{"index": 0, "delta": {"content": "lo"}}]})
    first = {"index": 0, "id": "call_9", "function": {"name": "f", "arguments": '{"a"'}}
    rest = {"index": 0, "function": {"arguments": ":1}"}}
    raw += events.feed({"choices": [{"index": 0, "delta": {"tool_calls": [first]}}]})
    raw += events.feed({"choices": [{"index": 0, "delta": {"tool_calls": [rest]},
                                     "finish_reason": "tool_calls"}]})  # fmt: skip
    raw += events.finish(Usage(5, 3))
    parsed = _events(raw)
    kinds = [e["type"] for e in parsed]
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in parsed] == list(range(len(parsed)))
    final = parsed[-1]["response"]
    assert isinstance(final, dict) and final["model"] == "m"
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert (
        final["output"][1]["arguments"] == '{"a":1}' and final["output"][1]["call_id"] == "call_9"
    )
    assert final["usage"]["output_tokens"] == 3
    assert parsed[0]["response"]["id"] == final["id"]  # type: ignore[index]
