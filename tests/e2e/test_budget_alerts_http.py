"""Budget alerts through a served gateway: a team's spend passes its budget's thresholds, each
fires once to a local webhook receiver (JSON and Slack-shaped), and the audit database lists
the alerts apart from the calls; `audit verify` still holds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.stores.sql import make_engine
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import GatewayProcess, ThreadServer

KEY = "tg-alerts-test-key"


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.app = Starlette(routes=[Route("/{hook}", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        self.received.append((request.path_params["hook"], await request.json()))
        return Response("ok")


def test_thresholds_fire_once_to_webhooks_and_land_in_the_audit_log(
    upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    receiver = Receiver()
    with ThreadServer(receiver.app) as hooks:
        config = tmp_path / "tollgate.yaml"
        config.write_text(f"""
version: 1
server: {{reload_poll_seconds: 0}}
auth:
  keys: [{{name: alice, key_env: TG_ALICE, team: ml}}]
backends:
  fake: {{type: openai, base_url: "{upstream[1]}/v1"}}
models:
  chat: {{backend: fake, model: fake-chat}}
pricing: [{{backend: fake, input: 1, output: 2}}]
limits:
  prompt_margin: 0
  prompt_overhead_tokens: 0
  budgets:
    - {{name: ml-month, scope: team, subject: ml, usd: "0.0001", window: total,
       alert_at: [50, 80]}}
  alerts:
    webhooks:
      - {{name: finance, url: "{hooks.url}/json"}}
      - {{name: ops, url_env: TG_SLACK_HOOK, format: slack}}
""")
        env = {"TG_ALICE": KEY, "TG_SLACK_HOOK": f"{hooks.url}/slack",
               "TOLLGATE_SECRET": "alerts-test-secret",
               "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/db/tollgate.db"}  # fmt: skip
        with GatewayProcess(config, env=env) as gw:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
            served = 0
            for _ in range(8):  # 21,000 nano-dollars a call against a 100,000 budget
                try:
                    client.chat.completions.create(
                        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=5
                    )
                    served += 1
                except openai.RateLimitError:
                    pass
            client.close()
            deadline = time.monotonic() + 15
            while (
                len(receiver.received) < 4
                or httpx.get(gw.url + "/readyz").json()["audit"]["lag_events"]
            ):
                assert time.monotonic() < deadline, receiver.received
                time.sleep(0.05)
    assert served == 4
    hooks_hit = sorted(hook for hook, _ in receiver.received)
    assert hooks_hit == ["json", "json", "slack", "slack"], "each threshold once per webhook"
    thresholds = sorted(b["threshold_percent"] for h, b in receiver.received if h == "json")
    assert thresholds == [50, 80]
    assert any("passed 80%" in b["text"] for h, b in receiver.received if h == "slack")
    engine = make_engine(env["TOLLGATE_DATABASE_URL"])
    with engine.connect() as conn:
        alerts = conn.execute(
            text(
                "SELECT budget, subject, team, status, reason FROM tollgate_audit_alerts"
                " ORDER BY received_at"
            )
        ).all()
        per_day = conn.execute(
            text("SELECT SUM(requests) FROM tollgate_audit_spend_by_team_day")
        ).scalar()
    engine.dispose()
    assert [(a.budget, a.subject, a.team, a.status) for a in alerts] == [
        ("ml-month", "team ml", "ml", 200), ("ml-month", "team ml", "ml", 200)
    ]  # fmt: skip
    assert "passed 50%" in alerts[0].reason and "passed 80%" in alerts[1].reason
    assert per_day == 8, "the per-day view counts calls (4 served, 4 refused), not alerts"
    verified = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--config", str(config)],
        env={**gw.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stderr
