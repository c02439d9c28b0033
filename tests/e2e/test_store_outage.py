"""Redis dies under a running gateway: `on_store_failure` decides, and nothing crashes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import GatewayProcess
from tests.support.services import PrivateRedis
from tests.support.wait import until

KEY = "tg-outage-key"


def config(upstream: str, redis_url: str, mode: str) -> str:
    return f"""
version: 1
server: {{reload_poll_seconds: 0}}
auth:
  keys: [{{name: alice, key_env: TG_ALICE, team: ml}}]
backends:
  fake: {{type: openai, base_url: "{upstream}/v1"}}
models:
  chat: {{backend: fake, model: fake-chat}}
pricing: [{{backend: fake, input: 1, output: 2}}]
limits:
  store: redis
  redis_url: {redis_url}
  store_timeout_ms: 200
  on_store_failure: {mode}
  prompt_margin: 0
  budgets:
    - {{name: ml-tokens, scope: team, subject: ml, tokens: 100, window: day}}
"""


def call(gw: GatewayProcess) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=10,
    )


def spend(gw: GatewayProcess) -> httpx.Response:
    return httpx.get(
        gw.url + "/admin/spend?group_by=team&window=day",
        headers={"authorization": "Bearer adm"},
        timeout=10,
    )


def _requests(response: httpx.Response) -> int:
    return int(response.json()["total"]["requests"]) if response.status_code == 200 else -1


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_redis_killed_mid_test(
    mode: str, upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    path = tmp_path / "tollgate.yaml"
    with PrivateRedis() as redis_server:
        path.write_text(config(upstream[1], redis_server.url, mode))
        log = tmp_path / "gw.log"
        env = {"TG_ALICE": KEY, "TOLLGATE_ADMIN_KEY": "adm"}
        with GatewayProcess(path, env=env, log=log) as gw:
            assert call(gw).status_code == 200
            redis_server.kill()
            if mode == "closed":
                refused = call(gw)
                assert refused.status_code == 503
                error = refused.json()["error"]
                assert error["code"] == "budget_store_unavailable"
                assert "on_store_failure: closed" in error["message"]
                assert httpx.get(gw.url + "/readyz").status_code == 503
                redis_server.start()  # same port: the gateway reconnects by itself
                until(lambda: call(gw).status_code == 200)
                assert httpx.get(gw.url + "/readyz").status_code == 200
            else:
                # Local limits: the same 100-token budget, counted by this process alone.
                statuses = [call(gw).status_code for _ in range(8)]
                assert statuses[0] == 200 and 429 in statuses, statuses
                assert httpx.get(gw.url + "/readyz").status_code == 200
                assert spend(gw).status_code == 503, "no half-true spend report while down"
                redis_server.start()
                # The spend of calls served during the outage reaches Redis once it is back.
                served = 1 + statuses.count(200)
                until(lambda: _requests(spend(gw)) == served)
            exposition = httpx.get(gw.url + "/metrics").text
            assert "tollgate_budget_store_failures_total" in exposition
            if mode == "open":
                assert "tollgate_budget_store_degraded 1.0" in exposition
                degraded = [
                    line
                    for line in exposition.splitlines()
                    if line.startswith("tollgate_budget_degraded_calls_total ")
                ]
                assert float(degraded[0].split()[1]) >= 1
            assert gw.proc is not None and gw.proc.poll() is None, "the gateway is still up"
        text = log.read_text()
        assert "budget store unreachable" in text
        assert "Traceback" not in text
