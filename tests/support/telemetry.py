"""An in-process pipeline whose finished calls go to a real Telemetry sink: spans to an
in-memory exporter, rollups to SQL (when given an engine)."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine

from gateway.accounting.tokens import TokenCounter
from gateway.call import AttemptRecord, CallRecord, Money, Principal, ResponseMeta, Timings, Usage
from gateway.config.telemetry_schema import TelemetryConfig
from gateway.pipeline import Pipeline
from gateway.recorder import Recorder
from gateway.sinks.base import DurableSink
from gateway.sinks.fanout import SinkFanout
from gateway.telemetry.context import TraceStarter
from gateway.telemetry.service import Telemetry
from gateway.telemetry.spans import Peer


class TracedPipeline:
    def __init__(
        self,
        engine: Engine | None = None,
        journal: DurableSink | None = None,
        peers: dict[str, Peer] | None = None,
        **config: Any,
    ) -> None:
        self.exporter = InMemorySpanExporter()
        known = peers or {}
        self.telemetry = Telemetry(
            TelemetryConfig.model_validate(config),
            peers=known.get,
            engine=engine,
            span_exporter_=self.exporter,
        )
        self.sinks = SinkFanout([self.telemetry], capacity=10_000)
        self.pipeline = Pipeline(
            Recorder(self.sinks, TokenCounter(), journal), self.telemetry.starter
        )

    def start(self) -> None:
        self.sinks.start()
        self.telemetry.start()

    async def settle(self) -> None:
        """Every call so far through the sink and its spans exported."""
        await self.sinks.drained()
        assert self.telemetry.export is not None
        self.telemetry.export.force_flush()

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    async def aclose(self) -> None:
        await self.sinks.aclose()


def trees(spans: list[ReadableSpan]) -> dict[str, tuple[ReadableSpan, list[ReadableSpan]]]:
    """Request id -> (root span, its children), checking each span has one parent in the tree."""
    roots = {
        s.context.span_id: s
        for s in spans
        if s.attributes is not None and "tollgate.request_id" in s.attributes
    }
    children: dict[int, list[ReadableSpan]] = {sid: [] for sid in roots}
    for span in spans:
        if span.context.span_id in roots:
            continue
        assert span.parent is not None and span.parent.span_id in roots, span.name
        children[span.parent.span_id].append(span)
    return {
        str(root.attributes["tollgate.request_id"]): (root, children[sid])  # type: ignore[index]
        for sid, root in roots.items()
    }


def sample_record(request_id: str = "rid", team: str = "ml") -> CallRecord:
    """A finished, served call as the pipeline records it."""
    now = time.time()
    return CallRecord(
        request_id, "openai", "chat.completions", "chat",
        Principal("k1", "alice", team=team), now, now + 0.1, now + 0.2, 200, None, "b", "m",
        "fp16", Usage(10, 5, 2), "miss", True, False, (), None, None,
        money=Money(100, 200, (("tier_routing", 100),)), meta=ResponseMeta("id", "m", ("stop",)),
        trace=TraceStarter().start(None), timings=Timings((now, now + 0.01), (), now + 0.02),
        attempts=(AttemptRecord("b", "m", "fp16", 200, None, 80.0, 0x1234, now + 0.02),),
    )  # fmt: skip
