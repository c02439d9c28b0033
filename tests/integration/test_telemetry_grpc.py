"""`otlp.protocol: grpc`: spans and metrics reach an OTLP/gRPC receiver (the Collector's
default port 4317 protocol), with the configured headers as gRPC metadata."""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from gateway.config.telemetry_schema import TelemetryConfig
from gateway.telemetry.service import Telemetry
from gateway.telemetry.spans import Peer
from tests.support.servers import free_port
from tests.support.telemetry import sample_record


class Receiver(
    trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer
):
    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.metrics: set[str] = set()
        self.metadata: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            self.metadata.append(dict(context.invocation_metadata()))  # type: ignore[arg-type]
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                for rs in request.resource_spans:
                    for ss in rs.scope_spans:
                        self.spans.extend(ss.spans)
                return trace_service_pb2.ExportTraceServiceResponse()
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    self.metrics.update(m.name for m in sm.metrics)
            return metrics_service_pb2.ExportMetricsServiceResponse()


async def test_spans_and_metrics_over_grpc() -> None:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        config = TelemetryConfig.model_validate(
            {
                "otlp": {
                    "endpoint": f"http://127.0.0.1:{port}",
                    "protocol": "grpc",
                    "headers": {"x-token": "g"},
                }
            }
        )
        telemetry = Telemetry(config, peers=lambda _: Peer("openai"), engine=None)
        await telemetry.write([sample_record(f"r{i}") for i in range(3)])
        await telemetry.aclose()  # shutdown exports what is batched, and the metrics
    finally:
        server.stop(None)
    names = sorted(s.name for s in receiver.spans)
    assert names.count("chat chat") == 3 and names.count("chat m") == 3
    assert {"tollgate.cost", "gen_ai.client.token.usage"} <= receiver.metrics
    assert all(m.get("x-token") == "g" for m in receiver.metadata)
