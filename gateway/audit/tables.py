"""The audit schema (SQLAlchemy Core). migrations/versions/0002_audit.py creates it; docs/audit.md
documents every column for auditors.

Money is integer nano-dollars (`*_nanousd`; the views show USD). Times are UTC timestamps
with microseconds; durations integer microseconds.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import JSON

from gateway.call import OPTIMISATIONS
from gateway.stores.sql import metadata

TS = DateTime(timezone=True)
SAVINGS_COLUMNS = tuple(f"savings_{kind}_nanousd" for kind in OPTIMISATIONS)

events = Table(
    "tollgate_audit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("chain_id", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("received_at", TS, nullable=False),
    Column("first_byte_at", TS),
    Column("completed_at", TS, nullable=False),
    Column("key_id", String(64)),
    Column("key_name", String(200)),
    Column("user_id", String(200)),
    Column("team", String(200)),
    Column("org", String(200)),
    Column("tags", JSON),
    Column("dialect", String(16), nullable=False),
    Column("endpoint", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("backend", String(200)),
    Column("tier", String(64)),
    Column("replica", String(200)),
    Column("upstream_model", String(200)),
    Column("outcome", String(32), nullable=False),
    Column("status", Integer, nullable=False),
    Column("error_type", String(64)),
    Column("cache", String(16), nullable=False),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    Column("cached_tokens", BigInteger),
    Column("cache_write_tokens", BigInteger),
    Column("usage_estimated", Boolean),
    Column("cost_nanousd", BigInteger, nullable=False),
    Column("counterfactual_nanousd", BigInteger, nullable=False),
    Column("savings_nanousd", BigInteger, nullable=False),
    *(Column(name, BigInteger, nullable=False) for name in SAVINGS_COLUMNS),
    Column("latency_us", BigInteger, nullable=False),
    Column("ttft_us", BigInteger),
    Column("client_ip", String(64)),
    Column("user_agent", Text),
    Column("prompt_sha256", String(64)),
    Column("capture", String(16), nullable=False),
    Column("request_sha256", String(64)),
    Column("response_sha256", String(64)),
    Column("prev_hash", String(64), nullable=False),
    Column("row_hash", String(64), nullable=False),
    # From the event's trailing extras (events.py): how many replicas were tried, and what the
    # failed attempts' consumed tokens cost (never positive).
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("savings_resilience_nanousd", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("chain_id", "seq", name="uq_tollgate_audit_events_chain_seq"),
    Index("ix_tollgate_audit_events_received_at", "received_at"),
    Index("ix_tollgate_audit_events_request_id", "request_id"),
)

decisions = Table(
    "tollgate_audit_decisions",
    metadata,
    Column("chain_id", String(32), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("plugin", String(200), nullable=False),
    Column("action", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("enforced", Boolean, nullable=False),
)

# Every try of a call that took more than one (or whose failed tries cost something), in order:
# the replica, what it answered, how long it took, the prompt tokens it is assumed to have
# consumed (billed as what resilience cost).
attempts = Table(
    "tollgate_audit_attempts",
    metadata,
    Column("chain_id", String(32), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("backend", String(200), nullable=False),
    Column("upstream_model", String(200), nullable=False),
    Column("tier", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("error_type", String(64)),
    Column("latency_us", BigInteger, nullable=False),
    Column("consumed_tokens", BigInteger),
)

bodies = Table(
    "tollgate_audit_bodies",
    metadata,
    Column("chain_id", String(32), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("part", String(16), primary_key=True),  # request | response
    Column("content", Text, nullable=False),
)

chains = Table(
    "tollgate_audit_chains",
    metadata,
    Column("chain_id", String(32), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("signature", String(64), nullable=False),
)

checkpoints = Table(
    "tollgate_audit_checkpoints",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("chain_id", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("row_hash", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # periodic | prune | shutdown
    Column("created_at", TS, nullable=False),
    Column("signature", String(64), nullable=False),
    Index("ix_tollgate_audit_checkpoints_chain", "chain_id", "seq"),
)

# Events the database rejected (a value it cannot store), kept in full: each is still a link of
# its chain (its hash is chained and signed), so verify reports it as quarantined, not deleted.
quarantine = Table(
    "tollgate_audit_quarantine",
    metadata,
    Column("chain_id", String(32), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("event", Text, nullable=False),  # the canonical event line, as hashed
    Column("bodies", Text),
    Column("prev_hash", String(64), nullable=False),
    Column("row_hash", String(64), nullable=False),
    Column("error", Text, nullable=False),
    Column("quarantined_at", TS, nullable=False),
)

# A known incident (problems `verify` reported), acknowledged with the audit signing key:
# verify still lists what it covers, as acknowledged, and retention may prune past it.
acknowledgements = Table(
    "tollgate_audit_acknowledgements",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("chain_id", String(32), nullable=False),
    Column("first_seq", BigInteger),  # None: problems of the chain as a whole (its head)
    Column("last_seq", BigInteger),
    Column("note", Text, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("signature", String(64), nullable=False),
)
