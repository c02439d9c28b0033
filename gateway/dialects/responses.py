"""Whole (non-stream) responses across dialects: chat.completion <-> message."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.call import Usage
from gateway.dialects.usage import anthropic_usage, openai_usage

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def message_id(openai_id: Any) -> str:
    raw = str(openai_id or "")
    return raw if raw.startswith("msg_") else "msg_" + raw.removeprefix("chatcmpl-")


def chat_id(anthropic_id: Any) -> str:
    raw = str(anthropic_id or "")
    return raw if raw.startswith("chatcmpl-") else "chatcmpl-" + raw.removeprefix("msg_")


def tool_input(arguments: Any) -> dict[str, Any]:
    """OpenAI's tool-call arguments (a JSON string) as the object Anthropic's `input` must be;
    arguments that are not a JSON object are kept, wrapped, rather than lost."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw_arguments": str(arguments)}
    return value if isinstance(value, dict) else {"value": value}


def matched_stop(choice: dict[str, Any], stop_sequences: Sequence[str]) -> str | None:
    """The client's stop sequence that ended a choice, when the upstream says which: vLLM and
    SGLang report it as the choice's `stop_reason` (OpenAI itself does not, and a plain stop
    then stays `end_turn`)."""
    reason = choice.get("stop_reason")
    if (
        choice.get("finish_reason") == "stop"
        and isinstance(reason, str)
        and reason in stop_sequences
    ):
        return reason
    return None


def chat_completion_to_message(
    body: dict[str, Any], usage: Usage, stop_sequences: Sequence[str] = ()
) -> dict[str, Any]:
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": tool_input(function.get("arguments")),
            }
        )
    finish = choice.get("finish_reason")
    matched = matched_stop(choice, stop_sequences)
    stop_reason = FINISH_TO_STOP.get(str(finish), "end_turn") if finish else None
    return {
        "id": message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": "stop_sequence" if matched is not None else stop_reason,
        "stop_sequence": matched,
        "usage": anthropic_usage(usage),
    }


def message_to_chat_completion(body: dict[str, Any], usage: Usage) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in body.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            text.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    stop = body.get("stop_reason")
    return {
        "id": chat_id(body.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP_TO_FINISH.get(str(stop), "stop") if stop else None,
                "logprobs": None,
            }
        ],
        "usage": openai_usage(usage),
    }
