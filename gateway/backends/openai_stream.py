"""Relays an OpenAI-dialect event stream as it arrives, learning usage on the way.

Tollgate always asks the upstream for usage (`stream_options.include_usage`). When the client
did not ask, the usage-only chunk is dropped and the `"usage": null` the upstream adds to every
other chunk is removed, so the client sees exactly what it would have seen without us.

Work is done per block (the whole events one upstream read delivered), not per event: almost
every block only needs a C-level replace, and only the block holding the usage object is taken
apart event by event. Measured ~20 events per stream but ~3 blocks.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import orjson

from gateway.accounting.tokens import TokenCounter
from gateway.backends.base import UpstreamRequest
from gateway.backends.errors import map_transport_error
from gateway.backends.openai_usage import usage_from_openai, usage_of_chunks
from gateway.backends.sse import EventSplitter, event_data
from gateway.call import Usage

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_USAGE_NULL_FIELD = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')
_COMPACT_NULL = b',"usage":null'


class StreamRelay:
    """Iterate for the client's bytes; `usage()` once done; `aclose()` always (it frees the
    connection slot, and closing early drops the upstream connection: the generation stops)."""

    def __init__(
        self,
        response: httpx.Response,
        chunks: AsyncIterator[bytes],
        request: UpstreamRequest,
        tokens: TokenCounter,
        backend: str,
        slots: asyncio.Semaphore,
    ) -> None:
        self._response = response
        self._chunks = chunks
        self._slots: asyncio.Semaphore | None = slots
        self._request = request
        self._hide_usage = not request.client_wants_usage
        self._tokens = tokens
        self._backend = backend
        self._reported: Usage | None = None
        self._seen: list[bytes] = []  # relayed blocks, kept until usage is reported

    async def __aiter__(self) -> AsyncIterator[bytes]:
        splitter = EventSplitter()
        try:
            async for raw in self._chunks:
                events = splitter.feed(raw)
                if events:
                    block = self._block(events)
                    if block:
                        yield block
            rest = splitter.rest()
            if rest.strip():
                yield rest
        except (httpx.HTTPError, OSError) as exc:
            raise map_transport_error(exc, self._backend) from exc

    def _block(self, events: list[bytes]) -> bytes:
        block = events[0] if len(events) == 1 else b"".join(events)
        if b'"usage"' in block:
            if _USAGE_OBJECT.search(block):
                block = b"".join(e for e in map(self._usage_event, events) if e)
            elif self._hide_usage:
                block = block.replace(_COMPACT_NULL, b"")
                if b'"usage"' in block:  # not compact JSON: the general form
                    block = _USAGE_NULL_FIELD.sub(b"", block)
        if self._reported is None:
            self._seen.append(block)
        return block

    def _usage_event(self, event: bytes) -> bytes:
        """One event of a block that holds a usage object: learn it, hide what must be hidden."""
        data = event_data(event)
        if data is None or not _USAGE_OBJECT.search(data):
            if self._hide_usage and data is not None and b'"usage"' in data:
                return _USAGE_NULL_FIELD.sub(b"", event, count=1)
            return event
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        usage = usage_from_openai(chunk.get("usage")) if isinstance(chunk, dict) else None
        if usage is None:
            return event
        self._reported = usage
        if self._hide_usage and not chunk.get("choices"):
            return b""
        return event

    def usage(self) -> Usage:
        """Reported usage, or an estimate from the events relayed so far."""
        if self._reported is not None:
            return self._reported
        splitter = EventSplitter()
        payloads = [
            data
            for block in self._seen
            for event in splitter.feed(block)
            if (data := event_data(event)) is not None and data != b"[DONE]"
        ]
        return usage_of_chunks(payloads, self._request, self._tokens)

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            if self._slots is not None:
                self._slots.release()
                self._slots = None
