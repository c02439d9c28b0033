"""Lean ASGI plumbing for the hot path: bounded body reads, replies, streams that notice a
vanished client at once and stop the upstream with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from starlette.types import Receive, Scope, Send

from gateway.errors import InvalidRequest, PayloadTooLarge, TollgateError, UpstreamTimeout
from gateway.pipeline import Reply
from gateway.relay import StreamReply

ErrorEvent = Callable[[TollgateError], bytes]

log = logging.getLogger("gateway.api")


async def read_body(
    receive: Receive, limit: int, content_length: int | None, per_read_s: float = 30.0
) -> bytes:
    """The whole body, each part within `per_read_s` of the previous one (a client trickling
    its body cannot hold a connection and a task for ever)."""
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(
            f"Request body of {content_length} bytes exceeds the limit of {limit} bytes."
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout(per_read_s):
                message = await receive()
        except TimeoutError as exc:
            raise InvalidRequest(
                f"The request body was not received within {per_read_s:g} s.",
                status=408,
                code="request_timeout",
            ) from exc
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError("client disconnected before sending its body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def raw_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ClientWatch:
    """Cancels the handling task once: when the client disconnects, or at a deadline.

    Listening for a disconnect costs a task and a pending read per request, about a third of
    the gateway's CPU for a fast upstream, so it starts only once a call (stream or not) has
    lasted `grace` seconds. A client that leaves within the grace period is noticed then; the
    upstream work that burns GPU time is the long kind.
    The handler catches the CancelledError and asks `reason` whether it was ours.
    """

    __slots__ = ("_receive", "_starter", "_task", "_timer", "_watcher", "reason")

    def __init__(self, receive: Receive, grace: float) -> None:
        self.reason: str | None = None
        self._receive = receive
        self._task = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._starter = asyncio.get_running_loop().call_later(grace, self._listen)

    def _listen(self) -> None:
        if self._watcher is None and self.reason is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._fire("disconnect")

    def expire_at(self, deadline: float) -> None:
        self._timer = asyncio.get_running_loop().call_at(deadline, self._fire, "deadline")

    def _fire(self, reason: str) -> None:
        if self.reason is None and self._task is not None:
            self.reason = reason
            self._task.cancel()

    def stop(self) -> None:
        self._starter.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


async def send_stream(
    send: Send,
    watch: ClientWatch,
    reply: Reply,
    headers: list[tuple[bytes, bytes]],
    error_event: ErrorEvent,
) -> None:
    """Relays the stream; always closes it with what happened (done, error, gone, timed out)."""
    stream = reply.stream
    assert stream is not None
    watch.expire_at(stream.deadline)
    headers.append((b"cache-control", b"no-cache"))
    try:
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except asyncio.CancelledError:
        if watch.reason is None:
            await _close_quietly(stream, disconnected=True)
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        if watch.reason == "deadline":
            await _end_with_error(
                send,
                stream,
                UpstreamTimeout("The upstream stream exceeded the total timeout."),
                error_event,
            )
        else:
            await stream.close(disconnected=True)
        return
    except TollgateError as err:
        watch.stop()
        await _end_with_error(send, stream, err, error_event)
        return
    watch.stop()
    await stream.close()
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _end_with_error(
    send: Send, stream: StreamReply, err: TollgateError, error_event: ErrorEvent
) -> None:
    await stream.close(error=err)
    try:
        await send({"type": "http.response.body", "body": error_event(err), "more_body": False})
    except OSError:
        log.debug("client gone before the stream error could be sent")


async def _close_quietly(stream: StreamReply, *, disconnected: bool) -> None:
    try:
        await asyncio.shield(stream.close(disconnected=disconnected))
    except BaseException:
        log.debug("stream close during cancellation failed", exc_info=True)


_FORWARD = (b"anthropic-version", b"anthropic-beta")


class RequestHeaders:
    """The few request headers the endpoints read, found in one pass: the key (Bearer, or
    Anthropic's `x-api-key`), body length, user agent, and the Anthropic headers an Anthropic
    upstream must see."""

    __slots__ = (
        "api_key",
        "authorization",
        "content_length",
        "forward",
        "traceparent",
        "tracestate",
        "user_agent",
    )

    def __init__(self, scope: Scope) -> None:
        self.api_key: str | None = None
        self.authorization: str | None = None
        self.content_length: int | None = None
        self.user_agent: str | None = None
        self.traceparent: str | None = None
        self.tracestate: str | None = None
        self.forward: list[tuple[str, str]] = []
        for key, value in scope["headers"]:
            if key == b"authorization":
                self.authorization = value.decode("latin-1")
            elif key == b"content-length" and value.isdigit():
                self.content_length = int(value)
            elif key == b"user-agent":
                self.user_agent = value.decode("latin-1")
            elif key == b"x-api-key":
                self.api_key = value.decode("latin-1").strip() or None
            elif key in _FORWARD:
                self.forward.append((key.decode(), value.decode("latin-1")))
            elif key == b"traceparent":
                self.traceparent = value.decode("latin-1")
            elif key == b"tracestate":
                self.tracestate = value.decode("latin-1")

    def bearer(self) -> str | None:
        auth = self.authorization
        if auth and auth[:7].lower() == "bearer ":
            return auth[7:].strip() or None
        return None

    def key(self) -> str | None:
        """Anthropic clients send `x-api-key`; Bearer is accepted too."""
        return self.api_key or self.bearer()
