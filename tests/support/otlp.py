"""A minimal OTLP/HTTP (protobuf) receiver standing in for an OpenTelemetry Collector: keeps
the spans and metric points it is sent, decoded."""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class ReceivedSpan:
    name: str
    trace_id: int
    span_id: int
    parent_span_id: int | None
    attributes: dict[str, Any]
    service: str


@dataclass
class OtlpReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    metrics: dict[str, list[Any]] = field(default_factory=dict)  # name -> data points
    headers: list[dict[str, str]] = field(default_factory=list)
    json_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/traces", self._traces, methods=["POST"]),
                Route("/v1/metrics", self._metrics, methods=["POST"]),
            ]
        )

    async def _traces(self, request: Request) -> Response:
        message = ExportTraceServiceRequest()
        body = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            # OTLP/JSON is protobuf's JSON mapping except ids, which are hex (not base64).
            data = orjson.loads(body)
            for resource_spans in data.get("resourceSpans", []):
                for scope_spans in resource_spans.get("scopeSpans", []):
                    for span in scope_spans.get("spans", []):
                        for key in ("traceId", "spanId", "parentSpanId"):
                            if key in span:
                                span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
            json_format.ParseDict(data, message)  # strict: unknown fields are errors
            self.json_requests += 1
        else:
            message.ParseFromString(body)
        with self.lock:
            self.headers.append(dict(request.headers))
            for resource_spans in message.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            ReceivedSpan(
                                span.name,
                                int.from_bytes(span.trace_id, "big"),
                                int.from_bytes(span.span_id, "big"),
                                int.from_bytes(span.parent_span_id, "big")
                                if span.parent_span_id
                                else None,
                                _attributes(span.attributes),
                                str(resource.get("service.name")),
                            )
                        )
        return Response(b"", media_type="application/x-protobuf")

    async def _metrics(self, request: Request) -> Response:
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await request.body())
        with self.lock:
            for resource_metrics in message.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        kind = metric.WhichOneof("data")
                        points = list(getattr(metric, kind).data_points)
                        # Cumulative: the latest export replaces the earlier ones.
                        self.metrics[metric.name] = [
                            (_attributes(p.attributes), _value(p)) for p in points
                        ]
        return Response(b"", media_type="application/x-protobuf")


def _value(point: Any) -> Any:
    if hasattr(point, "bucket_counts"):
        return {"count": point.count, "sum": point.sum}
    return point.as_double if point.WhichOneof("value") == "as_double" else point.as_int


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _any(kv.value) for kv in pairs}


def _any(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_any(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None
