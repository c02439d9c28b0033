"""An httpx transport that calls an ASGI app in-process and streams its response as it is sent.

httpx's own ASGITransport collects the whole body before returning, which would turn every
stream into one late chunk; the simulator behind the embedded gateway must stream for real.
Closing the response early cancels the app, as a dropped connection would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx

_END = object()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    def __init__(self, app: Any) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": ("127.0.0.1", 0),
            "server": (request.url.host, request.url.port or 80),
        }
        exchange = _Exchange(body)
        task = asyncio.create_task(exchange.run(self._app, scope))
        try:
            status, headers = await exchange.wait_start()
        except BaseException:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        return httpx.Response(
            status, headers=headers, stream=_Body(exchange, task), request=request
        )


class _Exchange:
    def __init__(self, body: bytes) -> None:
        self._body = body
        self._body_sent = False
        self._disconnected = asyncio.Event()
        self._start: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future()
        )
        self.chunks: asyncio.Queue[object] = asyncio.Queue()

    async def run(self, app: Any, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self._receive, self._send)
        except BaseException as exc:
            if not self._start.done():
                self._start.set_exception(httpx.RemoteProtocolError(f"app failed: {exc!r}"))
            else:
                self.chunks.put_nowait(httpx.ReadError(f"stream cut: {exc}"))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if not self._start.done():
            self._start.set_exception(httpx.RemoteProtocolError("app sent no response"))
        self.chunks.put_nowait(_END)

    async def wait_start(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        return await self._start

    async def _receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._disconnected.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self._start.set_result((message["status"], list(message.get("headers", []))))
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            if chunk:
                self.chunks.put_nowait(chunk)
            if not message.get("more_body", False):
                self.chunks.put_nowait(_END)

    def disconnect(self) -> None:
        self._disconnected.set()


class _Body(httpx.AsyncByteStream):
    def __init__(self, exchange: _Exchange, task: asyncio.Task[None]) -> None:
        self._exchange = exchange
        self._task = task

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._exchange.chunks.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    async def aclose(self) -> None:
        self._exchange.disconnect()
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
