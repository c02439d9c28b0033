"""OTLP exporters (HTTP/protobuf or gRPC, imported only when configured) and the processor that
exports only sampled traces."""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from gateway.telemetry.config import OtlpConfig


class SampledExport(SpanProcessor):
    """Hands sampled spans to the exporting processor; the rest stop here (the rollups and
    metrics, earlier in the chain, have already counted them)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner
        self.exported = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            self.exported += 1
            self._inner.on_end(span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def span_exporter(config: OtlpConfig, headers: dict[str, str]) -> SpanExporter:
    assert config.endpoint is not None
    if config.protocol == "http/json":
        from gateway.telemetry.otlp_json import JsonSpanExporter

        return JsonSpanExporter(config.endpoint, headers, config.timeout_seconds)
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=config.endpoint,
            insecure=config.endpoint.startswith("http://"),
            headers=headers,
            timeout=config.timeout_seconds,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=f"{config.endpoint}/v1/traces", headers=headers, timeout=config.timeout_seconds
    )


def metric_exporter(config: OtlpConfig, headers: dict[str, str]) -> MetricExporter:
    assert config.endpoint is not None
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(
            endpoint=config.endpoint,
            insecure=config.endpoint.startswith("http://"),
            headers=headers,
            timeout=config.timeout_seconds,
        )
    # http/protobuf, and for http/json too (every OTLP/HTTP server takes protobuf; metrics go
    # every `metrics_interval_seconds`, so their encoding cost does not matter).
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(
        endpoint=f"{config.endpoint}/v1/metrics", headers=headers, timeout=config.timeout_seconds
    )
