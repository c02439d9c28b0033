"""The routing layer's record: how many replicas each call tried and what each answered
(docs/routing.md, "What is recorded"), and what failed attempts cost, as a line of the savings
ledger (negative) in the audit log and the spend rollups.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (both databases do it in place; a batch copy would disturb the views).
    op.add_column(
        "tollgate_audit_events",
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"),
    )
    op.add_column(
        "tollgate_audit_events",
        sa.Column(
            "savings_resilience_nanousd", sa.BigInteger(), nullable=False, server_default="0"
        ),
    )
    op.create_table(
        "tollgate_audit_attempts",
        sa.Column("chain_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("backend", sa.String(200), nullable=False),
        sa.Column("upstream_model", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_type", sa.String(64)),
        sa.Column("latency_us", sa.BigInteger(), nullable=False),
        sa.Column("consumed_tokens", sa.BigInteger()),
    )
    op.add_column(
        "tollgate_spend_rollups",
        sa.Column(
            "savings_resilience_nanousd", sa.BigInteger(), nullable=False, server_default="0"
        ),
    )


def downgrade() -> None:
    op.drop_column("tollgate_spend_rollups", "savings_resilience_nanousd")
    op.drop_table("tollgate_audit_attempts")
    op.drop_column("tollgate_audit_events", "savings_resilience_nanousd")
    op.drop_column("tollgate_audit_events", "attempts")
