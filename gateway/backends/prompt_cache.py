"""Vendor prompt caches, used on a rule's say-so (`actions: {prompt_cache: ...}`).

Anthropic caches only up to the `cache_control` breakpoints a request carries (at most four);
a read costs a tenth of the input price, a write 1.25x. Placed here, on the Anthropic-shaped
body just before it is sent: after the tools, after the system prompt, and at the end of the
conversation before its last user turn (the part the next turn repeats; Anthropic looks back
up to 20 blocks from a breakpoint for an earlier cache entry, so the previous turn's entry is
found). Each only where the prompt up to it reaches the model's minimum cacheable length
(1024 tokens for most models, 2048 for Haiku; estimated at ~4 characters a token: tokenizing
a long prompt on the request path would cost more than it saves). A request that already
carries a breakpoint is the client's own choice and is left alone.

OpenAI caches prompt prefixes automatically (1024 tokens and up) and routes by
`prompt_cache_key` when given: the tenant's key keeps one tenant's calls on the same cache
machines without mixing tenants' traffic into one stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

MAX_BREAKPOINTS = 4
_EPHEMERAL = {"type": "ephemeral"}


def _size(value: Any) -> int:
    """Characters of prompt a part stands for (its text, or its JSON for tools and images)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict) and value.get("type") == "text":
        text = value.get("text")
        return len(text) if isinstance(text, str) else 0
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    return len(orjson.dumps(value))


def _has_breakpoint(body: Mapping[str, Any]) -> bool:
    def marked(value: Any) -> bool:
        if isinstance(value, dict):
            return "cache_control" in value or any(marked(v) for v in value.values())
        if isinstance(value, list):
            return any(marked(v) for v in value)
        return False

    return any(marked(body.get(k)) for k in ("tools", "system", "messages"))


def _mark_last_block(content: Any) -> Any:
    """The content with a breakpoint on its last block (a string becomes one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content, "cache_control": _EPHEMERAL}]
    if isinstance(content, list) and content and isinstance(content[-1], dict):
        return [*content[:-1], {**content[-1], "cache_control": _EPHEMERAL}]
    return content


def anthropic_breakpoints(body: Mapping[str, Any], min_tokens: int) -> dict[str, Any]:
    """A copy of the Messages body with breakpoints on its long stable prefixes (the client's
    own body is not changed)."""
    out = dict(body)
    if _has_breakpoint(body):
        return out
    least = min_tokens * 4  # characters
    placed = 0
    seen = 0
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[-1], dict):
        seen += _size(tools)
        if seen >= least:
            out["tools"] = [*tools[:-1], {**tools[-1], "cache_control": _EPHEMERAL}]
            placed += 1
    system = body.get("system")
    if system:
        seen += _size(system)
        if seen >= least:
            out["system"] = _mark_last_block(system)
            placed += 1
    messages = body.get("messages")
    if not isinstance(messages, list) or placed >= MAX_BREAKPOINTS:
        return out
    last_user = max((i for i, m in enumerate(messages)
                     if isinstance(m, dict) and m.get("role") == "user"), default=-1)  # fmt: skip
    if last_user < 1:
        return out
    history = messages[:last_user]
    seen += sum(_size(m.get("content")) for m in history if isinstance(m, dict))
    end = history[-1]
    if seen >= least and isinstance(end, dict) and end.get("content"):
        out["messages"] = [*history[:-1], {**end, "content": _mark_last_block(end["content"])},
                           *messages[last_user:]]  # fmt: skip
    return out


def openai_cache_key(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A copy of the body with the tenant's `prompt_cache_key`, unless the client set one."""
    out = dict(body)
    out.setdefault("prompt_cache_key", key)
    return out
