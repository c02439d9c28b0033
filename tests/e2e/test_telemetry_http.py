"""Telemetry through `tollgate serve` and the official SDK: spans exported by OTLP with the
client's trace as parent, trace context at the upstream, GenAI metrics by OTLP and on
/metrics, rollups at /admin/spend/rollups equal to the audit log, and the dashboard's data
behind its key."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import func, select

from gateway.audit import tables as audit_tables
from gateway.stores.sql import make_engine
from gateway.telemetry.context import parse_traceparent, traceparent
from tests.support.fake_upstream import FakeUpstream
from tests.support.otlp import OtlpReceiver
from tests.support.servers import GatewayProcess, ThreadServer
from tests.support.wait import until

CONFIG = """
version: 1
server: {reload_poll_seconds: 0}
auth:
  keys:
    - {name: alice, key_env: TG_ALICE, team: ml}
    - {name: bob, key_env: TG_BOB, team: web}
backends:
  fake: {type: openai, base_url: "%(upstream)s/v1"}
models:
  chat: {tiers: {fp16: [{backend: fake, model: fake-chat}]}}
pricing:
  - {backend: fake, input: 2.0, output: 8.0}
audit: {ship_interval_ms: 10}
telemetry:
  otlp:
    endpoint: "%(otlp)s"
    headers: {x-collector-token: "${TG_OTLP_TOKEN}"}
    metrics_interval_seconds: 0.2
  rollups: {flush_seconds: 0.2}
"""
KEYS = {"TG_ALICE": "tg-alice-telemetry-0123", "TG_BOB": "tg-bob-telemetry-45678"}
ADMIN = "tg-admin-telemetry-key"
DASHBOARD = "tg-dashboard-read-only"
CLIENT_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CLIENT_SPAN = 0x00F067AA0BA902B7


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[GatewayProcess, FakeUpstream, OtlpReceiver, Path]]:
    fake, receiver = FakeUpstream(), OtlpReceiver()
    with ThreadServer(fake.app) as upstream, ThreadServer(receiver.app) as collector:
        config = tmp_path / "tollgate.yaml"
        config.write_text(CONFIG % {"upstream": upstream.url, "otlp": collector.url})
        db = tmp_path / "tollgate.db"
        env = {**KEYS, "TOLLGATE_ADMIN_KEY": ADMIN, "TOLLGATE_DASHBOARD_KEY": DASHBOARD,
               "TG_OTLP_TOKEN": "s3cret", "TOLLGATE_DATABASE_URL": f"sqlite:///{db}"}  # fmt: skip
        with GatewayProcess(config, env=env) as gw:
            yield gw, fake, receiver, db


def client(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def test_spans_metrics_and_rollups_over_http(
    world: tuple[GatewayProcess, FakeUpstream, OtlpReceiver, Path],
) -> None:
    gw, fake, receiver, db = world
    alice, bob = client(gw, KEYS["TG_ALICE"]), client(gw, KEYS["TG_BOB"])
    header = traceparent(CLIENT_TRACE, CLIENT_SPAN, True)
    alice.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"traceparent": header},
    )
    chunks = list(
        alice.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert chunks
    for _ in range(3):
        bob.chat.completions.create(model="chat", messages=[{"role": "user", "content": "yo"}])

    # The upstream was told the client's trace, with our upstream-call span as parent.
    sent = parse_traceparent(fake.headers[0]["traceparent"])
    assert sent is not None and sent[0] == CLIENT_TRACE and sent[2] is True

    def traced() -> bool:
        with receiver.lock:
            return len({s.attributes.get("tollgate.request_id") for s in receiver.spans}) >= 6

    until(traced, timeout=20)
    with receiver.lock:
        spans = list(receiver.spans)
        assert receiver.headers[0]["x-collector-token"] == "s3cret"
    root = next(s for s in spans if s.trace_id == CLIENT_TRACE and s.parent_span_id == CLIENT_SPAN)
    assert root.name == "chat chat" and root.service == "tollgate"
    assert root.attributes["tollgate.team"] == "ml"
    assert root.attributes["gen_ai.usage.input_tokens"] == 11
    upstream_span = next(s for s in spans if s.span_id == sent[1])
    assert upstream_span.name == "chat fake-chat"
    assert upstream_span.parent_span_id == root.span_id

    def metered() -> bool:
        with receiver.lock:
            points = receiver.metrics.get("tollgate.requests", [])
            return sum(v for _, v in points) == 5

    until(metered, timeout=20)
    with receiver.lock:
        cost = {a["tollgate.team"]: v for a, v in receiver.metrics["tollgate.cost"]}
        usage = receiver.metrics["gen_ai.client.token.usage"]
    assert set(cost) == {"ml", "web"}
    assert {a["gen_ai.token.type"] for a, _ in usage} == {"input", "output"}

    text = httpx.get(gw.url + "/metrics").text
    assert "gen_ai_client_operation_duration_seconds_bucket{" in text
    assert "tollgate_cost_usd_total{" in text and 'tollgate_team="web"' in text

    # Rollups equal the audit log for the same traffic.
    engine = make_engine(f"sqlite:///{db}")

    def audited() -> bool:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(audit_tables.events)).scalar() == 5

    until(audited, timeout=20)
    with engine.connect() as conn:
        e = audit_tables.events
        per_team = dict(
            conn.execute(select(e.c.team, func.sum(e.c.cost_nanousd)).group_by(e.c.team)).all()
        )
    engine.dispose()
    report = httpx.get(
        gw.url + "/admin/spend/rollups",
        params={"group_by": "team", "range": "1h"},
        headers={"authorization": f"Bearer {ADMIN}"},
    ).json()
    rolled = {row["team"]: Decimal(row["cost_usd"]) for row in report["rows"]}
    assert rolled == {team: Decimal(v) / 10**9 for team, v in per_team.items()}
    assert report["total"]["requests"] == 5
    same = httpx.get(
        gw.url + "/admin/spend",
        params={"group_by": "team", "range": "1h"},
        headers={"authorization": f"Bearer {ADMIN}"},
    ).json()
    assert same["rows"] == report["rows"]  # a time range makes /admin/spend read the rollups
    live = httpx.get(gw.url + "/admin/spend", headers={"authorization": f"Bearer {ADMIN}"}).json()
    assert live["window"]["kind"] == "day"  # without one: the budget counters' window
    assert cost["ml"] == pytest.approx(float(rolled["ml"]))


def test_dashboard_data_needs_a_key_once_one_is_set(
    world: tuple[GatewayProcess, FakeUpstream, OtlpReceiver, Path],
) -> None:
    gw = world[0]
    assert httpx.get(gw.url + "/dashboard").status_code == 200  # the page holds no data
    bare = httpx.get(gw.url + "/dashboard/api/summary")
    assert bare.status_code == 401 and "Missing key" in bare.json()["error"]["message"]
    wrong = httpx.get(gw.url + "/dashboard/api/summary", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    for key in (DASHBOARD, ADMIN):
        ok = httpx.get(
            gw.url + "/dashboard/api/summary",
            params={"range": "7d", "stack": "model"},
            headers={"authorization": f"Bearer {key}"},
        )
        assert ok.status_code == 200 and ok.json()["range"]["granularity"] == "hour"
    bad = httpx.get(
        gw.url + "/dashboard/api/summary",
        params={"range": "5y"},
        headers={"authorization": f"Bearer {DASHBOARD}"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "range"
    # The read-only key does not open the admin API.
    denied = httpx.get(
        gw.url + "/admin/spend/rollups", headers={"authorization": f"Bearer {DASHBOARD}"}
    )
    assert denied.status_code == 401
