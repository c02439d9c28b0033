"""Key rotation (a key's previous secret, valid until its grace period ends) and budget alerts
(each threshold fires once per budget, subject and window, whichever gateway sees it first; the
audit log records each as an event, which the per-day views leave out and
tollgate_audit_alerts lists).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from gateway.audit.views import ALERTS_VIEW, VIEWS, definitions

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tollgate_keys") as batch:
        batch.add_column(sa.Column("previous_hash", sa.String(64)))
        batch.add_column(sa.Column("previous_prefix", sa.String(16)))
        batch.add_column(sa.Column("previous_expires_at", sa.Float()))
        batch.add_column(sa.Column("rotated_at", sa.Float()))
    op.create_table(
        "tollgate_budget_alerts",
        sa.Column("budget", sa.String(200), primary_key=True),
        sa.Column("subject", sa.String(300), primary_key=True),
        sa.Column("window_tag", sa.String(40), primary_key=True),
        sa.Column("threshold", sa.Integer(), primary_key=True),  # percent
        sa.Column("fired_at", sa.Float(), nullable=False),
        sa.Column("used_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("limit_nanousd", sa.BigInteger(), nullable=False),
    )
    _views(alerts=True)


def _views(alerts: bool) -> None:
    for view in (ALERTS_VIEW, *reversed(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for sql in definitions(op.get_bind().dialect.name, exact=True, alerts=alerts):
        op.execute(sql)


def downgrade() -> None:
    _views(alerts=False)
    op.drop_table("tollgate_budget_alerts")
    with op.batch_alter_table("tollgate_keys") as batch:
        batch.drop_column("rotated_at")
        batch.drop_column("previous_expires_at")
        batch.drop_column("previous_prefix")
        batch.drop_column("previous_hash")
