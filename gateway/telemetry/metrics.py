"""The GenAI client metrics and Tollgate's money counters, derived from every finished call's
facts (facts.py; the series the Collector's spanmetrics would derive from its spans), exported
by OTLP and on Prometheus /metrics.

Aggregated here rather than through the SDK's instruments: a synchronous instrument's
`record()` costs ~17 us per call (attribute set hashing, locks, per reader; docs/benchmarks.md
"Telemetry"), six of them per call more than all the rest of tracing. This book does the same
cumulative aggregation with a tuple key and a bisect (~2 us per call), and hands the SDK's own
data model (`MetricsData`) to the OTLP exporter.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

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
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric as PromMetric

from gateway.telemetry import attributes as attr
from gateway.telemetry.facts import CallFacts

# Bucket boundaries the GenAI conventions recommend.
TOKEN_BOUNDS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                16777216, 67108864)  # fmt: skip
SECONDS_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                  40.96, 81.92)  # fmt: skip
BASE = (
    attr.OPERATION,
    attr.PROVIDER,
    attr.REQUEST_MODEL,
    attr.TEAM,
    attr.TIER,
)
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
    (*BASE, attr.TOKEN_TYPE),
)
DURATION = _Spec(
    "gen_ai.client.operation.duration", "GenAI operation duration.", "s", (*BASE, attr.ERROR_TYPE)
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
    (*BASE, attr.OPTIMISATION),
)
OVERSPEND = _Spec(
    "tollgate.overspend",
    "What calls cost above their counterfactual, by cause (USD): a call served dearer than its "
    "reference. Kept apart from tollgate.savings so that counter never decreases.",
    "USD",
    (*BASE, attr.OPTIMISATION),
)
REQUESTS = _Spec("tollgate.requests", "Calls by outcome.", "{request}", (*BASE, attr.OUTCOME))
SHADOW_SAVINGS = _Spec(
    "tollgate.shadow.savings",
    "What shadow rules would have saved had they been enforced (USD), by rule.",
    "USD",
    (*BASE, attr.RULE),
)
SHADOW_OVERSPEND = _Spec(
    "tollgate.shadow.overspend",
    "What shadow rules would have cost above what calls did cost (USD), by rule.",
    "USD",
    (*BASE, attr.RULE),
)


class MetricBook:
    """Cumulative histograms and sums since the process started; money kept in nano-dollars
    (exact integers) and turned into USD only when exported or scraped."""

    def __init__(self) -> None:
        self.started_ns = time.time_ns()
        self.hists: dict[_Spec, dict[Key, Hist]] = {
            TOKEN_USAGE: {},
            DURATION: {},
            FIRST_CHUNK: {},
        }
        self.sums: dict[_Spec, dict[Key, int]] = {
            COST: {},
            SAVINGS: {},
            OVERSPEND: {},
            REQUESTS: {},
            SHADOW_SAVINGS: {},
            SHADOW_OVERSPEND: {},
        }

    def add(self, facts: CallFacts) -> None:
        base: Key = (facts.operation, facts.provider, facts.model, facts.team, facts.tier)
        seconds = (facts.end_ns - facts.start_ns) / 1e9
        self._hist(DURATION, (*base, facts.error_type), seconds)
        usage = facts.usage
        if usage is not None:
            self._hist(TOKEN_USAGE, (*base, "input"), usage.input_tokens)
            self._hist(TOKEN_USAGE, (*base, "output"), usage.output_tokens)
        if facts.stream and facts.ttft_ms is not None:
            self._hist(FIRST_CHUNK, base, facts.ttft_ms / 1000.0)
        sums = self.sums
        money = facts.money
        _add(sums[COST], base, money.cost)
        _add(sums[REQUESTS], (*base, facts.outcome), 1)
        for kind, nanos in money.savings:
            if nanos > 0:
                _add(sums[SAVINGS], (*base, kind), nanos)
            elif nanos < 0:
                _add(sums[OVERSPEND], (*base, kind), -nanos)
        for rule, nanos in money.shadows:
            if nanos >= 0:
                _add(sums[SHADOW_SAVINGS], (*base, rule), nanos)
            else:
                _add(sums[SHADOW_OVERSPEND], (*base, rule), -nanos)

    def _hist(self, spec: _Spec, key: Key, value: float) -> None:
        table = self.hists[spec]
        hist = table.get(key)
        if hist is None:
            bounds = TOKEN_BOUNDS if spec is TOKEN_USAGE else SECONDS_BOUNDS
            hist = table[key] = Hist(tuple(float(b) for b in bounds))
        hist.add(value)

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
                NumberDataPoint(_attributes(spec, key), start, now, _shown(spec, value))
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
                counter.add_metric(list(key), _shown(spec, value))
            yield counter


def _add(table: dict[Key, int], key: Key, value: int) -> None:
    table[key] = table.get(key, 0) + value


def _shown(spec: _Spec, value: int) -> float:
    """A sum as exported: USD from nano-dollars, counts as they are."""
    return value / 1e9 if spec.unit == "USD" else float(value)


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
