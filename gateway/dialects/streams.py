"""Streams across dialects, event by event: OpenAI chat.completion.chunk <-> Anthropic events.

Each translator takes parsed upstream payloads one at a time and returns the client's bytes
for them at once, so a translated stream is as live as a native one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.call import Usage
from gateway.dialects.errors import OPENAI_TYPE_BY_ANTHROPIC
from gateway.dialects.responses import (
    FINISH_TO_STOP,
    STOP_TO_FINISH,
    chat_id,
    matched_stop,
    message_id,
)
from gateway.dialects.usage import anthropic_usage, openai_usage, usage_from_anthropic


def anthropic_event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def openai_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ChunksToEvents:
    """OpenAI chunks in, Anthropic Messages stream events out."""

    def __init__(self, prompt_tokens: int, stop_sequences: Sequence[str] = ()) -> None:
        self._prompt = prompt_tokens
        self._stop_sequences = stop_sequences
        self._matched: str | None = None
        self._started = False
        self._index = -1
        self._open: tuple[str, int] | None = None  # ("text", -1) or ("tool", openai index)
        self._tools: dict[int, int] = {}
        self._stop: str | None = None
        self.usage: Usage | None = None

    def feed(self, chunk: dict[str, Any]) -> bytes:
        error = chunk.get("error")
        if isinstance(error, dict):  # an upstream error inside the stream: say it Anthropic's way
            message = str(error.get("message") or "upstream error")
            kind = "overloaded_error" if "overload" in message.lower() else "api_error"
            payload = {"type": "error", "error": {"type": kind, "message": message}}
            return anthropic_event("error", payload)
        out = [] if self._started else [self._start(chunk)]
        reported = chunk.get("usage")
        if isinstance(reported, dict) and "prompt_tokens" in reported:
            details = reported.get("prompt_tokens_details") or {}
            self.usage = Usage(
                int(reported.get("prompt_tokens") or 0),
                int(reported.get("completion_tokens") or 0),
                int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
            )
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Anthropic has one candidate; n > 1 keeps the first
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(self._text(text))
            for call in delta.get("tool_calls") or ():
                out.append(self._tool(call))
            if choice.get("finish_reason"):
                self._stop = FINISH_TO_STOP.get(str(choice["finish_reason"]), "end_turn")
                self._matched = matched_stop(choice, self._stop_sequences)
                if self._matched is not None:
                    self._stop = "stop_sequence"
        return b"".join(out)

    def finish(self, usage: Usage) -> bytes:
        """The closing events; `usage` is the stream's final usage (reported or estimated)."""
        out = [] if self._started else [self._start({})]
        out.append(self._close())
        out.append(
            anthropic_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self._stop or "end_turn",
                        "stop_sequence": self._matched,
                    },
                    "usage": anthropic_usage(usage),
                },
            )
        )
        out.append(anthropic_event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id") or f"tg{int(time.time() * 1000)}"),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._prompt, "output_tokens": 0},
        }
        return anthropic_event("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return anthropic_event(
            "content_block_stop", {"type": "content_block_stop", "index": self._index}
        )

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open is None or self._open[0] != "text":
            out = self._close()
            self._index += 1
            self._open = ("text", -1)
            out += anthropic_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": self._index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        return out + anthropic_event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": self._index,
                "delta": {"type": "text_delta", "text": text},
            },
        )

    def _tool(self, call: dict[str, Any]) -> bytes:
        position = int(call.get("index", 0))
        function = call.get("function") or {}
        out = b""
        if position not in self._tools:
            out = self._close()
            self._index += 1
            self._tools[position] = self._index
            self._open = ("tool", position)
            out += anthropic_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": self._index,
                    "content_block": {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": {},
                    },
                },
            )
        arguments = function.get("arguments")
        if arguments:
            out += anthropic_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._tools[position],
                    "delta": {"type": "input_json_delta", "partial_json": arguments},
                },
            )
        return out


class EventsToChunks:
    """Anthropic Messages stream events in, OpenAI chunks out."""

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._id = "chatcmpl-tollgate"
        self._model: Any = None
        self._created = int(time.time())
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._start: dict[str, Any] | None = None
        self._output = 0
        self._final: dict[str, Any] | None = None
        self.usage: Usage | None = None

    def feed(self, event: dict[str, Any]) -> bytes:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._id = chat_id(message.get("id"))
            self._model = message.get("model")
            self._start = message.get("usage") or {}
            self.usage = usage_from_anthropic(self._start)
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use":
                return b""
            position = len(self._tools)
            self._tools[int(event.get("index", 0))] = position
            call = {
                "index": position,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "message_delta":
            return self._message_delta(event)
        if kind == "message_stop":
            return self._stop()
        if kind == "error":  # Anthropic's in-stream error (e.g. overloaded): OpenAI's shape
            error = event.get("error") or {}
            payload = {
                "error": {
                    "message": str(error.get("message") or "upstream error"),
                    "type": OPENAI_TYPE_BY_ANTHROPIC.get(str(error.get("type")), "api_error"),
                    "param": None,
                    "code": None,
                }
            }
            return openai_event(payload)
        return b""  # ping, content_block_stop, thinking blocks: nothing to say in OpenAI's dialect

    def _delta(self, event: dict[str, Any]) -> bytes:
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta":
            return self._chunk({"content": delta.get("text", "")})
        if delta.get("type") == "input_json_delta":
            position = self._tools.get(int(event.get("index", 0)))
            if position is None:
                return b""
            call = {"index": position, "function": {"arguments": delta.get("partial_json", "")}}
            return self._chunk({"tool_calls": [call]})
        return b""

    def _message_delta(self, event: dict[str, Any]) -> bytes:
        usage = event.get("usage") or {}
        merged = {**(self._start or {}), **{k: v for k, v in usage.items() if v is not None}}
        merged.setdefault("input_tokens", 0)
        self.usage = usage_from_anthropic(merged)
        stop = (event.get("delta") or {}).get("stop_reason")
        finish = STOP_TO_FINISH.get(str(stop), "stop") if stop else "stop"
        return self._chunk({}, finish)

    def _stop(self) -> bytes:
        out = b""
        if self._include_usage and self.usage is not None:
            payload = self._base()
            payload["choices"] = []
            payload["usage"] = openai_usage(self.usage)
            out = openai_event(payload)
        return out + b"data: [DONE]\n\n"

    def _base(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = self._base()
        payload["choices"] = [
            {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        ]
        return openai_event(payload)
