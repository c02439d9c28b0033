"""Audit events the database rejected, kept whole and still chained (docs/audit.md,
"Quarantine"); signed acknowledgements of known incidents ("After an incident"); the views'
money as exact decimals ("Views").

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from gateway.audit.views import VIEWS, definitions

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tollgate_audit_quarantine",
        sa.Column("chain_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("bodies", sa.Text()),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "tollgate_audit_acknowledgements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("chain_id", sa.String(32), nullable=False),
        sa.Column("first_seq", sa.BigInteger()),
        sa.Column("last_seq", sa.BigInteger()),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.String(64), nullable=False),
    )
    _views(exact=True)


def _views(exact: bool) -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for sql in definitions(op.get_bind().dialect.name, exact=exact, alerts=False):
        op.execute(sql)


def downgrade() -> None:
    _views(exact=False)
    op.drop_table("tollgate_audit_acknowledgements")
    op.drop_table("tollgate_audit_quarantine")
