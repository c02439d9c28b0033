"""Telemetry as one object the gateway starts and stops: the sink that turns finished calls into
spans, the processors those spans go through (rollups, metrics, sampled OTLP export), and the
background tasks that flush rollups to SQL and push metrics.

All of it runs off the request path, in the sink fan-out's drain task; the request path only
fixes trace ids and propagates them (context.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from sqlalchemy import Engine

from gateway.call import CallRecord
from gateway.config.telemetry_schema import TelemetryConfig
from gateway.telemetry.context import TraceStarter
from gateway.telemetry.export import SampledExport, metric_exporter, span_exporter
from gateway.telemetry.metrics import MetricBook
from gateway.telemetry.rollups import RollupProcessor, RollupWriter
from gateway.telemetry.spans import PeerLookup, SpanBuilder

log = logging.getLogger("gateway.telemetry")


def _version() -> str:
    try:
        return version("tollgate")
    except PackageNotFoundError:
        return "0"


class Telemetry:
    """`span_exporter_` / `metric_exporter_` replace the OTLP ones (tests pass in-memory ones).
    Without an engine (or with rollups disabled) nothing is written to SQL."""

    name = "telemetry"

    def __init__(
        self,
        config: TelemetryConfig,
        *,
        peers: PeerLookup,
        engine: Engine | None,
        span_exporter_: SpanExporter | None = None,
        metric_exporter_: MetricExporter | None = None,
    ) -> None:
        self.config = config
        self.resource = Resource.create(
            {"service.name": config.service_name, "service.version": _version()}
        )
        self.scope = InstrumentationScope("tollgate", _version())
        self.starter = TraceStarter(config.sample_ratio)
        self.builder = SpanBuilder(self.resource, self.scope, peers, self.starter)
        self.rollups = RollupProcessor()
        self.metrics = MetricBook()
        self.writer = (
            RollupWriter(engine) if engine is not None and config.rollups.enabled else None
        )
        otlp = config.otlp
        exporter = span_exporter_
        if exporter is None and otlp.endpoint and otlp.traces:
            exporter = span_exporter(otlp, dict(otlp.headers))
        self.export: SampledExport | None = None
        if exporter is not None:
            self.export = SampledExport(BatchSpanProcessor(exporter))
        self._metric_exporter = metric_exporter_
        if self._metric_exporter is None and otlp.endpoint and otlp.metrics:
            self._metric_exporter = metric_exporter(otlp, dict(otlp.headers))
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()
        self.flush_failures = 0

    # The Sink protocol: called by the fan-out's drain task with batches of finished calls.
    async def write(self, records: Sequence[CallRecord]) -> None:
        """Rollups and metrics count each call's facts; spans are built only for an exporter,
        the whole tree of sampled traces (span creation is the cost here)."""
        builder = self.builder
        rollup, metric = self.rollups.add, self.metrics.add
        export = self.export
        for record in records:
            facts = builder.facts(record)
            rollup(facts)
            metric(facts)
            if export is not None:
                for span in builder.spans(record, True):
                    export.on_end(span)

    def start(self) -> None:
        if self.writer is not None:
            self._tasks.append(asyncio.create_task(self._flush_loop(), name="tollgate-rollups"))
        if self._metric_exporter is not None:
            self._tasks.append(asyncio.create_task(self._metrics_loop(), name="tollgate-metrics"))

    async def flush(self) -> None:
        """Adds the rollups' pending deltas into SQL now (the dashboard asks before reading, so
        it shows this process's calls to the last one). Failed deltas stay pending."""
        if self.writer is None:
            return
        async with self._flush_lock:
            pending = self.rollups.take()
            if not pending:
                return
            try:
                await asyncio.to_thread(self.writer.write, pending)
            except Exception:
                self.rollups.restore(pending)
                self.flush_failures += 1
                if self.flush_failures in (1, 10) or self.flush_failures % 100 == 0:
                    log.exception("spend rollups not written (kept, retrying)")
                raise

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.rollups.flush_seconds)
            with contextlib.suppress(Exception):
                await self.flush()

    async def export_metrics(self) -> None:
        if self._metric_exporter is None:
            return
        data = self.metrics.metrics_data(self.resource, self.scope)
        await asyncio.to_thread(self._metric_exporter.export, data)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.otlp.metrics_interval_seconds)
            try:
                await self.export_metrics()
            except Exception:
                log.exception("metrics export failed")

    async def aclose(self) -> None:
        """Called by the fan-out after its last batch: final flush, final export."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        try:
            await self.flush()
        except Exception:  # noqa: BLE001 (flush logged it; nothing more to do at shutdown)
            log.error("spend rollups: the last deltas could not be written at shutdown")
        try:
            await self.export_metrics()
        except Exception:
            log.exception("final metrics export failed")
        if self.export is not None:
            await asyncio.to_thread(self.export.shutdown)
        if self._metric_exporter is not None:
            await asyncio.to_thread(self._metric_exporter.shutdown)
