"""`tollgate policy check` and `policy explain` as ops run them (golden outputs, valid and broken
files), and the same explanation from a running gateway's /admin/policy/explain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_cli_and_reload import run_cli
from tests.support.servers import GatewayProcess

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CONFIG = """\
version: 1
auth:
  keys: [{name: nightly, key_sha256: "%s", team: data, tags: [bulk]}]
admin: {key_env: TG_ADMIN}
backends:
  big: {type: sim, time_scale: 0, models: [{name: big, input_price_per_mtok: 3, output_price_per_mtok: 15}]}
  small: {type: sim, time_scale: 0, models: [{name: small, input_price_per_mtok: 0.5, output_price_per_mtok: 1.5}]}
models:
  chat:
    tiers: {fp16: [{backend: big, model: big}], int4: [{backend: small, model: small}]}
    default_tier: fp16
    fallbacks: [int4]
limits:
  budgets: [{name: team-month, scope: team, subject: "*", usd: 100, window: month}]
policy_files: [rules.yaml]
""" % ("0" * 64)  # noqa: E501
RULES = """\
policies:
  - use: rules
    with:
      rules:
        - name: bulk-to-int4
          match: {model: chat, tags: [bulk]}
          actions: {route: {tier: int4}, max_tokens: {cap: 256}, defer: {max_wait_seconds: 60}}
        - name: everything-stops
          match: {model: chat}
          actions: {labels: {seen: "yes"}}
          stop: true
        - name: unreachable
          match: {model: chat, team: data}
          actions: {route: {tier: fp16}}
        - name: near-budget
          mode: shadow
          match: {budget: {name: team-month, used_at_least: 0.8}}
          actions: {route: {tier: int4}}
"""
BROKEN_SCHEMA = """\
policies:
  - use: rules
    with:
      rules:
        - name: typo
          match: {modle: chat, stream: "yes"}
          actions: {route: {tier: int4}}
"""
BROKEN = """\
policies:
  - use: rules
    with:
      rules:
        - name: no-such-tier
          match: {model: chat}
          actions: {route: {tier: int8}}
        - name: no-such-budget
          match: {budget: {name: ghost, used_at_least: 0.5}}
          actions: {route: {tier: int4}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "broken.yaml").write_text(BROKEN)
    (tmp_path / "broken-schema.yaml").write_text(BROKEN_SCHEMA)
    path = tmp_path / "tollgate.yaml"
    path.write_text(CONFIG)
    return path


def golden(name: str, text: str, tmp: Path) -> None:
    """Compares with tests/golden/NAME (paths made relative to the test's directory)."""
    assert text.replace(str(tmp) + "/", "") == (GOLDEN / name).read_text()


