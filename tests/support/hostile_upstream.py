"""An OpenAI-compatible upstream that misbehaves on purpose, chosen by the requested model:

- leaky-401: a 401 whose message echoes the gateway's upstream key
- html-500 / text-400: error bodies that are not JSON
- garbage-200 / html-200 / list-200: a 200 that is not a chat completion
- garbage-sse: a stream of lines that are not server-sent events
- cut-stream: three content chunks, then the connection ends with no [DONE]
- huge-usage / negative-usage / string-usage / float-usage / over-output: impossible usage
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM_SECRET = "sk-UPSTREAM-hostile-0123456789abcdef"

USAGE: dict[str, dict[str, Any]] = {
    "huge-usage": {"prompt_tokens": 1e16, "completion_tokens": 5},
    "negative-usage": {"prompt_tokens": -500, "completion_tokens": -10},
    "string-usage": {"prompt_tokens": "lots", "completion_tokens": 5},
    "float-usage": {"prompt_tokens": 1e308, "completion_tokens": 5},
    "over-output": {"prompt_tokens": 10, "completion_tokens": 100_000},
}


def _completion(model: str, usage: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-hostile",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "one two three four five"},
                }
            ],
            "usage": usage,
        }
    )


def _chunk(content: str) -> bytes:
    payload = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "cut-stream",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class HostileUpstream:
    def __init__(self) -> None:
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    async def _chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        model, stream = body["model"], body.get("stream") is True
        if model == "leaky-401":
            message = f"Incorrect API key provided: Bearer {UPSTREAM_SECRET}"
            error = {"error": {"message": message, "type": "invalid_request_error"}}
            return Response(orjson.dumps(error), 401, media_type="application/json")
        if model == "html-500":
            return Response(b"<html><body>nginx 500</body></html>", 500, media_type="text/html")
        if model == "text-400":
            return Response(b"bad request, says the proxy", 400, media_type="text/plain")
        if model == "garbage-200":
            return Response(b"this is not json {", 200, media_type="application/json")
        if model == "html-200":
            return Response(b"<html>maintenance</html>", 200, media_type="text/html")
        if model == "list-200":
            return Response(b"[1, 2, 3]", 200, media_type="application/json")
        if model == "garbage-sse":
            return StreamingResponse(_lines(), media_type="text/event-stream")
        if model == "cut-stream":
            return StreamingResponse(_cut(), media_type="text/event-stream")
        usage = USAGE[model]
        if stream:
            return StreamingResponse(_usage_stream(model, usage), media_type="text/event-stream")
        return Response(_completion(model, usage), media_type="application/json")


async def _lines() -> AsyncIterator[bytes]:
    yield b"hello there\n\nthis is not an event stream\n\n"


async def _cut() -> AsyncIterator[bytes]:
    for word in (" one", " two", " three"):
        yield _chunk(word)


async def _usage_stream(model: str, usage: dict[str, Any]) -> AsyncIterator[bytes]:
    yield _chunk("one two")
    payload = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": model}
    yield b"data: " + orjson.dumps({**payload, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"
