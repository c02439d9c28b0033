"""A scriptable Anthropic Messages upstream. Behaviour by requested model:

- claude-fake: answers "Hello from Claude." (usage with cache read/write tokens); streams it as
  Anthropic does (message_start, ping, content_block_*, message_delta, message_stop); when the
  request offers tools and the last turn is not a tool result, it calls the first tool
- claude-429 / claude-529 / claude-long: rate limit (retry-after 9), overloaded, prompt too long
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

USAGE = {
    "input_tokens": 20,
    "cache_creation_input_tokens": 5,
    "cache_read_input_tokens": 100,
    "output_tokens": 6,
}
ERRORS = {
    "claude-429": (429, "rate_limit_error", "Number of requests has exceeded your rate limit"),
    "claude-529": (529, "overloaded_error", "Overloaded"),
    "claude-long": (400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000"),
}


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class FakeAnthropic:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count, methods=["POST"]),
            ]
        )

    async def _count(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        return Response(orjson.dumps({"input_tokens": 1234}), media_type="application/json")

    async def _messages(self, request: Request) -> Response:
        body: dict[str, Any] = orjson.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if body["model"] in ERRORS:
            status, kind, message = ERRORS[body["model"]]
            headers = {"retry-after": "9"} if status == 429 else {}
            payload = {"type": "error", "error": {"type": kind, "message": message}}
            return Response(
                orjson.dumps(payload), status, headers=headers, media_type="application/json"
            )
        content = self._content(body)
        stop = "tool_use" if content[0]["type"] == "tool_use" else "end_turn"
        if body.get("stream"):
            return StreamingResponse(
                self._stream(body, content, stop), media_type="text/event-stream"
            )
        message = {
            "id": "msg_fake01",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": USAGE,
        }
        return Response(orjson.dumps(message), media_type="application/json")

    @staticmethod
    def _content(body: dict[str, Any]) -> list[dict[str, Any]]:
        last = body["messages"][-1]["content"]
        answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
        if body.get("tools") and not answered:
            tool = body["tools"][0]
            return [
                {
                    "type": "tool_use",
                    "id": "toolu_fake1",
                    "name": tool["name"],
                    "input": {"city": "Paris"},
                }
            ]
        text = "Hello from Claude." if not answered else "It is sunny in Paris."
        return [{"type": "text", "text": text}]

    async def _stream(
        self, body: dict[str, Any], content: list[dict[str, Any]], stop: str
    ) -> AsyncIterator[bytes]:
        start_usage = {**USAGE, "output_tokens": 1}
        message = {
            "id": "msg_fake02", "type": "message", "role": "assistant", "model": body["model"],
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage,
        }  # fmt: skip
        yield _event("message_start", {"type": "message_start", "message": message})
        yield _event("ping", {"type": "ping"})
        block = content[0]
        if block["type"] == "text":
            yield _start(0, {"type": "text", "text": ""})
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                await asyncio.sleep(0)
                yield _delta(0, {"type": "text_delta", "text": word if i == 0 else " " + word})
        else:
            yield _start(0, {**block, "input": {}})
            raw = orjson.dumps(block["input"]).decode()
            for part in (raw[:5], raw[5:]):
                yield _delta(0, {"type": "input_json_delta", "partial_json": part})
        yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        final = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": USAGE["output_tokens"]},
        }
        yield _event("message_delta", final)
        yield _event("message_stop", {"type": "message_stop"})


def _start(index: int, block: dict[str, Any]) -> bytes:
    payload = {"type": "content_block_start", "index": index, "content_block": block}
    return _event("content_block_start", payload)


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    payload = {"type": "content_block_delta", "index": index, "delta": delta}
    return _event("content_block_delta", payload)
