"""The audit log: events (hash-chained), their policy decisions and captured bodies, signed chain
heads and checkpoints, and the views auditors query (docs/audit.md).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from gateway.audit.views import VIEWS, definitions

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SAVINGS = ("exact_cache", "semantic_cache", "tier_routing", "prefix_reuse",
            "provider_prompt_cache", "batch")  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "tollgate_audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("chain_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_byte_at", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(64)),
        sa.Column("key_name", sa.String(200)),
        sa.Column("user_id", sa.String(200)),
        sa.Column("team", sa.String(200)),
        sa.Column("org", sa.String(200)),
        sa.Column("tags", sa.JSON()),
        sa.Column("dialect", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("backend", sa.String(200)),
        sa.Column("tier", sa.String(64)),
        sa.Column("replica", sa.String(200)),
        sa.Column("upstream_model", sa.String(200)),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_type", sa.String(64)),
        sa.Column("cache", sa.String(16), nullable=False),
        sa.Column("input_tokens", sa.BigInteger()),
        sa.Column("output_tokens", sa.BigInteger()),
        sa.Column("cached_tokens", sa.BigInteger()),
        sa.Column("cache_write_tokens", sa.BigInteger()),
        sa.Column("usage_estimated", sa.Boolean()),
        sa.Column("cost_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("counterfactual_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("savings_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("savings_exact_cache_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("savings_semantic_cache_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("savings_tier_routing_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("savings_prefix_reuse_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("savings_provider_prompt_cache_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("savings_batch_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("latency_us", sa.BigInteger(), nullable=False),
        sa.Column("ttft_us", sa.BigInteger()),
        sa.Column("client_ip", sa.String(64)),
        sa.Column("user_agent", sa.Text()),
        sa.Column("prompt_sha256", sa.String(64)),
        sa.Column("capture", sa.String(16), nullable=False),
        sa.Column("request_sha256", sa.String(64)),
        sa.Column("response_sha256", sa.String(64)),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("chain_id", "seq", name="uq_tollgate_audit_events_chain_seq"),
    )
    op.create_index("ix_tollgate_audit_events_request_id", "tollgate_audit_events", ["request_id"])
    op.create_index(
        "ix_tollgate_audit_events_received_at", "tollgate_audit_events", ["received_at"]
    )
    op.create_table(
        "tollgate_audit_decisions",
        sa.Column("chain_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("plugin", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("enforced", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "tollgate_audit_bodies",
        sa.Column("chain_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("part", sa.String(16), primary_key=True),
        sa.Column("content", sa.Text(), nullable=False),
    )
    op.create_table(
        "tollgate_audit_chains",
        sa.Column("chain_id", sa.String(32), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
    )
    op.create_table(
        "tollgate_audit_checkpoints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("chain_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
    )
    op.create_index(
        "ix_tollgate_audit_checkpoints_chain", "tollgate_audit_checkpoints", ["chain_id", "seq"]
    )
    for sql in definitions(op.get_bind().dialect.name, exact=False, alerts=False):
        op.execute(sql)


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_table("tollgate_audit_checkpoints")
    op.drop_table("tollgate_audit_chains")
    op.drop_table("tollgate_audit_bodies")
    op.drop_table("tollgate_audit_decisions")
    op.drop_table("tollgate_audit_events")
