"""The plain data that flows through the gateway: one Call in, one CallRecord out."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from gateway.tenancy import PromptCacheAsk

Endpoint = Literal["chat.completions", "completions", "embeddings", "messages", "count_tokens",
                   "responses"]  # fmt: skip
Dialect = Literal["openai", "anthropic"]
# What the response cache did: answered (exact, semantic), looked and will store the answer
# (miss), or was not asked (bypass: no cache on the alias, a rule or the client said so, ...).
CacheOutcome = Literal["miss", "exact", "semantic", "bypass"]
Capture = Literal["none", "hash", "redacted", "full"]
# What became of a call, for auditors: one word per outcome type (`alert`: not a call but a
# budget alert, recorded in the audit log only: alerting.py).
OutcomeKind = Literal["served", "cache_hit", "denied", "rejected", "upstream_error",
                      "client_disconnected", "error", "alert"]  # fmt: skip
# The optimisations whose savings are accounted separately (DESIGN.md, "Money").
OPTIMISATIONS = (
    "exact_cache", "semantic_cache", "tier_routing", "prefix_reuse", "provider_prompt_cache",
    "batch",
)  # fmt: skip
# The savings ledger's lines: the optimisations, and what resilience cost (tokens failed
# attempts consumed; never positive).
SAVINGS_KINDS = (*OPTIMISATIONS, "resilience")


class ResponseMeta(NamedTuple):
    """What the upstream said about its response, for traces: its id, the model that actually
    answered, and why generation stopped (one reason per choice)."""

    id: str | None = None
    model: str | None = None
    finish_reasons: tuple[str, ...] = ()


class TraceIds(NamedTuple):
    """A call's place in a distributed trace, fixed on the request path so the upstream can be
    told (W3C `traceparent`) before the spans themselves are built, off the request path."""

    trace_id: int
    root_span_id: int
    upstream_span_id: int
    parent_span_id: int | None  # the client's span, when it sent a traceparent
    sampled: bool
    tracestate: str | None = None


class AttemptRecord(NamedTuple):
    """One try of a call on one replica: what it got and how long it took. `usage` is what a
    failed attempt is assumed to have consumed (the prompt, when it timed out after the
    upstream had it), billed as what resilience cost; `detail` what went wrong, in words for
    operators (the log and the trace), never for the client."""

    backend: str
    model: str
    tier: str
    status: int  # 0: no HTTP answer
    error: str | None
    latency_ms: float
    span_id: int = 0
    started_at: float = 0.0
    usage: Usage | None = None
    detail: str | None = None


class Timings(NamedTuple):
    """When the stages of a call ran (epoch seconds), for the span tree."""

    policies: tuple[float, float] | None = None
    lookups: tuple[tuple[str, float, float], ...] = ()  # cache lookups: (plugin, start, end)
    upstream_at: float | None = None


NO_TIMINGS = Timings()


# Labels under this prefix are told to the client as `x-tollgate-<rest>` response headers.
NOTICE = "notice."


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved once by auth, never carrying the secret itself."""

    key_id: str
    name: str
    user: str | None = None
    team: str | None = None
    org: str | None = None
    tags: tuple[str, ...] = ()
    models: frozenset[str] | None = None  # None: every model

    def may_use(self, alias: str) -> bool:
        return self.models is None or alias in self.models


ANONYMOUS = Principal(key_id="anonymous", name="anonymous")


@dataclass(frozen=True, slots=True)
class Target:
    """One place a model alias can be served: a backend and the model name it knows."""

    backend: str
    model: str
    tier: str | None = None


