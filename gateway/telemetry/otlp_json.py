"""OTLP/HTTP with JSON encoding (`protocol: http/json`) for spans: what the OpenTelemetry
Python SDK does not ship. The SDK's protobuf encoder builds one upb message per attribute
(~110-150 us per span); this one, reusing repeating attribute pairs, about a sixth of that
(bench/telemetry.py, docs/benchmarks.md "Telemetry"). The export thread shares the event
loop's interpreter lock, so at full export that difference is most of telemetry's cost. The
Collector's OTLP receiver accepts JSON on its HTTP port. (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger("gateway.telemetry")
_RETRYABLE = frozenset({429, 502, 503, 504})


def _value(value: Any) -> dict[str, Any]:
    if type(value) is float:
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


# Values that differ on every call (or are content): never kept.
_UNIQUE = frozenset(
    {"tollgate.request_id", "gen_ai.response.id", "gen_ai.input.messages", "gen_ai.output.messages"}
)


class EncodedPairs:
    """Encoded key/value pairs, reused: most attribute values repeat from call to call (model,
    team, tier, outcome, status...), and building the pair is most of the encoding work.
    Floats (money), large integers (token counts) and per-call values are built each time.
    Bounded (~2 MB at the limit)."""

    def __init__(self, limit: int = 5_000) -> None:
        self._known: dict[tuple[str, type, Any], dict[str, Any]] = {}
        self._limit = limit

    def __call__(self, attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        known = self._known
        out = []
        for key, value in (attributes or {}).items():
            kind = type(value)
            if kind is float or (kind is int and not 0 <= value < 1024) or key in _UNIQUE:
                out.append({"key": key, "value": _value(value)})
                continue
            cache_key = (key, kind, value)
            pair = known.get(cache_key)
            if pair is None:
                if len(known) >= self._limit:
                    known.clear()
                pair = known[cache_key] = {"key": key, "value": _value(value)}
            out.append(pair)
        return out


def _attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in (attributes or {}).items()]


def _span(span: ReadableSpan, pairs: EncodedPairs) -> dict[str, Any]:
    context = span.context
    assert context is not None
    out: dict[str, Any] = {
        "traceId": format(context.trace_id, "032x"),
        "spanId": format(context.span_id, "016x"),
        "name": span.name,
        "kind": span.kind.value + 1,  # the API's enum starts at INTERNAL = 0; OTLP's at 1
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": pairs(span.attributes),
    }
    if span.parent is not None:
        out["parentSpanId"] = format(span.parent.span_id, "016x")
    code = span.status.status_code.value
    if code:
        out["status"] = {"code": code, "message": span.status.description or ""}
    return out


def encode(spans: Sequence[ReadableSpan], pairs: EncodedPairs | None = None) -> bytes:
    """An ExportTraceServiceRequest in OTLP's JSON mapping, grouped by resource and scope."""
    pairs = pairs or EncodedPairs()
    groups: dict[tuple[int, int], tuple[Any, Any, list[dict[str, Any]]]] = {}
    for span in spans:
        key = (id(span.resource), id(span.instrumentation_scope))
        if key not in groups:
            groups[key] = (span.resource, span.instrumentation_scope, [])
        groups[key][2].append(_span(span, pairs))
    resource_spans = []
    for resource, scope, encoded in groups.values():
        scope_json = {"name": scope.name, "version": scope.version or ""} if scope else {}
        resource_spans.append(
            {
                "resource": {"attributes": _attributes(resource.attributes)},
                "scopeSpans": [{"scope": scope_json, "spans": encoded}],
            }
        )
    return orjson.dumps({"resourceSpans": resource_spans})


class JsonSpanExporter(SpanExporter):
    """Posts batches to `{endpoint}/v1/traces`; retries 429/502/503/504 and connection errors
    with backoff inside the configured timeout, then drops the batch (and says so)."""

    def __init__(self, endpoint: str, headers: Mapping[str, str], timeout: float) -> None:
        self._url = f"{endpoint}/v1/traces"
        self._timeout = timeout
        self._client = httpx.Client(
            timeout=timeout, headers={**headers, "content-type": "application/json"}
        )
        self.dropped = 0
        self.failures = 0
        self._pairs = EncodedPairs()  # used by the one export thread only

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = encode(spans, self._pairs)
        deadline = time.monotonic() + self._timeout
        delay = 0.5
        while True:
            try:
                response = self._client.post(self._url, content=body)
                if response.status_code < 300:
                    return SpanExportResult.SUCCESS
                retry = response.status_code in _RETRYABLE
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                retry, reason = True, str(exc) or type(exc).__name__
            if not retry or time.monotonic() + delay > deadline:
                self.failures += 1
                self.dropped += len(spans)
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning(
                        "OTLP span export failed (%s): %d spans dropped so far, %d failed batches",
                        reason,
                        self.dropped,
                        self.failures,
                    )
                return SpanExportResult.FAILURE
            time.sleep(delay)
            delay *= 2

    def shutdown(self) -> None:
        self._client.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
