"""The embedded default for budgets: counters in the process, persisted to its SQLite file, so
a restart does not reset a budget; `tollgate spend` and `budgets show` read the same figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import GatewayProcess

KEY = "tg-embedded-key"


def test_spend_survives_a_restart_and_the_cli_reads_it(
    upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(
        f"""
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
  budgets:
    - {{name: ml-total, scope: team, subject: ml, usd: "0.0001", window: total}}
"""
    )
    env = {"TG_ALICE": KEY, "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"}

    def call(gw: GatewayProcess) -> int:
        return httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 5},
            headers={"authorization": f"Bearer {KEY}"},
        ).status_code  # fmt: skip

    with GatewayProcess(path, env=env) as gw:
        statuses = [call(gw) for _ in range(6)]
    served = statuses.count(200)
    assert served >= 1 and 429 in statuses, statuses
    cost = served * (11 * 1000 + 5 * 2000)  # the fake reports 11 prompt + 5 completion tokens

    cli = subprocess.run(
        [sys.executable, "-m", "gateway", "spend", "--config", str(path), "--group-by", "team",
         "--window", "total", "--json"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert report["rows"][0]["team"] == "ml"
    assert report["rows"][0]["requests"] == served
    assert round(float(report["total"]["usd"]) * 1e9) == cost

    with GatewayProcess(path, env=env) as gw:
        assert call(gw) == 429, "the restarted gateway remembers the budget is spent"
