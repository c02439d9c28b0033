"""GET /metrics: the gateway's own health counters in the Prometheus text format, read at
scrape time from the objects that keep them (nothing on the request path updates a registry).

The signals an operator needs to see a degraded gateway (the budget store, dropped records,
failed reloads, the audit journal), and the GenAI client metrics and money counters the
telemetry derives from every call's spans (gateway/telemetry/metrics.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from gateway.admin.policy import RuleStatus, rules_status
from gateway.api.dashboard import check_dashboard
from gateway.api.errors import openai_error_body
from gateway.api.load import IN_FLIGHT, LOOP_LAG, Load, loop_lag
from gateway.audit.service import AuditStatus
from gateway.cache.stage import ResponseCache
from gateway.errors import TollgateError
from gateway.routing.prefix import PrefixStats
from gateway.routing.state import ReplicaState
from gateway.services import Services


class GatewayCollector(Collector):
    def __init__(self, services: Services, load: Load | None = None, lag: float = 0.0) -> None:
        self._services = services
        self._load = load
        self._lag = lag

    def collect(self) -> Iterator[Metric]:
        s = self._services
        if self._load is not None:
            # The autoscaler's signals (deploy/k8s: the HorizontalPodAutoscaler reads the first).
            yield _gauge(IN_FLIGHT, "Proxied calls this process is handling now.",
                         self._load.in_flight)  # fmt: skip
            yield _gauge(LOOP_LAG, "How long a callback scheduled at scrape time waited to run.",
                         self._lag)  # fmt: skip
        ledger = s.ledger
        snapshot = ledger.snapshot()
        yield _gauge(
            "tollgate_budget_store_degraded",
            "1 while the shared budget store is unreachable.",
            1 if ledger.degraded else 0,
        )
        yield _counter(
            "tollgate_budget_degraded_calls",
            "Calls checked against per-process counters because the shared store was down.",
            snapshot.degraded_calls,
        )
        yield _counter(
            "tollgate_budget_store_failures",
            "Failed calls to the shared budget store.",
            snapshot.store_failures,
        )
        yield _counter(
            "tollgate_budget_dropped_settlements",
            "Reservation corrections dropped while the store was down too long.",
            snapshot.dropped_settlements,
        )
        yield _counter(
            "tollgate_sink_records_dropped", "Call records dropped (queue full).", s.sinks.dropped
        )
        yield _counter(
            "tollgate_config_reload_failures",
            "Reloads refused (invalid config).",
            s.reloader.failures,
        )
        yield _gauge(
            "tollgate_config_generation",
            "Generation of the running config.",
            s.runtime.current.generation,
        )
        yield _gauge("tollgate_virtual_keys", "Virtual keys held in memory.", len(s.accounts.ring))
        yield from _replicas(s.runtime.current.router.replica_states())
        yield from _guards(rules_status(s.runtime.current))
        yield from _cache(s.runtime.current.cache.shared)
        if s.prefix_feed is not None:
            feed = s.prefix_feed
            for name, doc, value in (
                ("sent", "Routing events this gateway shared with the fleet.", feed.sent),
                ("applied", "Routing events of other gateways applied here.", feed.applied),
                ("dropped", "Routing events dropped unsent (Redis down too long).", feed.dropped),
                ("failures", "Failed syncs with the fleet's shared index.", feed.failures),
            ):
                yield _counter(f"tollgate_prefix_share_{name}", doc, value)
        if s.audit is not None:
            yield from _audit(s.audit.status())
        if s.telemetry is not None:
            yield from s.telemetry.metrics.prometheus()
            yield _counter(
                "tollgate_rollup_flush_failures",
                "Spend-rollup flushes that failed (their deltas are kept and retried).",
                s.telemetry.flush_failures,
            )
            if s.telemetry.export is not None:
                yield _counter(
                    "tollgate_spans_exported",
                    "Gateway spans handed to the OTLP exporter (sampled traces).",
                    s.telemetry.export.exported,
                )


_CACHE_COUNTERS = (
    ("stored", "tollgate_cache_stored", "Answers the response cache kept."),
    ("store_failures", "tollgate_cache_store_failures",
     "Cache store calls that failed or timed out (each a miss or a skipped store)."),
    ("decode_failures", "tollgate_cache_decode_failures", "Cache entries that failed to decode."),
    ("too_large", "tollgate_cache_too_large", "Answers larger than max_entry_bytes, not kept."),
    ("embed_failures", "tollgate_cache_embed_failures",
     "Semantic lookups skipped: the embedding call failed."),
    ("facts_refused", "tollgate_cache_semantic_refused",
     "Near questions refused as hits: their numbers, negations or names differ."),
    ("verified", "tollgate_cache_semantic_checks", "Semantic hits sent upstream to be checked."),
    ("lookup_errors", "tollgate_cache_lookup_errors",
     "Lookups that failed unexpectedly (a bug: served as misses, logged)."),
)  # fmt: skip


def _cache(cache: ResponseCache) -> Iterator[Metric]:
    """The response cache: lookups by result, faults, and each namespace's semantic verdicts."""
    counts = cache.counts
    lookups = CounterMetricFamily(
        "tollgate_cache_lookups", "Response cache lookups by result.", labels=["result"]
    )
    for result in ("exact", "semantic", "miss"):
        lookups.add_metric([result], counts[result])
    yield lookups
    for key, name, doc in _CACHE_COUNTERS:
        yield _counter(name, doc, counts[key])
    yield _gauge("tollgate_cache_semantic_vectors", "Questions in the semantic index.",
                 len(cache.index))  # fmt: skip
    labels = ["namespace"]
    rate = GaugeMetricFamily("tollgate_cache_semantic_false_hit_rate",
                             "Share of checked semantic hits found wrong (recent window).",
                             labels=labels)  # fmt: skip
    threshold = GaugeMetricFamily(
        "tollgate_cache_semantic_threshold",
        "The similarity a semantic hit needs now.",
        labels=labels,
    )
    off = GaugeMetricFamily(
        "tollgate_cache_semantic_off",
        "1 where checks switched the semantic cache off.",
        labels=labels,
    )
    for namespace, state in cache.verifier.spaces.items():
        if state.false_rate is not None:
            rate.add_metric([namespace], state.false_rate)
        threshold.add_metric([namespace], state.threshold)
        off.add_metric([namespace], 1 if state.off else 0)
    yield from (rate, threshold, off)


