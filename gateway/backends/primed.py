"""An upstream stream whose first block has been read and found to be an event stream.

Read before the client's reply starts: an upstream that answers a stream request with
something that is not server-sent events carrying JSON objects is then a failed attempt (502,
or a retry on another replica), never a 200 full of noise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from gateway.backends.base import UpstreamStream
from gateway.backends.sse import EventSplitter, event_data
from gateway.call import ResponseMeta, Usage
from gateway.errors import UpstreamBadResponse


class Primed:
    """An upstream stream whose first block has been read and found to be an event stream."""

    def __init__(self, inner: UpstreamStream, first: bytes, rest: AsyncIterator[bytes]) -> None:
        self._inner = inner
        self._first: bytes | None = first
        self._rest = rest

    @classmethod
    async def start(cls, inner: UpstreamStream, dialect: str) -> Primed:
        rest = inner.__aiter__()
        try:
            first = await anext(rest)
        except StopAsyncIteration:
            first = b""
        except BaseException:
            await inner.aclose()
            raise
        problem = _not_events(first)
        if problem is not None:
            await inner.aclose()
            raise UpstreamBadResponse(
                "The upstream returned an invalid stream.", detail=f"stream: {problem}"
            )
        return cls(inner, first, rest)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for block in self._rest:
            yield block

    def usage(self) -> Usage:
        return self._inner.usage()

    def meta(self) -> ResponseMeta | None:
        return self._inner.meta()

    async def aclose(self) -> None:
        await self._inner.aclose()


def _not_events(block: bytes) -> str | None:
    """Why a stream's first block is not server-sent events carrying JSON (None: it is)."""
    if not block.strip():
        return "empty"
    events = EventSplitter().feed(block if block.endswith(b"\n\n") else block + b"\n\n")
    for event in events:
        data = event_data(event)
        if data is None:
            continue
        if data == b"[DONE]":
            return None
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return f"not JSON: {block[:120]!r}"
        return None if isinstance(parsed, dict) else f"not an object: {block[:120]!r}"
    return f"no event: {block[:120]!r}"


# The event that ends a stream in each dialect: the call is recorded just before it is sent.
_OPENAI_END = b"data: [DONE]\n\n"
_ANTHROPIC_END = b"event: message_stop"
