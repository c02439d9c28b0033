"""The batched tier (docs/batch.md): uploaded files, batch jobs and each job's lines, so a job
survives a restart and any gateway of a fleet can resume it (one owner at a time, by lease).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tollgate_files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(300), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "tollgate_batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("dialect", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("input_file_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("times", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text()),
        sa.Column("errors", sa.Text()),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("reservation", sa.Text(), nullable=False),
        sa.Column("placement", sa.Text(), nullable=False, server_default=""),
        sa.Column("output_file_id", sa.String(64)),
        sa.Column("error_file_id", sa.String(64)),
        sa.Column("owner", sa.String(64)),
        sa.Column("lease_until", sa.Float(), nullable=False, server_default="0"),
    )
    op.create_index("ix_tollgate_batches_status", "tollgate_batches", ["status"])
    op.create_table(
        "tollgate_batch_lines",
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("line", sa.Integer(), primary_key=True),
        sa.Column("custom_id", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("worst_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("worst_tokens", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(64)),
        sa.Column("result", sa.Text()),
        sa.Column("finished_at", sa.Float()),
    )


def downgrade() -> None:
    op.drop_table("tollgate_batch_lines")
    op.drop_index("ix_tollgate_batches_status", "tollgate_batches")
    op.drop_table("tollgate_batches")
    op.drop_table("tollgate_files")