_AUDIT_GAUGES: tuple[tuple[str, str, Callable[[AuditStatus], Any]], ...] = (
    ("tollgate_audit_lag_events", "Audit events journaled but not yet in the database.",
     lambda s: s.lag_events),
    ("tollgate_audit_journal_bytes", "Bytes of audit journal waiting to ship.",
     lambda s: s.journal_pending_bytes),
    ("tollgate_audit_journal_max_bytes", "Journal bound: at it, calls are refused.",
     lambda s: s.journal_max_bytes),
    ("tollgate_audit_database_unreachable", "1 while audit events cannot reach the database.",
     lambda s: s.database != "ok"),
    ("tollgate_audit_journal_alarm", "1 while the journal is past its alarm level.",
     lambda s: s.journal_alarm),
    ("tollgate_audit_worker_restarts", "Audit worker processes restarted after dying.",
     lambda s: s.worker_restarts),
    ("tollgate_audit_quarantined_events",
     "Audit events the database rejected, kept in tollgate_audit_quarantine (alarm on > 0).",
     lambda s: s.quarantined),
)  # fmt: skip


_REPLICA_COUNTERS: tuple[tuple[str, str, Callable[[ReplicaState], float]], ...] = (
    ("tollgate_replica_calls", "Attempts sent to the replica.", lambda r: r.stats.calls),
    ("tollgate_replica_failures", "Attempts the replica failed.", lambda r: r.stats.failures),
    ("tollgate_replica_retries", "Failures here after which the call was tried again.",
     lambda r: r.stats.retries),
    ("tollgate_replica_fallbacks", "Calls served here from a fallback tier or alias.",
     lambda r: r.stats.fallbacks),
    ("tollgate_replica_circuit_opens", "Times the replica was taken out of rotation.",
     lambda r: r.stats.circuit_opens),
)  # fmt: skip