def test_policy_check_reports_warnings_on_a_valid_file(config: Path) -> None:
    result = run_cli("policy", "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    golden("policy-check-valid.txt", result.stderr + result.stdout, config.parent)


def test_policy_check_reports_every_error_at_file_and_line(config: Path) -> None:
    files = [str(config.parent / name) for name in ("broken-schema.yaml", "broken.yaml")]
    result = run_cli("policy", "check", *files, "--config", str(config))
    assert result.returncode == 2
    golden("policy-check-broken.txt", result.stderr, config.parent)


def test_policy_explain_shows_each_rule_each_condition_and_the_plan(config: Path) -> None:
    result = run_cli("policy", "explain", "--config", str(config), "--model", "chat",
                     "--key", "nightly", "--max-tokens", "1000")  # fmt: skip
    assert result.returncode == 0, result.stderr
    golden("policy-explain.txt", result.stdout, config.parent)


def test_the_admin_api_explains_with_the_running_counters(config: Path) -> None:
    with GatewayProcess(config, env={"TG_ADMIN": "tg-admin-key"}) as gw:
        response = httpx.get(
            gw.url + "/admin/policy/explain",
            params=[("model", "chat"), ("team", "data"), ("max_tokens", "10")],
            headers={"authorization": "Bearer tg-admin-key"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        offline = run_cli("policy", "explain", "--config", str(config), "--model", "chat",
                          "--team", "data", "--max-tokens", "10", "--json")  # fmt: skip
        assert body == json.loads(offline.stdout)
        bad = httpx.get(gw.url + "/admin/policy/explain", params={"model": "nope"},
                        headers={"authorization": "Bearer tg-admin-key"})  # fmt: skip
        assert bad.status_code == 400 and "unknown model 'nope'" in bad.text


GUARDED = """\
version: 1
auth: {mode: open}
server: {reload_poll_seconds: 0}
admin: {key_env: TG_ADMIN}
backends:
  big: {type: sim, time_scale: 0, models: [{name: m, input_price_per_mtok: 3, output_price_per_mtok: 15}]}
  small: {type: sim, time_scale: 0, models: [{name: m, fidelity: 0.0, input_price_per_mtok: 0.5, output_price_per_mtok: 1.5}]}
models:
  chat:
    tiers: {fp16: [{backend: big, model: m}], int4: [{backend: small, model: m}]}
    default_tier: fp16
limits:
  budgets: [{name: ops-guard, scope: team, subject: ops, usd: 5, window: month}]
telemetry: {rollups: {flush_seconds: 0.2}}
policies:
  - use: rules
    with:
      rules:
        - name: downgrade
          match: {model: chat, headers: {x-bulk: "1"}}
          actions: {route: {tier: int4}}
          quality_guard: {sample: 1.0, compare: text, min_agreement: 0.9, min_samples: 3,
                          window: 3, budget: ops-guard}
        - name: try-int4
          mode: shadow
          match: {model: chat}
          actions: {route: {tier: int4}}
"""  # noqa: E501


def _ask(gw: GatewayProcess, content: str) -> str:
    """A bulk call (the guarded rule routes it); the tier that served it."""
    body = {"model": "chat", "max_tokens": 6, "messages": [{"role": "user", "content": content}]}
    r = httpx.post(gw.url + "/v1/chat/completions", headers={"x-bulk": "1"}, json=body)
    return r.headers["x-tollgate-tier"]


def test_guard_suspension_and_shadow_savings_reach_the_dashboard_metrics_and_cli(
    tmp_path: Path,
) -> None:
    from tests.support.wait import until

    path = tmp_path / "tollgate.yaml"
    path.write_text(GUARDED)
    admin = {"authorization": "Bearer tg-admin-key"}
    suspended_line = 'tollgate_rule_suspended{rule="downgrade"} '
    with GatewayProcess(path, env={"TG_ADMIN": "tg-admin-key"}) as gw:
        assert [_ask(gw, f"question {i}") for i in range(3)] == ["int4"] * 3

        def suspended() -> bool:
            rules = httpx.get(gw.url + "/admin/policy/rules", headers=admin).json()["rules"]
            return bool(rules[0]["guard"]["suspended"])

        until(suspended)
        assert _ask(gw, "x") == "fp16"  # back on the reference tier
        assert suspended_line + "1.0" in httpx.get(gw.url + "/metrics").text

        def dashboard() -> dict[str, Any]:
            url = gw.url + "/dashboard/api/summary?range=1h"
            data = httpx.get(url, headers=admin).json()
            return {r["rule"]: r for r in data["rules"]}

        until(lambda: (dashboard()["try-int4"]["shadow"] or {}).get("calls", 0) >= 1)
        rules = dashboard()
        assert rules["downgrade"]["guard"]["suspended"] is True
        assert rules["try-int4"]["shadow"]["would_save_usd"] > 0

        env = {"TOLLGATE_ADMIN_KEY": "tg-admin-key"}
        status = run_cli_env(env, "policy", "status", "--url", gw.url)
        assert "downgrade (enforce): guard SUSPENDED, agreement 0.0% over 3 of 3" in status.stdout
        resumed = run_cli_env(env, "policy", "resume", "downgrade", "--url", gw.url)
        assert resumed.stdout.strip() == "downgrade: resumed (was suspended)"
        assert not suspended()
        assert suspended_line + "0.0" in httpx.get(gw.url + "/metrics").text


def run_cli_env(env: dict[str, str], *args: str) -> Any:
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})  # fmt: skip
