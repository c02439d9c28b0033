"""`tollgate policy check` and `policy explain` as ops run them (golden outputs, valid and broken
files), and the same explanation from a running gateway's /admin/policy/explain."""

from __future__ import annotations

import json
from pathlib import Path

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
          actions: {route: {tier: int4}, max_tokens: {cap: 256}}
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
