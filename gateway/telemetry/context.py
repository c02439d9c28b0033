"""W3C trace context (https://www.w3.org/TR/trace-context/): accept the client's, start ours,
and tell the upstream. This is all tracing costs on the request path: three random ids and one
header; the spans are built later from the call's record."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.call import TraceIds

_HEX = frozenset("0123456789abcdef")
_FULL = 1 << 64


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a valid version-00 header, else None: an invalid
    header starts a new trace, as the spec asks."""
    if not value or len(value) < 55:
        return None
    value = value.strip().lower()
    parts = value.split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    version, trace, parent, flags = parts[:4]
    if version == "00" and len(parts) != 4:
        return None
    if len(trace) != 32 or len(parent) != 16 or len(flags) != 2:
        return None
    if not _HEX.issuperset(trace + parent + flags + version):
        return None
    trace_id, parent_id = int(trace, 16), int(parent, 16)
    if trace_id == 0 or parent_id == 0:
        return None
    return trace_id, parent_id, bool(int(flags, 16) & 1)


def traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


@dataclass(frozen=True, slots=True)
class TraceStarter:
    """Fixes a call's trace ids. Sampling decides only which traces are *exported*: every call
    is traced into the rollups and metrics whatever the decision. A client's sampled flag is
    respected (parent-based); otherwise the trace id decides, as TraceIdRatioBased does."""

    ratio: float = 1.0

    def start(self, header: str | None, tracestate: str | None = None) -> TraceIds:
        bits = random.getrandbits
        parent = parse_traceparent(header) if header is not None else None
        if parent is not None:
            trace_id, parent_id, sampled = parent
            return TraceIds(trace_id, bits(64) or 1, bits(64) or 1, parent_id, sampled, tracestate)
        trace_id = bits(128) or 1
        sampled = (trace_id & (_FULL - 1)) < self.ratio * _FULL
        return TraceIds(trace_id, bits(64) or 1, bits(64) or 1, None, sampled)

    @staticmethod
    def header(trace: TraceIds) -> str:
        """The `traceparent` the upstream gets: its parent is our upstream-call span."""
        return traceparent(trace.trace_id, trace.upstream_span_id, trace.sampled)
