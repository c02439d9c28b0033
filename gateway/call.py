"""The plain data that flows through the gateway: one Call in, one CallRecord out."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Endpoint = Literal["chat.completions", "completions", "embeddings", "messages", "count_tokens"]
Dialect = Literal["openai", "anthropic"]
CacheOutcome = Literal["miss", "exact", "semantic", "none"]


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


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the call without an upstream (a cache hit, a canned reply)."""

    body: Mapping[str, Any]
    cache: CacheOutcome = "exact"


@dataclass(frozen=True, slots=True)
class Route:
    """Prefer these targets (in order) over the alias's default spread."""

    targets: tuple[Target, ...]
    reason: str = ""


Verdict = Deny | Answer | Route


@dataclass(frozen=True, slots=True)
class Decision:
    """One plugin's recorded judgement on a call: what it did and why."""

    plugin: str
    action: Literal["deny", "answer", "route", "modify", "shadow"]
    reason: str
    enforced: bool = True


@dataclass(slots=True)
class Call:
    """One normalized request. Policies may edit `body` (and must record a Decision)."""

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

    def decide(self, decision: Decision) -> None:
        self.decisions.append(decision)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage normalized across dialects; `estimated` when Tollgate counted it itself."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Outcome:
    """What happened upstream; filled in as the response is relayed."""

    status: int = 0
    target: Target | None = None
    usage: Usage | None = None
    error_type: str | None = None
    first_byte_at: float | None = None
    completed_at: float | None = None
    disconnected: bool = False
    cache: CacheOutcome = "miss"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """The immutable account of one finished call, fanned out to every sink."""

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
        )
