from __future__ import annotations

from gateway.backends.sse import EventSplitter, event_data


def test_events_split_across_arbitrary_chunk_boundaries() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\n: comment\n\ndata: [DONE]\n\n'
    for size in range(1, len(stream) + 1):
        splitter = EventSplitter()
        events: list[bytes] = []
        for i in range(0, len(stream), size):
            events.extend(splitter.feed(stream[i : i + size]))
        assert b"".join(events) == stream, size
        assert len(events) == 4
        assert splitter.rest() == b""


def test_crlf_is_normalised() -> None:
    assert EventSplitter().feed(b"data: x\r\n\r\n") == [b"data: x\n\n"]


def test_event_data() -> None:
    assert event_data(b'data: {"a":1}\n\n') == b'{"a":1}'
    assert event_data(b"event: x\ndata: a\ndata: b\n\n") == b"a\nb"
    assert event_data(b": keepalive\n\n") is None
