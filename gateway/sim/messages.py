"""The simulator's Anthropic Messages surface: `/v1/messages` (whole and streamed, with tools and
stop sequences) and `/v1/messages/count_tokens`, in Anthropic's own shapes, so a gateway's
`anthropic` backend type is exercised end to end without the vendor."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from gateway.accounting.tokens import content_text
from gateway.sim.generate import Choice
from gateway.sim.requests import Ask, SimError, Tool, invalid

STOP_REASON = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def error_body(err: SimError) -> bytes:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(err.status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": err.message}})


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(
            str(b.get("text", "")) if b.get("type") == "text" else orjson.dumps(b).decode()
            for b in value
            if isinstance(b, Mapping)
        )
    return content_text(value)


def parse(body: Mapping[str, Any]) -> Ask:
    """An Anthropic Messages request, checked as Anthropic checks it."""
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise invalid("max_tokens: Field required (a positive integer)", "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: Field required (a non-empty list)", "messages")
    parts = [f"<|system|>{_text(body.get('system'))}\n"] if body.get("system") else []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ("user", "assistant"):
            raise invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        parts.append(f"<|{role}|>{_text(message.get('content'))}\n")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 1
    ):
        raise invalid("temperature: Input should be less than or equal to 1")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("stop_sequences: Input should be a valid list of strings")
    tools, choice = _tools(body)
    return Ask(
        prompts=("".join(parts) + "<|assistant|>",),
        max_tokens=max_tokens,
        stops=tuple(stops),
        tools=tools,
        tool_choice=choice,
    )


def _tools(body: Mapping[str, Any]) -> tuple[tuple[Tool, ...], str]:
    raw = body.get("tools") or []
    if not isinstance(raw, list):
        raise invalid("tools: Input should be a valid list")
    tools = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            raise invalid(f"tools.{i}.name: Field required")
        tools.append(Tool(tool["name"], tool.get("input_schema") or {"type": "object"}))
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind == "tool":
        name = choice.get("name")
        if not any(t.name == name for t in tools):
            raise invalid(f"tool_choice.name: no tool named {name!r}")
        return tuple(tools), str(name)
    if kind == "any":
        if not tools:
            raise invalid("tool_choice: 'any' needs tools")
        return tuple(tools), "required"
    if kind not in ("auto", "none"):
        raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    return tuple(tools), str(kind)


def _blocks(choice: Choice) -> list[dict[str, Any]]:
    if choice.tool_calls:
        return [
            {
                "type": "tool_use",
                "id": "toolu_" + uuid.uuid4().hex[:24],
                "name": call["function"]["name"],  # type: ignore[index]
                "input": orjson.loads(call["function"]["arguments"]),  # type: ignore[index]
            }
            for call in choice.tool_calls
        ]
    return [{"type": "text", "text": choice.text}]


def usage(prompt: int, output: int, cached: int) -> dict[str, int]:
    return {
        "input_tokens": prompt - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    }


def message(model: str, choice: Choice, use: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(choice),
        "stop_reason": "stop_sequence" if choice.stop else STOP_REASON[choice.finish_reason],
        "stop_sequence": choice.stop,
        "usage": use,
    }


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return (
        b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"
    )


class EventWriter:
    """Anthropic's stream, event by event: start, one content block, deltas, the end."""

    def __init__(self, model: str, choice: Choice, prompt: int, cached: int) -> None:
        self._choice = choice
        self._start = message(model, replace(choice, pieces=()), usage(prompt, 0, cached))
        self._start.update(content=[], stop_reason=None, stop_sequence=None)
        self._use = usage(prompt, 0, cached)

    def start(self) -> bytes:
        choice = self._choice
        out = event("message_start", {"message": self._start}) + event("ping", {})
        if choice.tool_calls:
            block = _blocks(choice)[0]
            arguments = orjson.dumps(block.pop("input")).decode()
            block["input"] = {}
            out += event("content_block_start", {"index": 0, "content_block": block})
            delta = {"type": "input_json_delta", "partial_json": arguments}
            return out + event("content_block_delta", {"index": 0, "delta": delta})
        block = {"type": "text", "text": ""}
        return out + event("content_block_start", {"index": 0, "content_block": block})

    def piece(self, text: str) -> bytes:
        delta = {"type": "text_delta", "text": text}
        return event("content_block_delta", {"index": 0, "delta": delta})

    def end(self, output: int) -> bytes:
        choice = self._choice
        reason = "stop_sequence" if choice.stop else STOP_REASON[choice.finish_reason]
        return (
            event("content_block_stop", {"index": 0})
            + event(
                "message_delta",
                {
                    "delta": {"stop_reason": reason, "stop_sequence": choice.stop},
                    "usage": {"output_tokens": output},
                },
            )
            + event("message_stop", {})
        )
