"""Request bodies across dialects: Anthropic Messages <-> OpenAI chat completions.

Fields with a counterpart are mapped (system prompt, turns, images, tools and tool results,
tool choice, stop sequences, sampling, the user id); fields without one are dropped rather
than sent to an upstream that would reject them (Anthropic's `top_k`, OpenAI's `n`, `seed`,
`logprobs`, `response_format`).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.accounting.tokens import content_text
from gateway.dialects.responses import tool_input

_SAMPLING = ("temperature", "top_p")


def _copy_common(body: dict[str, Any], out: dict[str, Any]) -> None:
    """What both dialects spell the same way: sampling parameters and the stream flag."""
    for name in _SAMPLING:
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stream") is True:
        out["stream"] = True


# --- Anthropic -> OpenAI ------------------------------------------------------------------


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat completions request."""
    out: dict[str, Any] = {"model": body.get("model"), "messages": []}
    messages: list[dict[str, Any]] = out["messages"]
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": content_text(system)})
    for message in body.get("messages") or ():
        messages.extend(_chat_messages(message))
    if "max_tokens" in body:
        out["max_tokens"] = body["max_tokens"]
    stops = body.get("stop_sequences")
    if stops:
        out["stop"] = list(stops)
    _copy_common(body, out)
    tools = body.get("tools")
    if tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object"},
                },
            }
            for t in tools
            if isinstance(t, dict)
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        _map_tool_choice(choice, out)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id"):
        out["user"] = str(metadata["user_id"])
    return out


def _map_tool_choice(choice: dict[str, Any], out: dict[str, Any]) -> None:
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("disable_parallel_tool_use") is True and "tools" in out:
        out["parallel_tool_calls"] = False


def _chat_messages(message: dict[str, Any]) -> list[dict[str, Any]]:
    role = message.get("role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = [b for b in content or () if isinstance(b, dict)]
    if role == "assistant":
        text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
        calls = [
            {
                "id": b.get("id"),
                "type": "function",
                "function": {
                    "name": b.get("name"),
                    "arguments": orjson.dumps(b.get("input") or {}).decode(),
                },
            }
            for b in blocks
            if b.get("type") == "tool_use"
        ]
        assistant: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            assistant["tool_calls"] = calls
        return [assistant]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "tool_result":
            # OpenAI wants tool results as their own `tool` messages, before the user's text.
            result = block.get("content")
            text = content_text(result)
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image_part(block.get("source") or {}))
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": role, "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": role, "content": parts})
    return out


def _image_part(source: dict[str, Any]) -> dict[str, Any]:
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    else:
        url = str(source.get("url", ""))
    return {"type": "image_url", "image_url": {"url": url}}


# --- OpenAI -> Anthropic ------------------------------------------------------------------


def chat_to_messages(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat completions request as an Anthropic Messages request."""
    out: dict[str, Any] = {"model": body.get("model")}
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in body.get("messages") or ():
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(content_text(message.get("content")))
            continue
        role, blocks = _anthropic_turn(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)  # Anthropic wants roles to alternate
        else:
            turns.append({"role": role, "content": blocks})
    if system:
        out["system"] = "\n\n".join(system)
    out["messages"] = turns
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = cap if isinstance(cap, int) else default_max_tokens
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    _copy_common(body, out)
    tools = body.get("tools")
    if tools:
        out["tools"] = [
            {
                "name": f.get("name"),
                "description": f.get("description", ""),
                "input_schema": f.get("parameters") or {"type": "object", "properties": {}},
            }
            for f in (t.get("function") or {} for t in tools if isinstance(t, dict))
        ]
        choice = _anthropic_tool_choice(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False:
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice is not None:
            out["tool_choice"] = choice
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    return out


def _anthropic_tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return {"type": "tool", "name": name}
    return None


def _anthropic_turn(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    content = message.get("content")
    if role == "tool":
        block = {
            "type": "tool_result",
            "tool_use_id": message.get("tool_call_id"),
            "content": content_text(content),
        }
        return "user", [block]
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                blocks.append({"type": "text", "text": part.get("text", "")})
            elif part.get("type") == "image_url":
                blocks.append(_image_block(part.get("image_url") or {}))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": tool_input(function.get("arguments")),
            }
        )
    return ("assistant" if role == "assistant" else "user"), blocks


def _image_block(image: dict[str, Any]) -> dict[str, Any]:
    url = str(image.get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}
