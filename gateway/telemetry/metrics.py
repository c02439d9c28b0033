"""The GenAI client metrics and Tollgate's money counters, derived from finished gateway spans
(as the Collector's spanmetrics would), exported by OTLP and on Prometheus /metrics.

Aggregated here rather than through the SDK's instruments: a synchronous instrument's
`record()` costs ~17 us per call (attribute set hashing, locks, per reader; docs/benchmarks.md
"Telemetry"),
six of them per call more than all the rest of tracing. This book does the same cumulative
aggregation with a tuple key and a bisect (~2 us per call), and hands the SDK's own data model
(`MetricsData`) to the OTLP exporter.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric as PromMetric

from gateway.call import SAVINGS_KINDS

# Bucket boundaries the GenAI conventions recommend.
TOKEN_BOUNDS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                16777216, 67108864)  # fmt: skip
SECONDS_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                  40.96, 81.92)  # fmt: skip
BASE = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "tollgate.team",
    "tollgate.tier",
)
_SAVINGS = tuple((f"tollgate.savings.{kind}", kind) for kind in SAVINGS_KINDS)
Key = tuple[str, ...]


@dataclass(slots=True)
class Hist:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    description: str
    unit: str
    labels: tuple[str, ...]


TOKEN_USAGE = _Spec(
    "gen_ai.client.token.usage",
    "Number of input and output tokens used.",
    "{token}",
    (*BASE, "gen_ai.token.type"),
)
DURATION = _Spec(
    "gen_ai.client.operation.duration", "GenAI operation duration.", "s", (*BASE, "error.type")
)
FIRST_CHUNK = _Spec(
    "gen_ai.client.operation.time_to_first_chunk",
    "Time to receive the first chunk of a streamed response.",
    "s",
    BASE,
)
COST = _Spec("tollgate.cost", "What calls cost (USD).", "USD", BASE)
SAVINGS = _Spec(
    "tollgate.savings",
    "What optimisations saved against the counterfactual cost (USD).",
    "USD",
    (*BASE, "tollgate.optimisation"),
)
OVERSPEND = _Spec(
    "tollgate.overspend",
    "What calls cost above their counterfactual, by cause (USD): a call served dearer than its "
    "reference. Kept apart from tollgate.savings so that counter never decreases.",
    "USD",
    (*BASE, "tollgate.optimisation"),
)
REQUESTS = _Spec("tollgate.requests", "Calls by outcome.", "{request}", (*BASE, "tollgate.outcome"))
SHADOW_SAVINGS = _Spec(
    "tollgate.shadow.savings",
    "What shadow rules would have saved had they been enforced (USD), by rule.",
    "USD",
    (*BASE, "tollgate.rule"),
)
SHADOW_OVERSPEND = _Spec(
    "tollgate.shadow.overspend",
    "What shadow rules would have cost above what calls did cost (USD), by rule.",
    "USD",
    (*BASE, "tollgate.rule"),
)


class MetricBook(SpanProcessor):
    def __init__(self) -> None:
        self.started_ns = time.time_ns()
        self.hists: dict[_Spec, dict[Key, Hist]] = {
            TOKEN_USAGE: {},
            DURATION: {},
            FIRST_CHUNK: {},
        }
        self.sums: dict[_Spec, dict[Key, float]] = {
            COST: {},
            SAVINGS: {},
            OVERSPEND: {},
            REQUESTS: {},
            SHADOW_SAVINGS: {},
            SHADOW_OVERSPEND: {},
        }

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span._attributes
        if span.kind is not SpanKind.SERVER or not attrs or "tollgate.outcome" not in attrs:
            return
        get = attrs.get
        base: Key = (
            get("gen_ai.operation.name", ""),  # type: ignore[assignment]
            get("gen_ai.provider.name", ""),
            get("gen_ai.request.model", ""),
            get("tollgate.team", ""),
            get("tollgate.tier", ""),
        )
        seconds = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
        self._hist(DURATION, (*base, str(get("error.type", ""))), seconds)
        if "gen_ai.usage.input_tokens" in attrs:
            self._hist(TOKEN_USAGE, (*base, "input"), attrs["gen_ai.usage.input_tokens"])  # type: ignore[arg-type]
            self._hist(TOKEN_USAGE, (*base, "output"), attrs["gen_ai.usage.output_tokens"])  # type: ignore[arg-type]
        ttft = attrs.get("tollgate.ttft_ms")
        if attrs.get("tollgate.stream") and isinstance(ttft, float):
            self._hist(FIRST_CHUNK, base, ttft / 1000.0)
        sums = self.sums
        cost = sums[COST]
        cost[base] = cost.get(base, 0.0) + attrs["tollgate.cost"]  # type: ignore[operator]
        requests = sums[REQUESTS]
        rkey = (*base, str(attrs["tollgate.outcome"]))
        requests[rkey] = requests.get(rkey, 0) + 1
        savings, overspend = sums[SAVINGS], sums[OVERSPEND]
        for name, kind in _SAVINGS:
            value = attrs.get(name)
            if value is None:
                continue
            skey = (*base, kind)
            if value >= 0:  # type: ignore[operator]
                savings[skey] = savings.get(skey, 0.0) + value  # type: ignore[operator]
            else:
                overspend[skey] = overspend.get(skey, 0.0) - value  # type: ignore[operator]
        rules = attrs.get("tollgate.shadow_rules")
        if rules:
            self._shadows(base, attrs, rules)  # type: ignore[arg-type]

    def _shadows(self, base: Key, attrs: Any, rules: tuple[str, ...]) -> None:
        gained, lost = self.sums[SHADOW_SAVINGS], self.sums[SHADOW_OVERSPEND]
        for rule in rules:
            value = attrs.get(f"tollgate.shadow.{rule}", 0.0)
            key = (*base, rule)
            if value >= 0:
                gained[key] = gained.get(key, 0.0) + value
            else:
                lost[key] = lost.get(key, 0.0) - value

    def _hist(self, spec: _Spec, key: Key, value: float) -> None:
        table = self.hists[spec]
        hist = table.get(key)
        if hist is None:
            bounds = TOKEN_BOUNDS if spec is TOKEN_USAGE else SECONDS_BOUNDS
            hist = table[key] = Hist(tuple(float(b) for b in bounds))
        hist.add(value)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def metrics_data(self, resource: Resource, scope: InstrumentationScope) -> MetricsData:
        """Everything so far, cumulative, in the SDK's data model (for the OTLP exporter)."""
        now = time.time_ns()
        start = self.started_ns
        metrics: list[Metric] = []
        for spec, table in self.hists.items():
            points = [
                HistogramDataPoint(
                    attributes=_attributes(spec, key),
                    start_time_unix_nano=start,
                    time_unix_nano=now,
                    count=h.count,
                    sum=h.total,
                    bucket_counts=list(h.counts),
                    explicit_bounds=list(h.bounds),
                    min=h.low,
                    max=h.high,
                )
                for key, h in table.items()
            ]
            if points:
                data = Histogram(points, AggregationTemporality.CUMULATIVE)
                metrics.append(Metric(spec.name, spec.description, spec.unit, data))
        for spec, sums in self.sums.items():
            number_points = [
                NumberDataPoint(_attributes(spec, key), start, now, value)
                for key, value in sums.items()
            ]
            if number_points:
                data_sum = Sum(number_points, AggregationTemporality.CUMULATIVE, True)
                metrics.append(Metric(spec.name, spec.description, spec.unit, data_sum))
        return MetricsData([ResourceMetrics(resource, [ScopeMetrics(scope, metrics, "")], "")])

    def prometheus(self) -> Iterator[PromMetric]:
        """The same series in the Prometheus text format's families (names as the OpenTelemetry
        Collector's Prometheus exporter would write them)."""
        for spec, table in self.hists.items():
            family = HistogramMetricFamily(
                prom_name(spec), spec.description, labels=prom_labels(spec)
            )
            for key, h in table.items():
                cumulative, buckets = 0, []
                for bound, count in zip((*h.bounds, float("inf")), h.counts, strict=True):
                    cumulative += count
                    buckets.append((_le(bound), cumulative))
                family.add_metric(list(key), buckets, h.total)
            yield family
        for spec, sums in self.sums.items():
            counter = CounterMetricFamily(
                prom_name(spec), spec.description, labels=prom_labels(spec)
            )
            for key, value in sums.items():
                counter.add_metric(list(key), value)
            yield counter


def _attributes(spec: _Spec, key: Key) -> dict[str, str]:
    return {name: value for name, value in zip(spec.labels, key, strict=True) if value}


def prom_name(spec: _Spec) -> str:
    name = spec.name.replace(".", "_")
    if spec.unit == "s":
        return f"{name}_seconds"
    if spec.unit == "USD":
        return f"{name}_usd"
    return name


def prom_labels(spec: _Spec) -> list[str]:
    return [label.replace(".", "_") for label in spec.labels]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
