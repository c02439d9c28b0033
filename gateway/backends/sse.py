"""Server-sent events split at event boundaries, so a relay can act per event without buffering."""

from __future__ import annotations

from typing import Any

import orjson


class EventSplitter:
    """Feeds raw bytes, returns the complete events seen so far (each ending in a blank line)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        block = self.feed_block(data)
        return [event + b"\n\n" for event in block[:-2].split(b"\n\n") if event] if block else []

    def feed_block(self, data: bytes) -> bytes:
        """The complete events seen so far as one block (ending in a blank line), or b""."""
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        buffer = self._buffer + data if self._buffer else data
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return b""
        self._buffer = buffer[end + 2 :]
        return buffer[: end + 2]

    def rest(self) -> bytes:
        """Trailing bytes of an unterminated last event (a well-behaved upstream leaves none)."""
        rest, self._buffer = self._buffer, b""
        return rest


def event_data(event: bytes) -> bytes | None:
    """The joined `data:` payload of one event, or None for comments and data-less events."""
    if event.startswith(b"data:") and event.count(b"\n") == 2:
        return event[5:-2].strip()
    parts = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


def json_events(raw: bytes) -> list[dict[str, Any]]:
    """The JSON objects a whole relayed stream carried, in order (OpenAI's `[DONE]` and
    non-object payloads left out); raises orjson.JSONDecodeError on a payload that is not JSON."""
    splitter = EventSplitter()
    events = splitter.feed(raw) + ([rest + b"\n\n"] if (rest := splitter.rest().strip()) else [])
    out = []
    for event in events:
        data = event_data(event)
        if data and data != b"[DONE]":
            payload = orjson.loads(data)
            if isinstance(payload, dict):
                out.append(payload)
    return out
