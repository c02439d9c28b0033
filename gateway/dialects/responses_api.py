"""OpenAI's Responses API said as chat completions, and a chat completion said as a Response.

What a backend without the Responses API needs: the request's `instructions`, `input` items
(messages, function calls and their outputs) and function tools become a chat request; the
chat completion becomes a Response with `output` items and Responses usage. Conversation state
(`previous_response_id`) is not this module's business: the API layer hands over the whole
conversation as input items.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from gateway.accounting.tokens import content_text
from gateway.call import Usage
from gateway.errors import Fault

# Fields a Response echoes from its request (the rest of the request is consumed).
_ECHOED = ("instructions", "max_output_tokens", "metadata", "parallel_tool_calls",
           "previous_response_id", "temperature", "tool_choice", "tools", "top_p", "user",
           "truncation", "reasoning", "text", "store")  # fmt: skip
_DEFAULTS: dict[str, Any] = {
    "instructions": None, "max_output_tokens": None, "metadata": {}, "parallel_tool_calls": True,
    "previous_response_id": None, "temperature": None, "tool_choice": "auto", "tools": [],
    "top_p": None, "user": None, "truncation": "disabled", "reasoning": None,
    "text": {"format": {"type": "text"}}, "store": True,
}  # fmt: skip


class Unsupported(Fault, ValueError):
    """The request uses something only a Responses-native backend can do (a built-in tool)."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`input` as a list of items: a string is one user message."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    return [dict(item) for item in raw] if isinstance(raw, list) else []


def item_type(item: dict[str, Any]) -> str:
    """An item's type; a bare `{role, content}` is a message."""
    kind = item.get("type")
    return kind if isinstance(kind, str) else "message"


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat request that asks what the Responses request asks."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for item in input_items(body):
        _add_item(item, messages)
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    tools = body.get("tools")
    if tools:
        out["tools"] = [_chat_tool(t) for t in tools]
    choice = body.get("tool_choice")
    if choice is not None:
        out["tool_choice"] = _chat_tool_choice(choice)
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "user", "parallel_tool_calls", "stream"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stream"):
        out["stream_options"] = {"include_usage": True}
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        out["response_format"] = _chat_format(fmt)
    effort = (
        body.get("reasoning", {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    )
    if effort is not None:
        out["reasoning_effort"] = effort
    return out


def _add_item(item: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    kind = item_type(item)
    if kind == "message":
        role = item["role"]
        messages.append({
            "role": "system" if role == "developer" else role,
            "content": _chat_content(item.get("content"), role),
        })  # fmt: skip
    elif kind == "function_call":
        function = {"name": item["name"], "arguments": item.get("arguments") or ""}
        call = {"id": item["call_id"], "type": "function", "function": function}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":  # the same turn's text and calls
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else content_text(output)
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
    elif kind == "reasoning":
        return  # a native backend's own reasoning: nothing a chat backend can take
    else:
        raise Unsupported(f"input items of type {kind!r} need a Responses-native backend")


def _chat_content(content: Any, role: str) -> Any:
    if isinstance(content, str) or content is None:
        return content or ""
    if role != "user":  # system, developer and assistant content is text
        return content_text(content)
    parts = []
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            url = part.get("image_url") or part.get("file_id")
            image: dict[str, Any] = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise Unsupported(f"content parts of type {kind!r} need a Responses-native backend")
    return parts


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise Unsupported(f"tools of type {tool.get('type')!r} need a Responses-native backend")
    function = {"name": tool["name"]}
    for name in ("description", "parameters", "strict"):
        if tool.get(name) is not None:
            function[name] = tool[name]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _chat_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
    return {"type": "json_schema", "json_schema": schema}


def responses_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def response_object(
    request: dict[str, Any],
    ident: str,
    output: list[dict[str, Any]],
    *,
    status: str,
    model: str,
    created_at: int,
    usage: Usage | None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    """A Response as the API returns it: what happened, plus the request's echoed settings."""
    echoed = {name: request.get(name, _DEFAULTS[name]) for name in _ECHOED}
    if echoed["store"] is None:
        echoed["store"] = True
    return {
        "id": ident,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model,
        "output": output,
        "usage": responses_usage(usage) if usage is not None else None,
        **echoed,
    }


def finished(finish_reason: str | None) -> tuple[str, str | None]:
    """A chat finish reason as a Response's status and incomplete reason."""
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def message_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": ident,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def function_call_item(
    ident: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {"type": "function_call", "id": ident, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}  # fmt: skip


def chat_to_response(
    completion: dict[str, Any], request: dict[str, Any], usage: Usage
) -> dict[str, Any]:
    """A (non-stream) chat completion as a Response."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    text = content_text(message.get("content"))
    if text:
        output.append(message_item(new_id("msg"), text))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(function_call_item(
            new_id("fc"), call.get("id") or new_id("call"), function.get("name", ""),
            function.get("arguments") or "",
        ))  # fmt: skip
    status, incomplete = finished(choice.get("finish_reason"))
    created = completion.get("created")
    return response_object(
        request,
        new_id("resp"),
        output,
        status=status,
        model=str(completion.get("model") or request.get("model") or ""),
        created_at=created if isinstance(created, int) else int(time.time()),
        usage=usage,
        incomplete=incomplete,
    )