def _replicas(states: list[ReplicaState]) -> Iterator[Metric]:
    """Per replica (backend, upstream model): its load and circuit now, and its counters."""
    labels = ["backend", "model"]
    in_flight = GaugeMetricFamily(
        "tollgate_replica_in_flight", "Calls in flight to the replica.", labels=labels
    )
    circuit = GaugeMetricFamily(
        "tollgate_replica_circuit_open",
        "1 while the replica is out of rotation (open or probing), 0 when closed.",
        labels=labels,
    )
    counters = [CounterMetricFamily(n, doc, labels=labels) for n, doc, _ in _REPLICA_COUNTERS]
    for state in states:
        key = [state.backend, state.model]
        in_flight.add_metric(key, state.in_flight)
        circuit.add_metric(key, 0 if state.circuit == "closed" else 1)
        for family, (_, _, value) in zip(counters, _REPLICA_COUNTERS, strict=True):
            family.add_metric(key, value(state))
    yield in_flight
    yield circuit
    yield from counters
    yield from _prefix([s for s in states if s.prefix_index is not None])


_PREFIX_COUNTERS: tuple[tuple[str, str, Callable[[PrefixStats], float]], ...] = (
    ("tollgate_prefix_predicted_cached_tokens",
     "Prompt tokens prefix-aware routing predicted the replica had cached.",
     lambda p: p.predicted_tokens),
    ("tollgate_prefix_reported_cached_tokens",
     "Cached prompt tokens the replica reported for the same calls.",
     lambda p: p.reported_tokens),
    ("tollgate_prefix_misses",
     "Calls that found much less cached than predicted (the index was corrected).",
     lambda p: p.misses),
)  # fmt: skip


def _prefix(states: list[ReplicaState]) -> Iterator[Metric]:
    """Prefix-aware routing's closed loop per replica: predicted against reported cached
    tokens (the gap is their difference), the index's size and its resets (restarts seen)."""
    if not states:
        return
    labels = ["backend", "model"]
    blocks = GaugeMetricFamily(
        "tollgate_prefix_index_blocks", "Prompt blocks the replica's index holds.", labels=labels
    )
    size = GaugeMetricFamily(
        "tollgate_prefix_index_bytes", "Estimated memory of the replica's index.", labels=labels
    )
    resets = CounterMetricFamily(
        "tollgate_prefix_index_resets",
        "Times the index was emptied because the replica's cache had been (a restart).",
        labels=labels,
    )
    counters = [CounterMetricFamily(n, doc, labels=labels) for n, doc, _ in _PREFIX_COUNTERS]
    for state in states:
        index, stats = state.prefix_index, state.prefix_stats
        assert index is not None
        key = [state.backend, state.model]
        blocks.add_metric(key, len(index))
        size.add_metric(key, index.memory_bytes())
        resets.add_metric(key, index.resets)
        if stats is not None:
            for family, (_, _, value) in zip(counters, _PREFIX_COUNTERS, strict=True):
                family.add_metric(key, value(stats))
    yield from (blocks, size, resets, *counters)


def _guards(rules: list[RuleStatus]) -> Iterator[Metric]:
    """Each quality guard: its rolling agreement, its samples, whether it suspended its rule."""
    labels = ["rule"]
    agreement = GaugeMetricFamily(
        "tollgate_rule_guard_agreement",
        "Share of a quality guard's last samples whose answers agreed with the reference tier.",
        labels=labels,
    )
    samples = CounterMetricFamily(
        "tollgate_rule_guard_samples", "Comparisons a quality guard made.", labels=labels
    )
    suspended = GaugeMetricFamily(
        "tollgate_rule_suspended",
        "1 while a quality guard keeps its rule from routing (alarm on it).",
        labels=labels,
    )
    for rule in rules:
        guard = rule.guard
        if guard is None:
            continue
        if guard.agreement is not None:
            agreement.add_metric([rule.rule], guard.agreement)
        samples.add_metric([rule.rule], guard.samples)
        suspended.add_metric([rule.rule], 1 if guard.suspended else 0)
    yield agreement
    yield samples
    yield suspended


def _audit(status: AuditStatus) -> Iterator[Metric]:
    for name, doc, value in _AUDIT_GAUGES:
        yield _gauge(name, doc, float(value(status)))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


async def metrics(request: Request) -> Response:
    services: Services = request.state.services
    if services.runtime.current.config.telemetry.prometheus.protected:
        try:
            check_dashboard(request, services)
        except TollgateError as err:
            return Response(openai_error_body(err), err.status, media_type="application/json")
    registry = CollectorRegistry(auto_describe=False)
    load: Load | None = getattr(request.state, "load", None)
    registry.register(GatewayCollector(services, load, await loop_lag()))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
