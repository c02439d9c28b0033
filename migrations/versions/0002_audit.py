"""The audit log: events (hash-chained), their policy decisions and captured bodies, signed chain
heads and checkpoints, and the views auditors query (docs/audit.md).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SAVINGS = ("exact_cache", "semantic_cache", "tier_routing", "prefix_reuse",
            "provider_prompt_cache", "batch")  # fmt: skip
VIEWS = (
    "tollgate_audit_requests",
    "tollgate_audit_spend_by_team_day",
    "tollgate_audit_denied",
    "tollgate_audit_policy_overrides",
    "tollgate_audit_cache_savings",
)


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
    for sql in view_definitions(op.get_bind().dialect.name):
        op.execute(sql)


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_table("tollgate_audit_checkpoints")
    op.drop_table("tollgate_audit_chains")
    op.drop_table("tollgate_audit_bodies")
    op.drop_table("tollgate_audit_decisions")
    op.drop_table("tollgate_audit_events")


def view_definitions(dialect: str) -> list[str]:
    """Money in USD (nano-dollars / 1e9), durations in ms, days in UTC."""
    if dialect == "postgresql":
        day = "CAST(e.received_at AT TIME ZONE 'UTC' AS DATE)"
    else:
        day = "date(e.received_at)"
    usd = "{} / 1000000000.0"
    savings = ",\n".join(
        f"  {usd.format(f'e.savings_{k}_nanousd')} AS savings_{k}_usd" for k in _SAVINGS
    )
    return [
        f"""CREATE VIEW tollgate_audit_requests AS SELECT
  e.id, e.chain_id, e.seq, e.request_id, e.received_at, e.first_byte_at, e.completed_at,
  e.key_id, e.key_name, e.user_id, e.team, e.org, e.dialect, e.endpoint, e.model, e.stream,
  e.backend, e.tier, e.replica, e.upstream_model, e.outcome, e.status, e.error_type, e.cache,
  e.input_tokens, e.output_tokens, e.cached_tokens, e.cache_write_tokens, e.usage_estimated,
  {usd.format("e.cost_nanousd")} AS cost_usd,
  {usd.format("e.counterfactual_nanousd")} AS counterfactual_usd,
  {usd.format("e.savings_nanousd")} AS savings_usd,
{savings},
  e.latency_us / 1000.0 AS latency_ms, e.ttft_us / 1000.0 AS ttft_ms,
  e.client_ip, e.user_agent, e.prompt_sha256, e.capture
FROM tollgate_audit_events e""",
        f"""CREATE VIEW tollgate_audit_spend_by_team_day AS SELECT
  {day} AS day, e.team,
  COUNT(*) AS requests,
  SUM(e.input_tokens) AS input_tokens, SUM(e.output_tokens) AS output_tokens,
  {usd.format("SUM(e.cost_nanousd)")} AS cost_usd,
  {usd.format("SUM(e.counterfactual_nanousd)")} AS counterfactual_usd,
  {usd.format("SUM(e.savings_nanousd)")} AS savings_usd
FROM tollgate_audit_events e
GROUP BY {day}, e.team""",
        """CREATE VIEW tollgate_audit_denied AS SELECT
  e.id, e.request_id, e.received_at, e.key_id, e.key_name, e.team, e.model, e.endpoint,
  e.outcome, e.status, e.error_type, d.plugin, d.reason
FROM tollgate_audit_events e
LEFT JOIN tollgate_audit_decisions d
  ON d.chain_id = e.chain_id AND d.seq = e.seq AND d.action = 'deny' AND d.enforced
WHERE e.outcome IN ('denied', 'rejected')""",
        """CREATE VIEW tollgate_audit_policy_overrides AS SELECT
  e.id, e.request_id, e.received_at, e.key_id, e.key_name, e.team, e.model,
  d.position, d.plugin, d.action, d.reason, d.enforced, e.outcome, e.backend, e.tier
FROM tollgate_audit_decisions d
JOIN tollgate_audit_events e ON e.chain_id = d.chain_id AND e.seq = d.seq
WHERE d.action <> 'deny' OR NOT d.enforced""",
        f"""CREATE VIEW tollgate_audit_cache_savings AS SELECT
  {day} AS day,
  COUNT(*) AS requests,
  SUM(CASE WHEN e.cache IN ('exact', 'semantic') THEN 1 ELSE 0 END) AS cache_hits,
  SUM(e.cached_tokens) AS cached_prompt_tokens,
  {usd.format("SUM(e.savings_exact_cache_nanousd)")} AS exact_cache_usd,
  {usd.format("SUM(e.savings_semantic_cache_nanousd)")} AS semantic_cache_usd,
  {usd.format("SUM(e.savings_prefix_reuse_nanousd)")} AS prefix_reuse_usd,
  {usd.format("SUM(e.savings_provider_prompt_cache_nanousd)")} AS provider_prompt_cache_usd,
  {
            usd.format(
                "SUM(e.savings_exact_cache_nanousd + e.savings_semantic_cache_nanousd"
                " + e.savings_prefix_reuse_nanousd + e.savings_provider_prompt_cache_nanousd)"
            )
        } AS cache_savings_usd
FROM tollgate_audit_events e
GROUP BY {day}""",
    ]
