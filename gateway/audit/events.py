"""One call as an audit event: the row's values, their canonical form, and the chain hash.

The canonical form is rebuilt from the stored row by `verify`, so every value here must survive
a round trip through SQLite and PostgreSQL unchanged: integers, strings, booleans, None and
lists of them (times as integer microseconds, money as integer nano-dollars, no floats).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway.call import SAVINGS_KINDS, CallRecord

GENESIS = "0" * 64
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIMES = ("received_at", "first_byte_at", "completed_at")
_PROMPT_FIELDS = ("system", "messages", "prompt", "input", "tools", "functions")


def micros(epoch_seconds: float | None) -> int | None:
    return None if epoch_seconds is None else round(epoch_seconds * 1_000_000)


def to_datetime(us: int | None) -> datetime | None:
    return None if us is None else EPOCH + timedelta(microseconds=us)


def from_datetime(value: datetime | None) -> int | None:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // timedelta(microseconds=1)


def sha256_hex(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def prompt_hash(body: dict[str, Any] | None) -> str | None:
    """The same prompt always hashes the same (keys sorted), whatever else the request set."""
    if not body:
        return None
    prompt = {k: body[k] for k in _PROMPT_FIELDS if k in body}
    return hashlib.sha256(orjson.dumps(prompt, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _clean(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: one such byte must not wedge the shipper."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


def event_of(
    record: CallRecord, stored: dict[str, str], *, client_ip: bool, user_agent: bool
) -> dict[str, Any]:
    """The event's values keyed by column (without chain, seq and hashes). A stored body is
    hashed as stored (so verify can check it); a body only hashed, as it was sent."""
    p = record.principal
    u = record.usage
    money = record.money
    received = micros(record.received_at)
    completed = micros(record.completed_at)
    first = micros(record.first_byte_at)
    assert received is not None and completed is not None
    event: dict[str, Any] = {
        "request_id": record.request_id,
        "received_at": received,
        "first_byte_at": first,
        "completed_at": completed,
        "key_id": p.key_id,
        "key_name": _clean(p.name),
        "user_id": _clean(p.user),
        "team": _clean(p.team),
        "org": _clean(p.org),
        "tags": [_clean(t) for t in p.tags],
        "dialect": record.dialect,
        "endpoint": record.endpoint,
        "model": _clean(record.model),
        "stream": record.stream,
        "backend": record.backend,
        "tier": record.tier,
        "replica": None,
        "upstream_model": record.upstream_model,
        "outcome": record.kind,
        "status": record.status,
        "error_type": record.error_type,
        "cache": record.cache,
        "input_tokens": u.input_tokens if u else None,
        "output_tokens": u.output_tokens if u else None,
        "cached_tokens": u.cached_tokens if u else None,
        "cache_write_tokens": u.cache_write_tokens if u else None,
        "usage_estimated": u.estimated if u else None,
        "cost_nanousd": money.cost,
        "counterfactual_nanousd": money.counterfactual,
        "savings_nanousd": money.saved,
        "latency_us": completed - received,
        "ttft_us": first - received if first is not None else None,
        "client_ip": record.client_ip if client_ip else None,
        "user_agent": _clean(record.user_agent[:1000])
        if user_agent and record.user_agent
        else None,
        "prompt_sha256": prompt_hash(record.body),
        "capture": record.capture,
        "request_sha256": _body_hash(stored.get("request"), record.request_body),
        "response_sha256": _body_hash(stored.get("response"), record.response_body),
        "decisions": [
            [_clean(d.plugin), d.action, _clean(d.reason), d.enforced] for d in record.decisions
        ],
    }
    for kind in SAVINGS_KINDS:
        event[f"savings_{kind}_nanousd"] = money.saving(kind)
    return event


def _body_hash(stored: str | None, sent: bytes | None) -> str | None:
    return sha256_hex(stored.encode()) if stored is not None else sha256_hex(sent)


def bodies_of(record: CallRecord) -> dict[str, str]:
    """Content the audit log stores (redacted or full capture), stored beside the event."""
    if record.capture not in ("redacted", "full"):
        return {}
    out = {}
    for part, data in (("request", record.request_body), ("response", record.response_body)):
        if data is not None:
            out[part] = _clean(data.decode("utf-8", "replace")) or ""
    return out


def canonical(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, canonical_event: bytes) -> str:
    digest = hashlib.sha256(prev_hash.encode())
    digest.update(b"\n")
    digest.update(canonical_event)
    return digest.hexdigest()