@dataclass(frozen=True, slots=True)
class Deny:
    """Stop the call with an error the client sees in its own dialect."""

    message: str
    status: int = 403
    code: str = "policy_denied"
    headers: Mapping[str, str] = field(default_factory=dict)
    error_type: str = "policy_error"
    reason: str = ""  # for the decision record, when it says more than the client's message


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the call without an upstream (a cache hit, a canned reply)."""

    body: Mapping[str, Any]
    cache: CacheOutcome = "exact"
    usage: Usage | None = None  # what the answer would have used upstream (for savings)


@dataclass(frozen=True, slots=True)
class Route:
    """A policy's intent: serve the call from this tier (of its alias, or of `alias`). The
    router turns it into concrete replicas; a policy never names a backend."""

    tier: str | None = None
    alias: str | None = None
    reason: str = ""


Verdict = Deny | Answer | Route


@dataclass(frozen=True, slots=True)
class Decision:
    """One plugin's recorded judgement on a call: what it did and why. `note` is the gateway's
    own remark (an upstream's error detail, a usage anomaly), kept with the call for auditors."""

    plugin: str
    action: Literal["deny", "answer", "route", "modify", "shadow", "note"]
    reason: str
    enforced: bool = True


@dataclass(slots=True)
class Call:
    """One request as every stage sees it, in either dialect: who sent it, what it asks (`body`)
    and the decisions made about it. Policies may edit `body` and must record a Decision, so
    the audit log says why; mutable on purpose, filled in along one path by one task."""

    request_id: str
    dialect: Dialect
    endpoint: Endpoint
    model: str
    body: dict[str, Any]
    stream: bool
    client_wants_usage: bool
    principal: Principal = ANONYMOUS
    received_at: float = field(default_factory=time.time)
    decisions: list[Decision] = field(default_factory=list)
    route: Route | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    # Annotations policies leave for later policies and sinks (e.g. a soft budget passed).
    labels: dict[str, str] = field(default_factory=dict)
    # A policy's own per-call state between its request and response hooks, keyed by plugin.
    state: dict[str, Any] = field(default_factory=dict)
    # Client headers an upstream of the same dialect must see (anthropic-version, -beta).
    forward: tuple[tuple[str, str], ...] = ()
    # The request as the client sent it, kept (by reference) for content capture.
    raw_body: bytes = b""
    # How much of the content the audit log keeps; set by the `audit_capture` policy.
    capture: Capture = "none"
    redact: Redaction | None = None
    # W3C trace context the client sent (raw headers), and the ids this call traces under.
    traceparent: str | None = None
    tracestate: str | None = None
    trace: TraceIds | None = None
    # Cache-lookup plugin timings (plugin, start, end), appended by the policy chain.
    lookups: list[tuple[str, float, float]] | None = None
    # The request's headers as the server received them (lower-case names), by reference:
    # read only by policies that match on a header.
    raw_headers: Sequence[tuple[bytes, bytes]] = ()
    # What shadow rules would have routed the call to (rule, intent): priced when it is recorded.
    shadows: list[tuple[str, Route]] | None = None
    # Keep the response for a policy's response hook (a quality guard's sample), whatever the
    # audit log captures.
    keep_response: bool = False
    # Prefix-aware routing's keys and predictions (routing/prefix.py), checked when recorded.
    prefix: object | None = None
    kv_salt: str | None = None  # the tenant's KV-cache salt when the alias isolates tenants
    prompt_cache: PromptCacheAsk | None = None  # a rule's ask (backends/prompt_cache.py)

    def decide(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def header(self, name: str) -> str | None:
        """A request header's value (`name` lower-case), or None."""
        wanted = name.encode("latin-1")
        for key, value in self.raw_headers:
            if key == wanted:
                return value.decode("latin-1")
        return None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage normalized across dialects; `estimated` when Tollgate counted it itself,
    `anomaly` when the upstream's own figures could not be true (accounting/usage_guard.py)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False
    anomaly: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Redaction(Protocol):
    """Masks what must not be stored (emails, keys, card numbers...) in captured content."""

    def __call__(self, text: str) -> str: ...


@dataclass(frozen=True, slots=True)
class Money:
    """A call's three figures in nano-dollars: what it cost, what it would have cost with no
    optimisation, and the difference split by the optimisation that saved it (parts add up)."""

    cost: int = 0
    counterfactual: int = 0
    savings: tuple[tuple[str, int], ...] = ()
    # What shadow rules would have saved had they been enforced (rule, nano-dollars; negative:
    # it would have cost more). Not part of the call's figures: what ops read before enforcing.
    shadows: tuple[tuple[str, int], ...] = ()

    @property
    def saved(self) -> int:
        return self.counterfactual - self.cost

    def saving(self, kind: str) -> int:
        return sum(v for k, v in self.savings if k == kind)


NO_MONEY = Money()


@dataclass(slots=True)
class Outcome:
    """What happened to a call (where it went, the answer's usage, cost and savings, the cache's
    verdict): filled in as the response is relayed, read once when the call is recorded."""

    status: int = 0
    target: Target | None = None
    usage: Usage | None = None
    error_type: str | None = None
    first_byte_at: float | None = None
    completed_at: float | None = None
    disconnected: bool = False
    cache: CacheOutcome = "bypass"
    kind: OutcomeKind | None = None  # set where it is decided; otherwise derived from status
    money: Money = NO_MONEY
    response_body: bytes | None = None  # only when content capture asks for it
    meta: ResponseMeta | None = None
    policies_at: tuple[float, float] | None = None
    upstream_at: float | None = None
    # A stream that failed after bytes reached the client: its relayed tokens are billed.
    partial: bool = False
    attempts: list[AttemptRecord] = field(default_factory=list)
    prefix_predicted: int | None = None

    def final_kind(self) -> OutcomeKind:
        if self.kind is not None:
            return self.kind
        if self.disconnected:
            return "client_disconnected"
        if self.status >= 400:
            return "upstream_error" if self.target is not None else "error"
        return "cache_hit" if self.cache in ("exact", "semantic") else "served"


class CallRecord(NamedTuple):
    """The immutable account of one finished call, fanned out to every sink. A NamedTuple: on
    the hot path a frozen dataclass's __init__ (a setattr per field) costs several times more."""

    request_id: str
    dialect: str
    endpoint: str
    model: str
    principal: Principal
    received_at: float
    first_byte_at: float | None
    completed_at: float
    status: int
    error_type: str | None
    backend: str | None
    upstream_model: str | None
    tier: str | None
    usage: Usage | None
    cache: CacheOutcome
    stream: bool
    disconnected: bool
    decisions: tuple[Decision, ...]
    client_ip: str | None
    user_agent: str | None
    kind: OutcomeKind = "served"
    money: Money = NO_MONEY
    capture: Capture = "none"
    request_body: bytes | None = None
    response_body: bytes | None = None
    body: dict[str, Any] | None = None  # the request as forwarded, for the prompt hash
    meta: ResponseMeta | None = None
    trace: TraceIds | None = None
    traceparent: str | None = None  # as the client sent it (the trace ids when none were fixed)
    timings: Timings = NO_TIMINGS
    attempts: tuple[AttemptRecord, ...] = ()
    prefix_predicted: int | None = None  # prefix-aware routing's cached-tokens prediction

    @property
    def latency_ms(self) -> float:
        return (self.completed_at - self.received_at) * 1000.0

    @property
    def ttft_ms(self) -> float | None:
        if self.first_byte_at is None:
            return None
        return (self.first_byte_at - self.received_at) * 1000.0

    @classmethod
    def of(cls, call: Call, outcome: Outcome) -> CallRecord:
        target = outcome.target
        return cls(
            request_id=call.request_id,
            dialect=call.dialect,
            endpoint=call.endpoint,
            model=call.model,
            principal=call.principal,
            received_at=call.received_at,
            first_byte_at=outcome.first_byte_at,
            completed_at=outcome.completed_at or time.time(),
            status=outcome.status,
            error_type=outcome.error_type,
            backend=target.backend if target else None,
            upstream_model=target.model if target else None,
            tier=target.tier if target else None,
            usage=outcome.usage,
            cache=outcome.cache,
            stream=call.stream,
            disconnected=outcome.disconnected,
            decisions=tuple(call.decisions),
            client_ip=call.client_ip,
            user_agent=call.user_agent,
            kind=outcome.final_kind(),
            money=outcome.money,
            capture=call.capture,
            request_body=_captured(call, call.raw_body),
            response_body=_captured(call, outcome.response_body),
            body=call.body,
            meta=outcome.meta,
            trace=call.trace,
            traceparent=call.traceparent,
            timings=NO_TIMINGS
            if outcome.policies_at is None and outcome.upstream_at is None
            else Timings(
                outcome.policies_at,
                tuple(call.lookups) if call.lookups else (),
                outcome.upstream_at,
            ),
            attempts=tuple(outcome.attempts),
            prefix_predicted=outcome.prefix_predicted,
        )


def _captured(call: Call, content: bytes | None) -> bytes | None:
    """Content as the audit log may keep it: nothing, as-is (hashed or stored), or redacted."""
    if call.capture == "none" or content is None:
        return None
    if call.capture == "redacted" and call.redact is not None:
        return call.redact(content.decode("utf-8", "replace")).encode()
    return content
