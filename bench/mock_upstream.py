"""A fast mock OpenAI upstream for benchmarks: fixed answers, optional delay, 20-chunk streams.

Raw ASGI on uvicorn + httptools so it is never the bottleneck it is meant to measure against.
Usage: python bench/mock_upstream.py --port 9001 [--delay-ms 50] [--chunks 20]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import orjson
import uvicorn

COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "The quick brown fox."},
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
)


def stream_body(chunks: int) -> list[bytes]:
    def event(payload: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench",
    }
    out = [
        event({**base, "choices": [{"index": 0, "delta": {"content": f" tok{i}"}}], "usage": None})
        for i in range(chunks)
    ]
    out.append(
        event(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": chunks,
                    "total_tokens": 12 + chunks,
                },
            }
        )
    )
    out.append(b"data: [DONE]\n\n")
    return out


def make_app(delay: float, chunks: int) -> Any:
    events = stream_body(chunks)
    json_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(COMPLETION)).encode()),
    ]
    sse_headers = [(b"content-type", b"text/event-stream")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if delay:
            await asyncio.sleep(delay)
        if b'"stream":true' in body:
            await send({"type": "http.response.start", "status": 200, "headers": sse_headers})
            for e in events:
                await send({"type": "http.response.body", "body": e, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send({"type": "http.response.start", "status": 200, "headers": json_headers})
        await send({"type": "http.response.body", "body": COMPLETION})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.delay_ms / 1000, args.chunks),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
