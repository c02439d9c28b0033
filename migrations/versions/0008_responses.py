"""The Responses API's stored responses: each response a key created with `store` on, its input
items and the conversation a `previous_response_id` continues, kept per key until its
retention ends (docs/responses.md).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tollgate_responses",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("input_items", sa.Text(), nullable=False),
        sa.Column("conversation", sa.Text(), nullable=False),
    )
    op.create_index("ix_tollgate_responses_expires_at", "tollgate_responses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_tollgate_responses_expires_at", "tollgate_responses")
    op.drop_table("tollgate_responses")
