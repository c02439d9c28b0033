"""What makes two calls the same question: the canonical form of everything that affects the
output, and whose entries a call may see.

An Anthropic Messages request is keyed in its OpenAI chat form (dialects/requests.py), so
either dialect hits the other's entries; a request whose translation would lose something
that affects the answer (a document block, a tool result with images) is keyed as sent.
Fields that never change the output (the stream flag, the end-user id, metadata, vendor
prompt-cache hints) are left out; everything else is in, unknown fields included, so a
parameter added by a vendor tomorrow splits entries rather than sharing a stale one.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import orjson

from gateway.call import Call, Principal
from gateway.config.cache_schema import AliasCache
from gateway.dialects.requests import messages_to_chat

KEY_VERSION = 1
# Never change what a model says: transport, attribution and vendor caching hints.
_OPENAI_IGNORED = frozenset(
    {"model", "stream", "stream_options", "user", "metadata", "store", "service_tier",
     "prompt_cache_key", "safety_identifier", "cache_salt"}
)  # fmt: skip
_ANTHROPIC_IGNORED = frozenset({"model", "stream", "metadata", "service_tier"})
_ANTHROPIC_MAPPED = frozenset(
    {"messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p", "tools",
     "tool_choice"}
)  # fmt: skip
_TRANSLATED_BLOCKS = frozenset({"text", "image", "tool_use", "tool_result"})
# Endpoints whose answers the cache keeps; the legacy completions API is passed through.
CACHED_ENDPOINTS = frozenset({"chat.completions", "messages", "embeddings"})


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Where a call's entry lives: its namespace (the alias and the tenant, a size bound each)
    and the digest of its canonical request."""

    namespace: str
    digest: str


def namespace(alias: str, settings: AliasCache, principal: Principal) -> str:
    """The tenant part of a key. A key with no team (org) is its own namespace: callers without
    a team never share with each other by accident."""
    scope = settings.namespace
    if scope == "global":
        tenant = "global"
    elif scope == "team" and principal.team:
        tenant = f"team:{principal.team}"
    elif scope == "org" and principal.org:
        tenant = f"org:{principal.org}"
    else:
        tenant = f"key:{principal.key_id}"
    return f"{alias}/{tenant}"


def deterministic(call: Call) -> bool:
    """Asked to give the same answer again: temperature 0, or a seed (embeddings always)."""
    if call.endpoint == "embeddings":
        return True
    body = call.body
    return body.get("temperature") == 0 or body.get("seed") is not None


def canonical(call: Call) -> dict[str, Any]:
    """The request as the cache compares it (the chat form for both dialects)."""
    body = call.body
    if call.endpoint == "messages":
        if not _translates_faithfully(body):
            return {"anthropic": {k: v for k, v in body.items() if k not in _ANTHROPIC_IGNORED}}
        out = messages_to_chat(body)
        out.pop("model", None)
        out.pop("stream", None)
        extras = {k: v for k, v in body.items() if k not in _ANTHROPIC_MAPPED | _ANTHROPIC_IGNORED}
        if extras:  # top_k, thinking, ...: they change the answer and have no OpenAI twin
            out["anthropic"] = extras
    else:
        out = {k: v for k, v in body.items() if k not in _OPENAI_IGNORED}
        if "max_completion_tokens" in out and "max_tokens" not in out:
            out["max_tokens"] = out.pop("max_completion_tokens")
        if out.get("n") == 1:
            del out["n"]
    messages = out.get("messages")
    if isinstance(messages, list):
        out["messages"] = [_plain(m) for m in messages]
    return out


def digest(call: Call, alias: str, tier: str, request: dict[str, Any]) -> str:
    family = "embeddings" if call.endpoint == "embeddings" else "chat"
    material = {"v": KEY_VERSION, "alias": alias, "tier": tier, "kind": family, "req": request}
    return blake2b(orjson.dumps(material, option=orjson.OPT_SORT_KEYS), digest_size=20).hexdigest()


def _plain(message: Any) -> Any:
    """Text given as a list of text parts is the same text given as a string."""
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" for p in content
    ):
        return {**message, "content": "".join(str(p.get("text", "")) for p in content)}
    return message


def _translates_faithfully(body: dict[str, Any]) -> bool:
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for block in content:
            if not isinstance(block, dict) or block.get("type") not in _TRANSLATED_BLOCKS:
                return False
            inner = block.get("content")
            if (
                block.get("type") == "tool_result"
                and isinstance(inner, list)
                and any(not isinstance(p, dict) or p.get("type") != "text" for p in inner)
            ):
                return False
    return True


def last_user_turn(request: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """For the semantic cache: the last user turn's text, and the rest of the request (what
    must be equal for a paraphrase to be answered alike). None when the request does not end
    in a plain-text user turn."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    text = last.get("content")
    if not isinstance(text, str) or not text.strip():
        return None
    rest = {**request, "messages": messages[:-1]}
    return text, rest
