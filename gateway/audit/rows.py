"""Writes a batch of chained events the cheapest way each database offers.

PostgreSQL: the canonical lines themselves are COPYed into a temporary staging table and
PostgreSQL turns them into rows (`INSERT ... SELECT` over jsonb), so the worker does no
per-field work at all: it hashes bytes and streams them. Worker CPU per event (bench/audit.py,
docs/benchmarks.md "Audit log"): SQLAlchemy Core executemany ~70 us; binary COPY of Python rows
~25 us (parse, convert, copy); staged lines ~5 us. The worker may share a core with its gateway, so
this is most of the difference between auditing costing a third of the gateway's throughput
and a few percent. SQLite (the embedded default, one process) gets Python rows and the
driver's executemany.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Table

from gateway.audit import tables
from gateway.audit.events import (
    ATTEMPT_FIELDS,
    COLUMNS,
    DECISIONS_INDEX,
    EXTRAS_INDEX,
    TAGS_INDEX,
    TIME_INDEXES,
    event_of,
    to_datetime,
)

Staged = tuple[bytes, str, str]  # canonical event, prev hash, row hash
EVENT_COLUMNS = (*COLUMNS, "prev_hash", "row_hash", "attempts", "savings_resilience_nanousd")
ATTEMPT_COLUMNS = ("chain_id", "seq", "position", *ATTEMPT_FIELDS)
DECISION_COLUMNS = ("chain_id", "seq", "position", "plugin", "action", "reason", "enforced")
BODY_COLUMNS = ("chain_id", "seq", "part", "content")
STAGING = "tollgate_audit_staging"

_CASTS = {
    "String": "line->>{i}",
    "Text": "line->>{i}",
    "BigInteger": "(line->>{i})::bigint",
    "Integer": "(line->>{i})::integer",
    "Boolean": "(line->>{i})::boolean",
    "DateTime": "TIMESTAMPTZ 'epoch' + (line->>{i})::bigint * INTERVAL '1 microsecond'",
    "JSON": "(line->{i})::json",
}


def _pg_statements() -> tuple[str, ...]:
    exprs = [
        _CASTS[type(tables.events.c[name].type).__name__].format(i=i)
        for i, name in enumerate(COLUMNS)
    ]
    return (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} "
        "(line jsonb NOT NULL, prev_hash text NOT NULL, row_hash text NOT NULL) "
        "ON COMMIT DELETE ROWS",
        f"INSERT INTO {tables.events.name} ({', '.join(EVENT_COLUMNS)}) "
        f"SELECT {', '.join(exprs)}, prev_hash, row_hash, "
        f"COALESCE(jsonb_array_length(line->{EXTRAS_INDEX}->'attempts'), 1), "
        f"COALESCE((line->{EXTRAS_INDEX}->>'resilience')::bigint, 0) FROM {STAGING} "
        "ORDER BY (line->>1)::bigint",
        f"INSERT INTO {tables.decisions.name} ({', '.join(DECISION_COLUMNS)}) "
        "SELECT line->>0, (line->>1)::bigint, d.position - 1, d.value->>0, d.value->>1, "
        "d.value->>2, (d.value->>3)::boolean "
        f"FROM {STAGING}, jsonb_array_elements(line->{DECISIONS_INDEX}) "
        "WITH ORDINALITY AS d(value, position)",
        f"INSERT INTO {tables.attempts.name} ({', '.join(ATTEMPT_COLUMNS)}) "
        "SELECT line->>0, (line->>1)::bigint, a.position - 1, a.value->>0, a.value->>1, "
        "a.value->>2, (a.value->>3)::integer, a.value->>4, (a.value->>5)::bigint, "
        "(a.value->>6)::bigint "
        f"FROM {STAGING}, jsonb_array_elements(COALESCE(line->{EXTRAS_INDEX}->'attempts', "
        "'[]'::jsonb)) WITH ORDINALITY AS a(value, position)",
    )


_PG = _pg_statements()


def write_events(conn: Connection, staged: Sequence[Staged]) -> None:
    if conn.dialect.name == "postgresql":
        _pg_events(conn, staged)
        return
    rows, decisions, attempts = [], [], []
    for canonical_event, prev, row_hash in staged:
        values, decided, extras = event_of(canonical_event)
        tries = extras.get("attempts", [])
        row = _sqlite_row(values, prev, row_hash)
        rows.append([*row, len(tries) if extras else 1, extras.get("resilience", 0)])
        chain, seq = values[0], values[1]
        for i, (plugin, action, reason, enforced) in enumerate(decided):
            decisions.append((chain, seq, i, plugin, action, reason, enforced))
        attempts += [(chain, seq, i, *attempt) for i, attempt in enumerate(tries)]
    insert_rows(conn, tables.events, EVENT_COLUMNS, rows)
    insert_rows(conn, tables.decisions, DECISION_COLUMNS, decisions)
    insert_rows(conn, tables.attempts, ATTEMPT_COLUMNS, attempts)


def _pg_events(conn: Connection, staged: Sequence[Staged]) -> None:
    raw: Any = conn.connection.driver_connection
    # COPY's text format: backslash is its escape character (JSON's escapes must survive).
    data = b"".join(
        [
            b"%s\t%s\t%s\n" % (event.replace(b"\\", b"\\\\"), prev.encode(), row_hash.encode())
            for event, prev, row_hash in staged
        ]
    )
    create, insert_events, insert_decisions, insert_attempts = _PG
    with raw.cursor() as cursor:
        cursor.execute(create)
        with cursor.copy(f"COPY {STAGING} (line, prev_hash, row_hash) FROM STDIN") as copy:
            copy.write(data)
        cursor.execute(insert_events)
        cursor.execute(insert_decisions)
        cursor.execute(insert_attempts)
        cursor.execute(f"DELETE FROM {STAGING}")


def _sqlite_row(values: list[Any], prev: str, row_hash: str) -> list[Any]:
    """SQLAlchemy's SQLite DateTime text (UTC), tags as JSON text."""
    row = [*values, prev, row_hash]
    for i in TIME_INDEXES:
        when = to_datetime(row[i])
        row[i] = _sqlite_time(when) if when is not None else None
    row[TAGS_INDEX] = orjson.dumps(row[TAGS_INDEX]).decode()
    return row


def _sqlite_time(when: datetime) -> str:
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


_PG_TYPES = {
    "String": "text",
    "Text": "text",
    "BigInteger": "int8",
    "Integer": "int4",
    "Boolean": "bool",
    "DateTime": "timestamptz",
    "JSON": "text",  # already JSON text; json's binary COPY form is its text
}


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Python rows: binary COPY on PostgreSQL, executemany on SQLite."""
    if not rows:
        return
    raw: Any = conn.connection.driver_connection
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        query = f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)"
        with raw.cursor() as cursor, cursor.copy(query) as copy:
            copy.set_types([_PG_TYPES[type(table.c[n].type).__name__] for n in columns])
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    raw.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)
