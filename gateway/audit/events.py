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

from gateway.call import OPTIMISATIONS, CallRecord

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


def _clean(text: str | None, limit: int | None = None) -> str | None:
    """A value as its column can hold it: PostgreSQL text cannot hold NUL, and a value longer
    than its column is cut and marked (`...[N chars in all]`), so no client-chosen string can
    make the database reject the event and wedge the shipper behind it."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if limit is not None and len(text) > limit:
        mark = f"...[{len(text)} chars in all]"
        text = text[: limit - len(mark)] + mark
    return text


# Column widths (tables.py) of the strings a client or an upstream can choose.
NAME = 200
SHORT = 64


# The event's columns, in the order of its canonical form (hashes and the row id aside).
COLUMNS = (
    "chain_id", "seq", "request_id", "received_at", "first_byte_at", "completed_at",
    "key_id", "key_name", "user_id", "team", "org", "tags",
    "dialect", "endpoint", "model", "stream", "backend", "tier", "replica", "upstream_model",
    "outcome", "status", "error_type", "cache",
    "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "usage_estimated",
    "cost_nanousd", "counterfactual_nanousd", "savings_nanousd",
    *(f"savings_{kind}_nanousd" for kind in OPTIMISATIONS),
    "latency_us", "ttft_us", "client_ip", "user_agent",
    "prompt_sha256", "capture", "request_sha256", "response_sha256",
)  # fmt: skip
TIME_INDEXES = tuple(COLUMNS.index(name) for name in TIMES)
TAGS_INDEX = COLUMNS.index("tags")
DECISIONS_INDEX = len(COLUMNS)
EXTRAS_INDEX = DECISIONS_INDEX + 1
# An attempt in the extras, as tollgate_audit_attempts stores it (after chain_id, seq, position).
ATTEMPT_FIELDS = (
    "backend", "upstream_model", "tier", "status", "error_type", "latency_us", "consumed_tokens",
)  # fmt: skip
_NO_USAGE = (None, None, None, None, None)
_NO_SAVINGS = (0,) * len(OPTIMISATIONS)
Decisions = list[list[Any]]
_CHAIN_ID_LEN = 32


def journal_line(
    record: CallRecord, chain_id: str, seq: int, *, client_ip: bool, user_agent: bool
) -> bytes:
    """The call as its journal line: the event's canonical form (what the chain hashes, and
    what `verify` rebuilds from the stored row), then a tab and the stored bodies, if any.

    This is the request path's whole share of auditing (a few microseconds): the worker hashes
    these bytes as they are, and PostgreSQL itself turns them into rows (rows.py)."""
    p = record.principal
    u = record.usage
    money = record.money
    received = round(record.received_at * 1_000_000)
    completed = round(record.completed_at * 1_000_000)
    first = micros(record.first_byte_at)
    values: list[Any] = [
        chain_id, seq, _clean(record.request_id, SHORT), received, first, completed,
        _clean(p.key_id, SHORT), _clean(p.name, NAME), _clean(p.user, NAME),
        _clean(p.team, NAME), _clean(p.org, NAME),
        [_clean(t, NAME) for t in p.tags[:64]] if p.tags else [],
        record.dialect, record.endpoint, _clean(record.model, NAME), record.stream,
        _clean(record.backend, NAME), _clean(record.tier, SHORT), None,
        _clean(record.upstream_model, NAME),
        record.kind, record.status, _clean(record.error_type, SHORT), record.cache,
    ]  # fmt: skip
    if u is not None:
        values += (u.input_tokens, u.output_tokens, u.cached_tokens, u.cache_write_tokens,
                   u.estimated)  # fmt: skip
    else:
        values += _NO_USAGE
    values += (money.cost, money.counterfactual, money.counterfactual - money.cost)
    if money.savings:
        parts = dict(money.savings)
        values += [parts.get(kind, 0) for kind in OPTIMISATIONS]
    else:
        values += _NO_SAVINGS
    agent = record.user_agent
    values += (
        completed - received, first - received if first is not None else None,
        _clean(record.client_ip, SHORT) if client_ip else None,
        _clean(agent[:1000]) if user_agent and agent else None,
        prompt_hash(record.body), record.capture,
    )  # fmt: skip
    stored = bodies_of(record) if record.capture != "none" else {}
    if stored or record.capture == "hash":
        values += (
            _body_hash(stored.get("request"), record.request_body),
            _body_hash(stored.get("response"), record.response_body),
        )
    else:
        values += (None, None)
    values.append(
        [[_clean(d.plugin, NAME), d.action, _clean(d.reason), d.enforced] for d in record.decisions]
    )
    extras = extras_of(record)
    if extras:
        values.append(extras)
    line = orjson.dumps(values)
    if stored:
        return line + b"\t" + orjson.dumps(stored) + b"\n"
    return line + b"\n"


def extras_of(record: CallRecord) -> dict[str, Any]:
    """What an event carries beyond its columns, only when there is something to say (so
    the canonical form of every other event, and of events written before, is unchanged):
    the attempts of a call that tried more than one replica or whose failed tries cost
    something, and that cost (resilience, a negative saving)."""
    resilience = record.money.saving("resilience")
    if len(record.attempts) <= 1 and not resilience:
        return {}
    return {
        "attempts": [
            [
                _clean(a.backend, NAME), _clean(a.model, NAME), _clean(a.tier, SHORT), a.status,
                _clean(a.error, SHORT), round(a.latency_ms * 1000),
                a.usage.input_tokens if a.usage is not None else None,
            ]
            for a in record.attempts
        ],
        "resilience": resilience,
    }  # fmt: skip


def split_line(line: bytes) -> tuple[bytes, bytes | None]:
    """A journal line's canonical event and its bodies' JSON (no tab occurs inside JSON)."""
    canonical_event, tab, bodies = line.partition(b"\t")
    return canonical_event, bodies if tab else None


def line_seq(canonical_event: bytes) -> int:
    """The seq of a canonical event without parsing it: it follows the 32-hex chain id."""
    start = _CHAIN_ID_LEN + 4  # ["<chain id>",
    if canonical_event[start - 2 : start] == b'",':
        end = canonical_event.index(b",", start)
        return int(canonical_event[start:end])
    return int(orjson.loads(canonical_event)[1])


def event_of(canonical_event: bytes) -> tuple[list[Any], Decisions, dict[str, Any]]:
    """The event's values (COLUMNS order, times as microseconds), decisions and extras."""
    fields = orjson.loads(canonical_event)
    extras = fields[EXTRAS_INDEX] if len(fields) > EXTRAS_INDEX else {}
    return fields[:DECISIONS_INDEX], fields[DECISIONS_INDEX], extras


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


def canonical(
    values: list[Any], decisions: Decisions, extras: dict[str, Any] | None = None
) -> bytes:
    """What the chain hashes: every column's value in COLUMNS order, the decisions, then the
    extras when there are any."""
    if extras:
        return orjson.dumps([*values, decisions, extras])
    return orjson.dumps([*values, decisions])


def chain_hash(prev_hash: str, canonical_event: bytes) -> str:
    digest = hashlib.sha256(prev_hash.encode())
    digest.update(b"\n")
    digest.update(canonical_event)
    return digest.hexdigest()
