"""A scriptable OpenAI-compatible upstream. Behaviour is chosen by the requested model name:

- fake-chat: answers; streams 5 content chunks (+ usage chunk only when include_usage is asked)
- no-usage: never reports usage (the gateway must count tokens itself)
- slow: waits 3 s before answering (timeout tests)
- endless: streams a chunk every 20 ms until the client goes away (records the cancellation)
- rate-limited: 429 with a retry-after header and OpenAI's error body
- metered: after 50 ms, reports exactly what the gateway reserves for it (prompt counted as
  the gateway counts it, completion = max_tokens), so budget arithmetic can be exact
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.accounting.tokens import TokenCounter


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.cancelled = threading.Event()
        self.tokens = TokenCounter()
        self.azure: list[tuple[str, str, str]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route(
                    "/openai/deployments/{deployment}/chat/completions",
                    self._azure_chat,
                    methods=["POST"],
                ),
                Route(
                    "/openai/deployments/{deployment}/embeddings",
                    self._embeddings,
                    methods=["POST"],
                ),
            ]
        )

    async def _record(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        return body

    async def _azure_chat(self, request: Request) -> Response:
        """Azure OpenAI's URL scheme: the deployment in the path, api-version in the query."""
        self.azure.append(
            (
                request.path_params["deployment"],
                request.query_params.get("api-version", ""),
                request.headers.get("api-key", ""),
            )
        )
        return await self._chat(request)

    async def _chat(self, request: Request) -> Response:
        body = await self._record(request)
        model = body["model"]
        if model == "rate-limited":
            return Response(
                orjson.dumps(
                    {
                        "error": {
                            "message": "slow down",
                            "type": "requests",
                            "param": None,
                            "code": "rate_limit_exceeded",
                        }
                    }
                ),
                429,
                headers={"retry-after": "7"},
                media_type="application/json",
            )
        if model == "slow":
            await asyncio.sleep(3)
        if model == "endless":
            return StreamingResponse(self._endless(), media_type="text/event-stream")
        if model == "metered":
            return await self._metered(body)
        if body.get("stream"):
            return StreamingResponse(self._stream(body), media_type="text/event-stream")
        answer: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hello from the fake."},
                }
            ],
        }
        if model != "no-usage":
            answer["usage"] = {
                "prompt_tokens": 11,
                "completion_tokens": 5,
                "total_tokens": 16,
                "prompt_tokens_details": {"cached_tokens": 3},
            }
        return Response(orjson.dumps(answer), media_type="application/json")

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        include = (body.get("stream_options") or {}).get("include_usage") is True
        usage_field = {"usage": None} if include else {}
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": body["model"],
        }
        yield _event(
            {
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
                **usage_field,
            }
        )
        for word in ["one", " two", " three", " four", " five"]:
            await asyncio.sleep(0)
            yield _event(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                    **usage_field,
                }
            )
        yield _event(
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **usage_field}
        )
        if include and body["model"] != "no-usage":
            yield _event(
                {
                    **base,
                    "choices": [],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
                }
            )
        yield b"data: [DONE]\n\n"

    async def _metered(self, body: dict[str, Any]) -> Response:
        await asyncio.sleep(0.05)
        prompt = self.tokens.count_messages(body["messages"])
        completion = int(body.get("max_tokens") or 16)
        answer = {
            "id": "chatcmpl-metered",
            "object": "chat.completion",
            "created": 1,
            "model": "metered",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "message": {"role": "assistant", "content": "word " * completion},
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    async def _endless(self) -> AsyncIterator[bytes]:
        base = {
            "id": "chatcmpl-endless",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "endless",
        }
        try:
            while True:
                yield _event({**base, "choices": [{"index": 0, "delta": {"content": " tick"}}]})
                await asyncio.sleep(0.02)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise

    async def _completions(self, request: Request) -> Response:
        body = await self._record(request)
        answer = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "text": " done", "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    async def _embeddings(self, request: Request) -> Response:
        body = await self._record(request)
        answer = {
            "object": "list",
            "model": body["model"],
            "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        }
        return Response(orjson.dumps(answer), media_type="application/json")


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
