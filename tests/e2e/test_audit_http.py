"""Audit events for what reaches the gateway over HTTP, as the official SDK sends it, and the
auditor's commands (`tollgate audit verify|export`) run against the result."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from gateway.stores.sql import make_engine
from tests.support.audit import events
from tests.support.servers import GatewayProcess

CONFIG = """
version: 1
server: {reload_poll_seconds: 0, max_body_bytes: 2048}
auth:
  keys: [{name: alice, key_env: TG_ALICE, team: ml, user: alice, org: acme}]
backends:
  sim: {type: sim, time_scale: 0, models: [{name: m, input_price_per_mtok: 1.0}]}
models:
  chat: {backend: sim, model: m}
policies:
  - use: audit_capture
    with: {content: redacted}
audit: {ship_interval_ms: 10}
"""
KEY = "tg-alice-audit-key-0123"


def tollgate(env: dict[str, str], config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", *args, "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def gateway(tmp_path: Path) -> GatewayProcess:
    config = tmp_path / "tollgate.yaml"
    config.write_text(CONFIG)
    env = {"TG_ALICE": KEY, "TOLLGATE_SECRET": "audit-test-secret",
           "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/db/tollgate.db"}  # fmt: skip
    return GatewayProcess(config, env=env)


def test_http_calls_become_events_and_the_cli_verifies_and_exports(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    with gateway as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "write to a@b.io"}], max_tokens=3
        )
        stream = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
        assert [c for c in stream]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gw.url + "/v1", api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=gw.url + "/v1", api_key="wrong", max_retries=0
            ).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="chat", messages=[])
        too_big = httpx.post(
            gw.url + "/v1/chat/completions",
            content=b"{" + b" " * 4096 + b"}",
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert too_big.status_code == 413
        deadline = time.monotonic() + 10
        while httpx.get(gw.url + "/readyz").json()["audit"]["lag_events"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    env = {**gateway.env}
    engine = make_engine(env["TOLLGATE_DATABASE_URL"])
    rows = events(engine)
    engine.dispose()
    # /v1/models is not a call (it spends nothing): 5 events for the 5 calls.
    assert [(r.outcome, r.status, r.stream) for r in rows] == [
        ("served", 200, False),
        ("served", 200, True),
        ("rejected", 401, False),
        ("rejected", 400, False),
        ("rejected", 413, False),
    ]
    assert rows[0].team == "ml" and rows[0].key_name == "alice" and rows[2].key_name == "anonymous"
    # Refused after the key was checked: recorded against that key, not as anonymous.
    assert (rows[3].key_name, rows[4].key_name) == ("alice", "alice")
    assert rows[0].capture == "redacted" and rows[0].cost_nanousd > 0
    assert rows[0].user_agent.startswith("OpenAI/Python")
    verified = tollgate(env, gateway.config, "verify")  # type: ignore[arg-type]
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("OK: 5 events in 1 chain(s)")
    exported = tollgate(env, gateway.config, "export", "--format", "csv", "--since", "1d")  # type: ignore[arg-type]
    assert exported.returncode == 0, exported.stderr
    table = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [t["outcome"] for t in table] == [r.outcome for r in rows]
    assert Decimal(table[0]["cost_usd"]) == Decimal(rows[0].cost_nanousd) / 10**9
    assert "E" not in table[0]["cost_usd"], "plain decimal notation"
    lines = tollgate(env, gateway.config, "export", "--team", "ml").stdout.splitlines()  # type: ignore[arg-type]
    assert len(lines) == 4 and orjson.loads(lines[0])["team"] == "ml"
