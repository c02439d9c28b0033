"""An entry played back to the client who asked, in its dialect: a whole body, or a stream
with the events a live answer would have had (the usage chunk when the client asked for it),
whichever dialect the entry came from."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson

from gateway.cache.entry import Entry
from gateway.call import Call, ResponseMeta, Usage
from gateway.dialects.responses import chat_completion_to_message
from gateway.dialects.streams import ChunksToEvents, openai_event
from gateway.dialects.usage import openai_usage

# A streamed text is cut into pieces of about this many words: what clients render as it comes.
_WORDS_PER_PIECE = 4
_PIECES = re.compile(rf"(?:\S+\s*){{1,{_WORDS_PER_PIECE}}}|\s+")


def whole(entry: Entry, call: Call) -> bytes:
    if call.endpoint == "embeddings":
        return orjson.dumps(entry.body)
    completion = _fresh(entry, call)
    if call.dialect == "anthropic":
        message = chat_completion_to_message(completion, entry.usage, _stops(call))
        return orjson.dumps(message)
    completion["usage"] = openai_usage(entry.usage)
    return orjson.dumps(completion)


class ReplayStream:
    """The entry as server-sent events, behind the same interface as an upstream's stream, so
    the relay records a replayed answer exactly as a live one."""

    def __init__(self, entry: Entry, call: Call) -> None:
        self._usage = entry.usage
        completion = _fresh(entry, call)
        self._meta = ResponseMeta(
            completion.get("id"),
            completion.get("model"),
            tuple(str(c.get("finish_reason")) for c in completion.get("choices") or ()),
        )
        chunks = list(_chunks(completion))
        if call.dialect == "anthropic":
            events = ChunksToEvents(entry.usage.input_tokens, _stops(call))
            first = [c for c in chunks if all(ch.get("index") == 0 for ch in c["choices"])]
            self._body = b"".join(events.feed(c) for c in first) + events.finish(entry.usage)
        else:
            if call.client_wants_usage:
                chunks.append({**_head(completion), "choices": [],
                               "usage": openai_usage(entry.usage)})  # fmt: skip
            self._body = b"".join(openai_event(c) for c in chunks) + b"data: [DONE]\n\n"

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        yield self._body

    def usage(self) -> Usage:
        return self._usage

    def meta(self) -> ResponseMeta | None:
        return self._meta

    async def aclose(self) -> None:
        return None


def _fresh(entry: Entry, call: Call) -> dict[str, Any]:
    """The entry's completion under this call's own id (a client may key on ids)."""
    completion = dict(entry.body)
    completion["id"] = f"chatcmpl-{call.request_id}"
    return completion


def _stops(call: Call) -> Sequence[str]:
    stops = call.body.get("stop_sequences")
    return tuple(s for s in stops if isinstance(s, str)) if isinstance(stops, list) else ()


def _head(completion: dict[str, Any]) -> dict[str, Any]:
    head = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }
    if "system_fingerprint" in completion:
        head["system_fingerprint"] = completion["system_fingerprint"]
    return head


def _chunks(completion: dict[str, Any]) -> list[dict[str, Any]]:
    head = _head(completion)

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": index, "delta": delta, "finish_reason": finish,
                                     "logprobs": None}]}  # fmt: skip

    out = []
    for choice in completion.get("choices") or ():
        index = int(choice.get("index", 0))
        message = choice.get("message") or {}
        out.append(chunk(index, {"role": "assistant", "content": ""}))
        text = message.get("content")
        if isinstance(text, str):
            out.extend(chunk(index, {"content": piece}) for piece in _PIECES.findall(text))
        for position, call in enumerate(message.get("tool_calls") or ()):
            delta = {"index": position, "id": call.get("id"), "type": "function",
                     "function": call.get("function") or {}}  # fmt: skip
            out.append(chunk(index, {"tool_calls": [delta]}))
        out.append(chunk(index, {}, str(choice.get("finish_reason") or "stop")))
    return out
