"""The auditor's SQL views (docs/audit.md, "Views"), for SQLite and PostgreSQL.

Money reads as exact decimals: PostgreSQL `numeric(24,9)` (not an unconstrained numeric
printed with twenty trailing zeros); SQLite, which has no decimal type, as text built from the
integer nano-dollars (`0.000054075`, not `5.4075e-05`). Compute on the `*_nanousd` integer
columns of tollgate_audit_events; read the views.
"""

from __future__ import annotations

from gateway.call import OPTIMISATIONS

VIEWS = (
    "tollgate_audit_requests",
    "tollgate_audit_spend_by_team_day",
    "tollgate_audit_denied",
    "tollgate_audit_policy_overrides",
    "tollgate_audit_cache_savings",
)
ALERTS_VIEW = "tollgate_audit_alerts"  # from 0007: budget alerts, apart from calls


def money(dialect: str) -> str:
    """A SQL template (`{}`: an integer nano-dollar expression) giving exact USD."""
    if dialect == "postgresql":
        return "CAST(CAST({} AS NUMERIC(30, 0)) / 1000000000 AS NUMERIC(24, 9))"
    return (
        "(CASE WHEN ({0}) < 0 THEN '-' ELSE '' END"
        " || printf('%d.%09d', abs({0}) / 1000000000, abs({0}) % 1000000000))"
    )


def definitions(dialect: str, exact: bool = True, alerts: bool = True) -> list[str]:
    """Money in USD, durations in ms, days in UTC. `exact`: money as exact decimals (0004);
    otherwise as float division (0002, kept for its downgrade). `alerts` (0007): the audit log
    also holds budget alert events, which the per-day counts leave out and a view of their
    own lists."""
    if dialect == "postgresql":
        day = "CAST(e.received_at AT TIME ZONE 'UTC' AS DATE)"
    else:
        day = "date(e.received_at)"
    usd = money(dialect) if exact else "{} / 1000000000.0"
    savings = ",\n".join(
        f"  {usd.format(f'e.savings_{k}_nanousd')} AS savings_{k}_usd" for k in OPTIMISATIONS
    )
    calls_only = "\nWHERE e.outcome <> 'alert'" if alerts else ""
    views = [
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
FROM tollgate_audit_events e{calls_only}
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
FROM tollgate_audit_events e{calls_only}
GROUP BY {day}""",
    ]
    if alerts:
        views.append(f"""CREATE VIEW {ALERTS_VIEW} AS SELECT
  e.id, e.request_id, e.received_at, e.model AS budget, e.key_name AS subject, e.team, e.org,
  e.user_id, e.status, e.error_type, d.reason
FROM tollgate_audit_events e
LEFT JOIN tollgate_audit_decisions d
  ON d.chain_id = e.chain_id AND d.seq = e.seq AND d.action = 'note' AND d.position = 0
WHERE e.outcome = 'alert'""")
    return views
