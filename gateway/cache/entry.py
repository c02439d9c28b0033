"""A cache entry: an answer in one neutral form (an OpenAI chat completion, or an embeddings
list), whichever dialect produced it, with the usage it took and, for the semantic cache, the
question it answered. Read back from the bytes a store holds; what fails to decode is no
entry (the caller drops it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.backends.sse import json_events
from gateway.call import Call, Usage
from gateway.dialects.responses import message_to_chat_completion
from gateway.dialects.streams import EventsToChunks

ENTRY_VERSION = 1


@dataclass(frozen=True, slots=True)
class Entry:
    body: dict[str, Any]  # a chat.completion, or an embeddings list
    usage: Usage
    created: float
    question: str | None = None  # the last user turn (semantic entries)

    def encode(self) -> bytes:
        u = self.usage
        return orjson.dumps(
            {"v": ENTRY_VERSION, "body": self.body, "created": self.created, "q": self.question,
             "u": [u.input_tokens, u.output_tokens, u.cached_tokens, u.cache_write_tokens]}
        )  # fmt: skip

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or data.get("v") != ENTRY_VERSION:
                return None
            body, used, question = data["body"], data["u"], data.get("q")
            if not isinstance(body, dict) or not isinstance(used, list) or len(used) != 4:
                return None
            usage = Usage(int(used[0]), int(used[1]), int(used[2]), int(used[3]))
            return cls(body, usage, float(data["created"]), question)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def captured(call: Call, raw: bytes, usage: Usage, now: float) -> Entry | None:
    """The entry for an answer as the client received it (whole or streamed, either dialect);
    None for anything that is not a complete, successful answer."""
    try:
        if call.endpoint == "embeddings":
            payload = orjson.loads(raw)
            ok = isinstance(payload, dict) and isinstance(payload.get("data"), list)
            return Entry(payload, usage, now) if ok else None
        if call.stream:
            completion = _from_stream(raw, call.dialect)
        else:
            completion = _from_whole(orjson.loads(raw), call.dialect, usage)
    except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
        return None
    if completion is None:
        return None
    completion.pop("usage", None)
    return Entry(completion, usage, now)


def _from_whole(payload: Any, dialect: str, usage: Usage) -> dict[str, Any] | None:
    if not isinstance(payload, dict):
        return None
    if dialect == "anthropic":
        if payload.get("type") != "message" or not payload.get("stop_reason"):
            return None
        return message_to_chat_completion(payload, usage)
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        return None
    if any(not isinstance(c, dict) or not c.get("finish_reason") for c in choices):
        return None
    return dict(payload)


def _from_stream(raw: bytes, dialect: str) -> dict[str, Any] | None:
    events = json_events(raw)
    if dialect == "anthropic":  # read as the chunks the bridge would have made of it
        chunks = EventsToChunks(include_usage=False)
        events = json_events(b"".join(chunks.feed(e) for e in events))
    head: dict[str, Any] = {}
    choices: dict[int, _Choice] = {}
    for event in events:
        if "error" in event:
            return None
        for name in ("id", "created", "model", "system_fingerprint"):
            if name in event and name not in head:
                head[name] = event[name]
        for choice in event.get("choices") or ():
            index = int(choice.get("index", 0))
            choices.setdefault(index, _Choice()).add(choice)
    if not choices or any(c.finish is None for c in choices.values()):
        return None
    return {
        **head,
        "object": "chat.completion",
        "choices": [choices[i].whole(i) for i in sorted(choices)],
    }


class _Choice:
    __slots__ = ("finish", "text", "tools")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            self.text.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            slot = self.tools.setdefault(
                int(call.get("index", 0)), {"id": None, "name": "", "arguments": []}
            )
            slot["id"] = call.get("id") or slot["id"]
            function = call.get("function") or {}
            slot["name"] = function.get("name") or slot["name"]
            slot["arguments"].append(function.get("arguments") or "")
        if choice.get("finish_reason"):
            self.finish = str(choice["finish_reason"])

    def whole(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None}
        if self.tools:
            message["tool_calls"] = [
                {"id": t["id"], "type": "function",
                 "function": {"name": t["name"], "arguments": "".join(t["arguments"])}}
                for _, t in sorted(self.tools.items())
            ]  # fmt: skip
        return {"index": index, "message": message, "finish_reason": self.finish, "logprobs": None}
