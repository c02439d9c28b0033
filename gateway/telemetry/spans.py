"""A finished call's record turned into its span tree, following the OpenTelemetry GenAI
semantic conventions, plus `tollgate.*` attributes for the money and the decisions.

The tree: the gateway's SERVER span `{operation} {alias}` (the call as the client saw it), with
children for policy evaluation, each cache lookup, and the upstream CLIENT call. Spans are built
after the call, from the timings it recorded, as finished `ReadableSpan`s: going through a live
Tracer would cost ~20 us per span on the event loop, this ~2 us (docs/benchmarks.md
"Telemetry"). Ids were fixed on
the request path (context.py), so the upstream saw the same trace.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from gateway.call import AttemptRecord, CallRecord, TraceIds
from gateway.telemetry import attributes as attr
from gateway.telemetry.context import TraceStarter
from gateway.telemetry.facts import CallFacts, facts_of, model_label

OPERATIONS = {
    "chat.completions": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "count_tokens": "chat",
    "responses": "chat",
}
# Request parameters reported as gen_ai.request.* (OpenAI and Anthropic spell them alike).
_PARAMS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("top_k", "gen_ai.request.top_k"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
)
_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure_openai": "azure.ai.openai",
    "sim": "tollgate.sim",
}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_NANO = 1e-9


class Peer(NamedTuple):
    """Who a backend is, for `gen_ai.provider.name` and `server.*`."""

    provider: str
    address: str | None = None
    port: int | None = None


PeerLookup = Callable[[str], Peer | None]


def peer_of(backend_config: object) -> Peer:
    kind = str(getattr(backend_config, "type", "openai"))
    url = getattr(backend_config, "base_url", None) or getattr(backend_config, "endpoint", None)
    if not isinstance(url, str):
        return Peer(_PROVIDERS.get(kind, kind))
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Peer(_PROVIDERS.get(kind, kind), parts.hostname, port)


def usd(nano: int) -> float:
    """Nano-dollars as USD for an attribute; exact back to nano-dollars with round(x * 1e9)
    for any call under $9M."""
    return nano * _NANO


class SpanBuilder:
    def __init__(
        self,
        resource: Resource,
        scope: InstrumentationScope,
        peers: PeerLookup,
        starter: TraceStarter,
    ) -> None:
        self._resource = resource
        self._scope = scope
        self._peers = peers
        self._starter = starter

    def facts(self, record: CallRecord) -> CallFacts:
        """What the rollups and metrics count of the call (no span is built for them)."""
        peer = self._peers(record.backend) if record.backend else None
        operation = OPERATIONS.get(record.endpoint, "chat")
        return facts_of(record, operation, peer.provider if peer else record.dialect)

    def spans(self, record: CallRecord, tree: bool = True) -> list[ReadableSpan]:
        """The call's spans, children first and the root last (the order they end in). With
        `tree` false, or for a trace that is not sampled, only the root (no exporter would see
        the children)."""
        # A call refused before it was traced (bad key, bad JSON) gets its ids here.
        trace = record.trace or self._starter.start(record.traceparent)
        flags = _SAMPLED if trace.sampled else _UNSAMPLED
        root = SpanContext(trace.trace_id, trace.root_span_id, False, flags)
        parent = (
            SpanContext(trace.trace_id, trace.parent_span_id, True, flags)
            if trace.parent_span_id
            else None
        )
        peer = self._peers(record.backend) if record.backend else None
        operation = OPERATIONS.get(record.endpoint, "chat")
        out = (
            self._children(record, trace, root, flags, operation, peer)
            if tree and trace.sampled
            else []
        )
        attrs = root_attributes(record, operation, peer)
        model = attrs[attr.REQUEST_MODEL]
        name = f"{operation} {model}" if model else operation
        start, end = _ns(record.received_at), _ns(record.completed_at)
        out.append(
            self._span(name, root, parent, attrs, start, end, SpanKind.SERVER, _status(record))
        )
        return out

    def _children(
        self,
        record: CallRecord,
        trace: TraceIds,
        root: SpanContext,
        flags: TraceFlags,
        operation: str,
        peer: Peer | None,
    ) -> list[ReadableSpan]:
        out: list[ReadableSpan] = []
        timings = record.timings
        if timings.policies is not None:
            out.append(self._policies(record, trace, root, flags, timings.policies))
        for plugin, t0, t1 in timings.lookups:
            ctx = SpanContext(trace.trace_id, _span_id(), False, flags)
            attrs = {"tollgate.policy.plugin": plugin, "tollgate.cache": record.cache}
            out.append(self._span("cache lookup", ctx, root, attrs, _ns(t0), _ns(t1)))
        if timings.upstream_at is not None:
            out += self._attempts(record, trace, root, flags, operation)
        return out

    def _attempts(
        self,
        record: CallRecord,
        trace: TraceIds,
        root: SpanContext,
        flags: TraceFlags,
        operation: str,
    ) -> list[ReadableSpan]:
        """One CLIENT span per try: the upstream saw each one's id as its parent. The try that
        answered lasts until the call ended (its stream was relayed to the end)."""
        out = []
        last = len(record.attempts) - 1
        for i, attempt in enumerate(record.attempts):
            ctx = SpanContext(trace.trace_id, attempt.span_id, False, flags)
            peer = self._peers(attempt.backend)
            answered = i == last and attempt.error is None
            if answered:
                attrs = self._upstream_attributes(record, operation, peer)
                if record.prefix_predicted is not None:  # prefix-aware routing's guess
                    cached = record.usage.cached_tokens if record.usage else 0
                    attrs["tollgate.prefix.predicted_cached_tokens"] = record.prefix_predicted
                    attrs["tollgate.prefix.gap_tokens"] = record.prefix_predicted - cached
                end = record.completed_at
                status = _status(record, upstream=True)
            else:
                attrs = _attempt_attributes(attempt, operation, peer)
                end = attempt.started_at + attempt.latency_ms / 1000
                why = attempt.detail or attempt.error or f"HTTP {attempt.status}"
                status = Status(StatusCode.ERROR, why)
            attrs["tollgate.attempt"] = i + 1
            name = f"{operation} {attempt.model}"
            start = _ns(attempt.started_at)
            out.append(self._span(name, ctx, root, attrs, start, _ns(end), SpanKind.CLIENT, status))
        return out

    def _policies(
        self,
        record: CallRecord,
        trace: TraceIds,
        root: SpanContext,
        flags: TraceFlags,
        at: tuple[float, float],
    ) -> ReadableSpan:
        ctx = SpanContext(trace.trace_id, _span_id(), False, flags)
        attrs: dict[str, Any] = {"tollgate.policy.decision_count": len(record.decisions)}
        if record.decisions:
            attrs["tollgate.policy.decisions"] = decision_texts(record)
        return self._span("policies", ctx, root, attrs, _ns(at[0]), _ns(at[1]))

    def _span(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        start: int,
        end: int,
        kind: SpanKind = SpanKind.INTERNAL,
        status: Status | None = None,
    ) -> ReadableSpan:
        return ReadableSpan(
            name,
            context,
            parent,
            self._resource,
            attributes,
            kind=kind,
            status=status or _UNSET,
            start_time=start,
            end_time=max(start, end),
            instrumentation_scope=self._scope,
        )

    @staticmethod
    def _upstream_attributes(
        record: CallRecord, operation: str, peer: Peer | None
    ) -> dict[str, Any]:
        attrs = _client_attributes(operation, peer, record.upstream_model, record.backend)
        attrs[attr.STATUS_CODE] = record.status
        if record.tier:
            attrs[attr.TIER] = record.tier
        _response(attrs, record)
        return attrs


def _attempt_attributes(
    attempt: AttemptRecord, operation: str, peer: Peer | None
) -> dict[str, Any]:
    attrs = _client_attributes(operation, peer, attempt.model, attempt.backend)
    attrs[attr.TIER] = attempt.tier
    attrs[attr.ERROR_TYPE] = attempt.error or "http_error"
    if attempt.status:
        attrs[attr.STATUS_CODE] = attempt.status
    return attrs


def _client_attributes(
    operation: str, peer: Peer | None, model: str | None, backend: str | None
) -> dict[str, Any]:
    """What every upstream CLIENT span says: the operation, who was called, which model."""
    attrs: dict[str, Any] = {
        attr.OPERATION: operation,
        attr.PROVIDER: peer.provider if peer else "openai",
        attr.REQUEST_MODEL: model,
        "tollgate.backend": backend,
    }
    if peer is not None and peer.address:
        attrs["server.address"] = peer.address
        attrs["server.port"] = peer.port
    return attrs


def root_attributes(record: CallRecord, operation: str, peer: Peer | None) -> dict[str, Any]:
    """The gateway span's attributes: what the rollups and metrics read."""
    p = record.principal
    money = record.money
    attrs: dict[str, Any] = {
        attr.OPERATION: operation,
        attr.PROVIDER: peer.provider if peer else record.dialect,
        attr.REQUEST_MODEL: model_label(record),
        attr.STATUS_CODE: record.status,
        "tollgate.request_id": record.request_id,
        attr.OUTCOME: record.kind,
        "tollgate.cache": record.cache,
        "tollgate.dialect": record.dialect,
        "tollgate.stream": record.stream,
        "tollgate.key.id": p.key_id,
        "tollgate.key.name": p.name,
        "tollgate.cost": usd(money.cost),
        "tollgate.counterfactual_cost": usd(money.counterfactual),
        "tollgate.savings": usd(money.counterfactual - money.cost),
    }
    for name, text in (
        (attr.TEAM, p.team),
        ("tollgate.org", p.org),
        ("tollgate.user", p.user),
        ("tollgate.backend", record.backend),
        ("tollgate.upstream_model", record.upstream_model),
        (attr.TIER, record.tier),
    ):
        if text:
            attrs[name] = text
    for kind, value in money.savings:
        if value:
            attrs[f"tollgate.savings.{kind}"] = usd(value)
    if money.shadows:  # what shadow rules would have saved (rollups, metrics)
        attrs["tollgate.shadow_rules"] = tuple(rule for rule, _ in money.shadows)
        for rule, value in money.shadows:
            attrs[f"tollgate.shadow.{rule}"] = usd(value)
    if record.first_byte_at is not None:
        attrs["tollgate.ttft_ms"] = (record.first_byte_at - record.received_at) * 1000.0
    if record.decisions:
        attrs["tollgate.policy.decisions"] = decision_texts(record)
    body = record.body
    if body:
        for field, name in _PARAMS:
            param = body.get(field)
            if isinstance(param, int | float) and not isinstance(param, bool):
                attrs[name] = param
    _response(attrs, record)
    if record.capture in ("full", "redacted"):
        # Content only when the audit_capture policy keeps it (redacted as it is stored).
        if record.request_body is not None:
            attrs["gen_ai.input.messages"] = record.request_body.decode("utf-8", "replace")
        if record.response_body is not None:
            attrs["gen_ai.output.messages"] = record.response_body.decode("utf-8", "replace")
    return attrs


