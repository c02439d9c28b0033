"""What each shadow rule would have saved, by time bucket (docs/policies.md, "Shadow rules"),
for the dashboard's rules panel.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tollgate_shadow_rollups",
        sa.Column("granularity", sa.String(8), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger(), primary_key=True),
        sa.Column("rule", sa.String(100), primary_key=True),
        sa.Column("calls", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("savings_nanousd", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("tollgate_shadow_rollups")
