"""What the spend rollups and the metric book count of a finished call, read once from its
record: typed fields, money in nano-dollars (converted to USD only where it is shown or
exported), the model as a series label may carry it. The spans carry the same facts as OTLP
attributes for the traces; nothing here reads a span back."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.call import CallRecord, Money, Usage

UNKNOWN_MODEL = "(unknown)"


def model_label(record: CallRecord) -> str:
    """The model as metrics, rollups and the dashboard group by it: an alias the config serves,
    never whatever name a client sent (each one would be a new series, row and legend entry).
    A call refused before it reached a model (404 model not found) has no alias."""
    if record.kind == "rejected" and record.model:
        return UNKNOWN_MODEL
    return record.model


@dataclass(frozen=True, slots=True)
class CallFacts:
    operation: str  # gen_ai.operation.name: chat, text_completion, embeddings
    provider: str  # gen_ai.provider.name: the backend's vendor, else the client's dialect
    model: str
    team: str
    tier: str
    key_id: str
    key_name: str
    cache: str
    outcome: str  # served, cache_hit, denied, rejected, upstream_error, ...
    stream: bool
    error_type: str
    start_ns: int
    end_ns: int
    ttft_ms: float | None  # until the first byte reached the client
    usage: Usage | None
    money: Money  # nano-dollars

    @property
    def minute(self) -> int:
        """The epoch minute the call started in (the rollups' finest bucket)."""
        return self.start_ns // 60_000_000_000 * 60


def facts_of(record: CallRecord, operation: str, provider: str) -> CallFacts:
    principal = record.principal
    first = record.first_byte_at
    return CallFacts(
        operation=operation,
        provider=provider,
        model=model_label(record),
        team=principal.team or "",
        tier=record.tier or "",
        key_id=principal.key_id,
        key_name=principal.name,
        cache=record.cache,
        outcome=record.kind,
        stream=record.stream,
        error_type=record.error_type or "",
        start_ns=int(record.received_at * 1e9),
        end_ns=int(record.completed_at * 1e9),
        ttft_ms=(first - record.received_at) * 1000.0 if first is not None else None,
        usage=record.usage,
        money=record.money,
    )
