"""Attribute names the spans set and the metrics label by, written once: a metric's labels are
the span attributes the Collector's spanmetrics would group by, so the two must not drift (the
deploy checks also hold the Collector config and the Grafana dashboard to them).
GenAI names follow the OpenTelemetry semantic conventions; `tollgate.*` are ours."""

from __future__ import annotations

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
STATUS_CODE = "http.response.status_code"
TEAM = "tollgate.team"
TIER = "tollgate.tier"
OUTCOME = "tollgate.outcome"
OPTIMISATION = "tollgate.optimisation"
RULE = "tollgate.rule"
