"""OTLP exporters (HTTP/protobuf or gRPC, imported only when configured) and the processor that
exports only sampled traces."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from gateway.config.telemetry_schema import OtlpConfig


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
    if config.protocol == "http/json":
        from gateway.telemetry.otlp_json import JsonSpanExporter

        assert config.endpoint is not None
        return JsonSpanExporter(config.endpoint, headers, config.timeout_seconds)
    exporter: SpanExporter = _otlp(config, headers, "traces")
    return exporter


def metric_exporter(config: OtlpConfig, headers: dict[str, str]) -> MetricExporter:
    """http/protobuf for http/json too: every OTLP/HTTP server takes protobuf, and metrics go
    every `metrics_interval_seconds`, so their encoding cost does not matter."""
    exporter: MetricExporter = _otlp(config, headers, "metrics")
    return exporter


def _otlp(config: OtlpConfig, headers: dict[str, str], signal: str) -> Any:
    """The SDK's OTLP exporter for a signal and protocol, imported only when configured (the
    gRPC one pulls in grpcio)."""
    assert config.endpoint is not None
    transport = "grpc" if config.protocol == "grpc" else "http"
    kind = "trace" if signal == "traces" else "metric"
    module = import_module(f"opentelemetry.exporter.otlp.proto.{transport}.{kind}_exporter")
    cls = getattr(module, "OTLPSpanExporter" if signal == "traces" else "OTLPMetricExporter")
    if transport == "grpc":
        return cls(
            endpoint=config.endpoint,
            insecure=config.endpoint.startswith("http://"),
            headers=headers,
            timeout=config.timeout_seconds,
        )
    return cls(
        endpoint=f"{config.endpoint}/v1/{signal}", headers=headers, timeout=config.timeout_seconds
    )