def decision_texts(record: CallRecord) -> tuple[str, ...]:
    return tuple(
        f"{d.plugin} {d.action}{'' if d.enforced else ' (shadow)'}: {d.reason}"
        for d in record.decisions
    )


def _response(attrs: dict[str, Any], record: CallRecord) -> None:
    if record.error_type:
        attrs[attr.ERROR_TYPE] = record.error_type
    meta = record.meta
    if meta is not None:
        for name, value in (
            ("gen_ai.response.id", meta.id),
            ("gen_ai.response.model", meta.model),
            ("gen_ai.response.finish_reasons", meta.finish_reasons),
        ):
            if value:
                attrs[name] = value
    usage = record.usage
    if usage is not None:
        attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
        if usage.cached_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
        if usage.cache_write_tokens:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
        if usage.estimated:
            attrs["tollgate.usage.estimated"] = True


_UNSET = Status(StatusCode.UNSET)


def _status(record: CallRecord, *, upstream: bool = False) -> Status:
    """ERROR for what went wrong on our side or upstream; a client's own error (401, a denial,
    a disconnect) leaves the server span unset, as the HTTP conventions ask."""
    if record.kind in ("upstream_error", "error") or record.status >= 500:
        return Status(StatusCode.ERROR, record.error_type or str(record.status))
    if upstream and record.status >= 400 and record.kind != "client_disconnected":
        return Status(StatusCode.ERROR, record.error_type or str(record.status))
    return _UNSET


def _span_id() -> int:
    return random.getrandbits(64) or 1


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)
