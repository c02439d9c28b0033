"""Virtual keys, budgets, change revisions and persisted embedded counters.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tollgate_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(200)),
        sa.Column("team", sa.String(200)),
        sa.Column("org", sa.String(200)),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("models", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_table(
        "tollgate_budgets",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(200)),
        sa.Column("usd_nanos", sa.BigInteger),
        sa.Column("tokens", sa.BigInteger),
        sa.Column("window", sa.String(16), nullable=False),
        sa.Column("enforcement", sa.String(8), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "tollgate_revisions",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.create_table(
        "tollgate_counters",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("counter", sa.BigInteger),
        sa.Column("tally", sa.Text),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tollgate_counters")
    op.drop_table("tollgate_revisions")
    op.drop_table("tollgate_budgets")
    op.drop_table("tollgate_keys")
