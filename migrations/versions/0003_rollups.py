"""Spend rollups fed by the traces: sums per time bucket x team x key x model x tier x cache
outcome, and latency / TTFT histograms per model (docs/telemetry.md).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_SAVINGS = ("exact_cache", "semantic_cache", "tier_routing", "prefix_reuse",
            "provider_prompt_cache", "batch")  # fmt: skip
_SUMS = (
    "requests", "errors", "denied", "cache_hits", "input_tokens", "output_tokens",
    "cached_tokens", "cost_nanousd", "counterfactual_nanousd",
    *(f"savings_{kind}_nanousd" for kind in _SAVINGS),
    "latency_us_sum", "ttft_us_sum", "ttft_count",
)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "tollgate_spend_rollups",
        sa.Column("granularity", sa.String(8), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger(), primary_key=True),
        *(
            sa.Column(name, sa.String(200), primary_key=True)
            for name in ("team", "key_id", "model", "tier", "cache")
        ),
        *(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0") for name in _SUMS),
        sa.Column("key_name", sa.String(200), nullable=False, server_default=""),
    )
    op.create_index(
        "ix_tollgate_spend_rollups_time", "tollgate_spend_rollups", ["granularity", "bucket_start"]
    )
    op.create_table(
        "tollgate_latency_rollups",
        sa.Column("granularity", sa.String(8), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger(), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("metric", sa.String(8), primary_key=True),
        sa.Column("bin", sa.SmallInteger(), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("tollgate_latency_rollups")
    op.drop_index("ix_tollgate_spend_rollups_time", "tollgate_spend_rollups")
    op.drop_table("tollgate_spend_rollups")
