"""A stand-in OpenTelemetry Collector for benchmarks: accepts OTLP/HTTP exports, counts the
bytes, answers 200 at once. Raw ASGI on uvicorn so it costs the gateway nothing but the send.

Usage: python bench/mock_collector.py --port 4318
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn


def make_app() -> Any:
    received = {"requests": 0, "bytes": 0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            received["bytes"] += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        received["requests"] += 1
        headers = [(b"content-type", b"application/x-protobuf")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(), host="127.0.0.1", port=args.port, log_level="error", http="httptools")


if __name__ == "__main__":
    main()
