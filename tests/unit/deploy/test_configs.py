"""deploy/ stays consistent with what the gateway emits: the Collector config's pipelines are
complete and its connectors read attributes our spans carry; every metric and label the
Grafana dashboard queries is one the gateway (or the Collector, from our spans) produces; the
compose file mounts files that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.telemetry.metrics import (
    COST,
    DURATION,
    FIRST_CHUNK,
    REQUESTS,
    SAVINGS,
    TOKEN_USAGE,
    prom_labels,
    prom_name,
)
from gateway.telemetry.spans import Peer, root_attributes
from tests.support.dockerfile import final_stage
from tests.support.telemetry import sample_record

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def collector() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "otel-collector" / "config.yaml").read_text())


def sample_root_attributes() -> dict[str, Any]:
    return root_attributes(sample_record(), "chat", Peer("openai", "h", 1))


def test_collector_pipelines_are_complete() -> None:
    config = collector()
    pipelines = config["service"]["pipelines"]
    kinds = ("receivers", "processors", "exporters", "connectors")
    declared = {kind: set(config.get(kind) or {}) for kind in kinds}
    connectors = declared["connectors"]
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in declared[kind] | connectors, (name, kind, component)
    for connector in connectors:  # each connects traces to metrics
        assert connector in pipelines["traces"]["exporters"]
        assert connector in pipelines["metrics"]["receivers"]


def test_collector_reads_attributes_our_spans_carry() -> None:
    attrs = sample_root_attributes()
    connectors = collector()["connectors"]
    for dimension in connectors["spanmetrics"]["dimensions"]:
        assert dimension["name"] in attrs, dimension
    for metric in connectors["signaltometrics"]["spans"]:
        for attribute in metric["attributes"]:
            assert attribute["key"] in attrs, attribute
        for expression in [metric["sum"]["value"], *metric["conditions"]]:
            for used in re.findall(r'attributes\["([^"]+)"\]', expression):
                assert used in attrs, used


def emitted_series() -> tuple[set[str], set[str]]:
    """Metric names (with the Prometheus suffixes) and label names the dashboard may use."""
    names: set[str] = set()
    labels = {"le", "span_name", "span_kind", "__name__"}
    for spec in (TOKEN_USAGE, DURATION, FIRST_CHUNK):
        base = prom_name(spec)
        names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        labels |= set(prom_labels(spec))
    for spec in (COST, SAVINGS, REQUESTS):
        names.add(prom_name(spec) + "_total")
        labels |= set(prom_labels(spec))
    for metric in collector()["connectors"]["signaltometrics"]["spans"]:
        names.add(metric["name"].replace(".", "_") + "_total")
        labels |= {a["key"].replace(".", "_") for a in metric["attributes"]}
    names |= {f"traces_span_metrics_duration_seconds_{s}" for s in ("bucket", "sum", "count")}
    names.add("traces_span_metrics_calls_total")
    return names, labels


def test_grafana_dashboard_queries_what_we_emit() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "tollgate-spend.json").read_text())
    names, labels = emitted_series()
    stacks = next(v for v in dashboard["templating"]["list"] if v["name"] == "stack")
    assert {o["value"] for o in stacks["options"]} <= labels
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 14
    for expr in exprs:
        cleaned = re.sub(r'"[^"]*"', '""', expr)  # label values and regexes aside
        for name in re.findall(r"\b((?:tollgate|gen_ai|traces)_[a-z_]+)\b", cleaned):
            if name in labels:
                continue
            assert name in names, (name, expr)
        for regex in re.findall(r'__name__=~"([^"]+)"', expr):
            assert any(re.fullmatch(regex, n) for n in names), (regex, expr)
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                assert label in labels or label == "$stack", (label, expr)
        for label in re.findall(r"[{,]\s*([a-z_]+)\s*=~?", expr):
            assert label in labels, (label, expr)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose" / "docker-compose.yaml").read_text())


def test_compose_mounts_files_that_exist() -> None:
    compose_dir = DEPLOY / "compose"
    declared = set(compose()["volumes"])
    for service in compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (compose_dir / source).resolve().exists(), volume
            elif not source.startswith("/"):  # a named volume
                assert source in declared, volume
    assert (DEPLOY / "Dockerfile").exists()


def test_the_compose_fleet_is_complete_and_starts_in_order() -> None:
    services = compose()["services"]
    fleet = {name for name, s in services.items() if "fleet" in s.get("profiles", ["fleet"])}
    assert {"loadbalancer", "gateway", "migrate", "postgres", "redis", "sim", "otel-collector",
            "prometheus", "grafana"} <= fleet  # fmt: skip
    gateway = services["gateway"]
    assert gateway["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # No fleet starts without the shared secret: compose itself refuses (`:?`).
    assert ":?" in gateway["environment"]["TOLLGATE_SECRET"]
    assert gateway["environment"]["TOLLGATE_CONFIG"] == "/etc/tollgate/tollgate.yaml"
    journal = final_stage()["ENV"]["TOLLGATE_AUDIT_DIR"]  # type: ignore[index]
    assert journal in gateway["volumes"], "each replica's journal survives a restart"
    demo_mounts = {v.split(":")[1] for v in services["tollgate"]["volumes"]}
    assert set(final_stage()["VOLUME"]) <= demo_mounts  # type: ignore[arg-type]


def test_the_compose_load_balancer_checks_readiness_and_never_replays_a_call() -> None:
    text = (DEPLOY / "compose" / "haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in text
    port = final_stage()["ENV"]["TOLLGATE_SERVE_PORT"]  # type: ignore[index]
    assert f"server-template gw 10 gateway:{port}" in text
    (retry,) = [
        line.split()[1:] for line in text.splitlines() if line.strip().startswith("retry-on")
    ]
    assert retry == ["conn-failure"], "a call a gateway received may have been charged"


def test_the_compose_fleet_config_is_valid_with_what_compose_sets() -> None:
    from gateway.config.loader import load_config

    env = {k: v for k, v in compose()["x-gateway-env"].items() if "${" not in v}
    env["TOLLGATE_SECRET"] = "from-the-operator"
    loaded = load_config(DEPLOY / "compose" / "fleet.yaml", env=env)
    assert loaded.config.limits.store == "redis" and loaded.config.cache.store == "redis"
    database = loaded.config.database
    assert 10 * (database.pool_size + database.max_overflow + 1) <= 100


def test_compose_gateway_config_is_valid() -> None:
    from gateway.config.loader import load_config

    env = {"TG_TEAM_A_KEY": "a" * 20, "TG_TEAM_B_KEY": "b" * 20}
    loaded = load_config(DEPLOY / "compose" / "tollgate.yaml", env=env)
    assert loaded.config.telemetry.otlp.protocol == "http/json"
