"""The SQL schema (SQLAlchemy 2 Core tables) and engines for SQLite and PostgreSQL.

Alembic (migrations/) owns the schema's history; these tables are what the code reads and
writes. Everything here is synchronous and runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)

metadata = MetaData()

api_keys = Table(
    "tollgate_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("user_id", String(200)),
    Column("team", String(200)),
    Column("org", String(200)),
    Column("tags", Text, nullable=False, default="[]"),
    Column("models", Text),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("revoked_at", Float),
    # Rotation: the secret before the last rotation keeps working until `previous_expires_at`.
    Column("previous_hash", String(64)),
    Column("previous_prefix", String(16)),
    Column("previous_expires_at", Float),
    Column("rotated_at", Float),
)

# The Responses API's stored responses (stores/responses.py): JSON documents, read by id.
responses = Table(
    "tollgate_responses",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("model", String(200), nullable=False),
    Column("response", Text, nullable=False),
    Column("input_items", Text, nullable=False),
    Column("conversation", Text, nullable=False),
)

# The batched tier (stores/batches.py): uploaded files, jobs, and each job's lines.
files = Table(
    "tollgate_files",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("filename", String(300), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("content", LargeBinary, nullable=False),
)
batches = Table(
    "tollgate_batches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("principal", Text, nullable=False),  # JSON: who submitted it (its lines run as them)
    Column("dialect", String(16), nullable=False),
    Column("endpoint", String(32), nullable=False),
    Column("input_file_id", String(64)),
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("times", Text, nullable=False),  # JSON: when each status began
    Column("metadata", Text),
    Column("errors", Text),  # JSON: why validation failed it, line by line
    Column("total", Integer, nullable=False),
    Column("reservation", Text, nullable=False),  # JSON: the budget counters it reserved
    Column("placement", Text, nullable=False, server_default=""),
    Column("output_file_id", String(64)),
    Column("error_file_id", String(64)),
    Column("owner", String(64)),
    Column("lease_until", Float, nullable=False, server_default="0"),
)
batch_lines = Table(
    "tollgate_batch_lines",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("custom_id", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("worst_nanousd", BigInteger, nullable=False),
    Column("worst_tokens", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("owner", String(64)),
    Column("result", Text),
    Column("finished_at", Float),
)

# A budget alert threshold (percent) that fired in a window: the primary key makes it once per
# budget, subject and window across the fleet.
budget_alerts = Table(
    "tollgate_budget_alerts",
    metadata,
    Column("budget", String(200), primary_key=True),
    Column("subject", String(300), primary_key=True),
    Column("window_tag", String(40), primary_key=True),
    Column("threshold", Integer, primary_key=True),
    Column("fired_at", Float, nullable=False),
    Column("used_nanousd", BigInteger, nullable=False),
    Column("limit_nanousd", BigInteger, nullable=False),
)

budgets = Table(
    "tollgate_budgets",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("scope", String(16), nullable=False),
    Column("subject", String(200)),
    Column("usd_nanos", BigInteger),
    Column("tokens", BigInteger),
    Column("window", String(16), nullable=False),
    Column("enforcement", String(8), nullable=False),
    Column("updated_at", Float, nullable=False),
)

revisions = Table(
    "tollgate_revisions",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)

counters = Table(
    "tollgate_counters",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("counter", BigInteger),
    Column("tally", Text),
    Column("expires_at", Float, nullable=False, default=0.0),
)


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` use psycopg 3, the driver we install."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def make_engine(
    url: str, *, pre_ping: bool = True, pool_size: int = 5, max_overflow: int = 10
) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    sizes = {} if ":memory:" in url else {"pool_size": pool_size, "max_overflow": max_overflow}
    engine = create_engine(url, pool_pre_ping=pre_ping, future=True, **sizes)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # WAL lets the gateway read while `tollgate keys create` writes; busy_timeout waits out a
    # writer instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def rejected_value(exc: BaseException) -> bool:
    """The database refused a value in the batch (too long, out of range, invalid), as
    opposed to being unreachable: retrying the same batch can never succeed."""
    import sqlite3

    import psycopg
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.StatementError) and exc.orig is not None:
        exc = exc.orig
    return isinstance(
        exc,
        psycopg.DataError
        | psycopg.IntegrityError
        | sa_exc.DataError
        | sa_exc.IntegrityError
        | OverflowError
        | ValueError
        | sqlite3.IntegrityError
        | sqlite3.DataError,
    )
