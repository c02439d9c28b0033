"""Relays an OpenAI-dialect event stream as it arrives, learning usage on the way.

Tollgate always asks the upstream for usage (`stream_options.include_usage`). When the client
did not ask, the usage-only chunk is dropped and the `"usage": null` the upstream adds to every
other chunk is removed, so the client sees exactly what it would have seen without us.

Work is done per block (the whole events one upstream read delivered), not per event: a block
needs one C-level replace, and only the event holding the usage object is parsed. Measured ~20
events per stream but ~3 blocks.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import orjson

from gateway.accounting.tokens import TokenCounter
from gateway.accounting.usage_guard import estimated_instead
from gateway.backends.base import UpstreamRequest
from gateway.backends.errors import map_transport_error
from gateway.backends.openai_usage import meta_of, usage_from_openai, usage_of_chunks
from gateway.backends.sse import EventSplitter, event_data
from gateway.call import ResponseMeta, Usage

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_USAGE_NULL = re.compile(rb'"usage"\s*:\s*null')
_USAGE_NULL_FIELD = re.compile(rb',\s*"usage"\s*:\s*null|"usage"\s*:\s*null\s*,?')
_COMPACT_NULL = b',"usage":null'
_FINISH = re.compile(rb'"finish_reason"\s*:\s*"([^"]+)"')


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
        self._anomaly: Usage | None = None
        self._meta: ResponseMeta | None = None
        self._finish: list[str] = []
        self._seen: list[bytes] = []  # relayed blocks, kept until usage is reported

    async def __aiter__(self) -> AsyncIterator[bytes]:
        splitter = EventSplitter()
        try:
            async for raw in self._chunks:
                block = splitter.feed_block(raw)
                if block and (block := self._block(block)):
                    yield block
            rest = splitter.rest()
            if rest.strip():
                yield rest
        except (httpx.HTTPError, OSError) as exc:
            raise map_transport_error(exc, self._backend) from exc

    def _block(self, block: bytes) -> bytes:
        if b'"finish_reason":"' in block or b'"finish_reason": "' in block:
            self._finish.extend(r.decode() for r in _FINISH.findall(block))
        if b'"usage"' in block:
            if self._hide_usage:
                block = block.replace(_COMPACT_NULL, b"")
                if _USAGE_NULL.search(block):  # not compact JSON: the general form
                    block = _USAGE_NULL_FIELD.sub(b"", block)
            if _USAGE_OBJECT.search(block):
                block = self._take_usage(block)
        if self._reported is None:
            self._seen.append(block)
        return block

    def _take_usage(self, block: bytes) -> bytes:
        """Learns usage from the event(s) holding a usage object; drops the usage-only chunk
        when the client did not ask for usage."""
        at = 0
        while match := _USAGE_OBJECT.search(block, at):
            previous = block.rfind(b"\n\n", 0, match.start())
            start = previous + 2 if previous >= 0 else 0
            end = block.find(b"\n\n", match.end())
            end = len(block) if end < 0 else end + 2
            data = event_data(block[start:end])
            at = end
            try:
                chunk = orjson.loads(data) if data else None
            except orjson.JSONDecodeError:
                continue
            if not isinstance(chunk, dict):
                continue
            usage = usage_from_openai(chunk.get("usage"))
            if usage is None and isinstance(chunk.get("response"), dict):
                usage = usage_from_openai(chunk["response"].get("usage"))  # Responses events
            if usage is None:
                continue
            if usage.anomaly is not None:  # implausible: estimated from the stream instead
                self._anomaly = usage
                continue
            self._reported = usage
            self._meta = meta_of(chunk, ())
            if self._hide_usage and not chunk.get("choices"):
                block = block[:start] + block[end:]
                at = start
        return block

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
        return estimated_instead(
            usage_of_chunks(payloads, self._request, self._tokens), self._anomaly
        )

    def meta(self) -> ResponseMeta | None:
        finish = tuple(self._finish)
        if self._meta is None:
            return ResponseMeta(finish_reasons=finish) if finish else None
        return self._meta._replace(finish_reasons=finish)

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            if self._slots is not None:
                self._slots.release()
                self._slots = None
