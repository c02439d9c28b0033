"""Broken config files must be reported as file:line:col, the key path and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import load_config
from gateway.errors import ConfigError

VALID = """\
version: 1
backends:
  up:
    type: openai
    base_url: http://127.0.0.1:9/v1
models:
  chat:
    backend: up
    model: m
    owned_by: platform
pricing: [{backend: up, input: 0.5, output: 1.5}]
"""


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "tollgate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return [p.replace(str(tmp_path) + "/", "") for p in info.value.problems]


def test_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(VALID)
    loaded = load_config(path, env={})
    assert loaded.config.models["chat"].resolved_tiers()["default"].replicas[0].backend == "up"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            VALID.replace("    type: openai", "    type: openai\n    colour: red"),
            "tollgate.yaml:5:5: backends.up.colour: unknown key (not allowed here)",
        ),
        (
            VALID + "server:\n  max_body_bytes: '5'\n",
            "tollgate.yaml:13:19: server.max_body_bytes: Input should be a valid integer",
        ),
        (
            VALID.replace("    model: m\n", ""),
            "tollgate.yaml:8:5: models.chat: Value error, the short form needs both backend and "
            "model",
        ),
        (
            VALID.replace("backend: up", "backend: nowhere"),
            "tollgate.yaml:8:14: models.chat.backend: unknown backend 'nowhere' (backends: up)",
        ),
        (
            VALID.replace("http://127.0.0.1:9/v1", "ftp://x"),
            "tollgate.yaml:5:15: backends.up.base_url: Value error, must start with http:// or "
            "https://",
        ),
        (VALID + "models:\n  again: {}\n", "tollgate.yaml:12:1: duplicate key 'models'"),
        ("version: 1\nbackends: [1\n", "tollgate.yaml:3:1: invalid YAML"),
        (
            VALID.replace("    base_url:", "    api_key_env: NOPE_KEY\n    base_url:"),
            "tollgate.yaml:5:18: backends.up.api_key_env: environment variable NOPE_KEY is not set",
        ),
        (
            VALID.replace("http://127.0.0.1:9/v1", "${UPSTREAM_URL}"),
            "tollgate.yaml:5:15: environment variable UPSTREAM_URL is not set",
        ),
        (
            VALID + "policies:\n  - use: no_such_plugin\n",
            "tollgate.yaml:13:10: policies[0].use: unknown policy plugin 'no_such_plugin'",
        ),
        (
            VALID + "policies:\n  - use: max_tokens\n    with: {limit: 10, colour: 1}\n",
            "tollgate.yaml:14:23: policies[0].with.colour: unknown key (not allowed here)",
        ),
        (
            VALID + "policies:\n  - use: max_tokens\n    with:\n      limit: zero\n",
            "tollgate.yaml:15:14: policies[0].with.limit: Input should be a valid integer",
        ),
        (
            VALID + "auth:\n  mode: open\n",
            "tollgate.yaml:13:9: auth.mode: 'open' is only allowed when every backend is simulated",
        ),
        (
            VALID + "auth:\n  keys:\n    - name: k\n",
            "tollgate.yaml:14:7: auth.keys[0]: Value error, set exactly one of key_env or "
            "key_sha256",
        ),
    ],
)
def test_broken_file_reports_where_and_why(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        VALID.replace("backend: up", "backend: a")
        + "auth:\n  keys:\n    - {name: k, key_env: K1}\n"
    )
    found = problems(tmp_path, text)
    assert [p.split(": ")[1] for p in found] == [
        "models.chat.backend",
        "pricing[0].backend",
        "auth.keys[0].key_env",
    ]


def test_schema_errors_do_not_hide_the_later_checks(tmp_path: Path) -> None:
    """A typo in one section is reported, set aside, and the rest is still checked: later
    references, prices and policy options, each at its own line."""
    text = """\
version: 1
backends:
  up: {type: openai, base_url: "http://127.0.0.1:9/v1"}
  broken: {type: openai, base_url: nope}
models:
  chat: {backend: up, model: m}
  bad: {tiers: {}}
  embed: {backend: ghost, model: e}
  uses-broken: {backend: broken, model: m}
pricing: [{backend: '*', input: 0.5, output: 1.5}]
server: {max_body_bytes: lots}
policies:
  - use: max_tokens
    with: {limit: 0}
  - use: no_such_plugin
"""
    found = problems(tmp_path, text)
    assert [p.split(": ")[0:2] for p in found] == [
        ["tollgate.yaml:11:26", "server.max_body_bytes"],
        ["tollgate.yaml:4:36", "backends.broken.base_url"],
        ["tollgate.yaml:7:8", "models.bad"],
        ["tollgate.yaml:14:19", "policies[0].with.limit"],
        ["tollgate.yaml:15:10", "policies[1].use"],
        ["tollgate.yaml:8:20", "models.embed.backend"],
    ], found


def test_a_reference_to_an_invalid_backend_is_not_reported_twice(tmp_path: Path) -> None:
    found = problems(tmp_path, VALID.replace("base_url: http://127.0.0.1:9/v1", "base_url: 9"))
    assert len(found) == 1 and "backends.up.openai.base_url" not in found[0]
    assert found[0].startswith("tollgate.yaml:5:15: backends.up.base_url:"), found


@pytest.mark.parametrize("text", ["", "version: 1\n", "version: 1\nmodels: {}\n"])
def test_a_config_that_serves_nothing_is_an_error(tmp_path: Path, text: str) -> None:
    (found,) = problems(tmp_path, text)
    assert "models: no model alias is defined" in found


def test_a_price_for_a_backend_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    text = VALID + "  - {backend: upp, input: 1, output: 2}\n"
    text = text.replace(
        "pricing: [{backend: up, input: 0.5, output: 1.5}]",
        "pricing:\n  - {backend: up, input: 0.5, output: 1.5}",
    )
    (found,) = problems(tmp_path, text)
    assert found.startswith("tollgate.yaml:13:15: pricing[1].backend: unknown backend 'upp'")


def test_duplicate_names_say_where_the_first_one_is(tmp_path: Path) -> None:
    text = VALID + "auth:\n  keys:\n    - {name: k, key_sha256: " + "a" * 64 + "}\n"
    text += "    - {name: k, key_sha256: " + "b" * 64 + "}\n"
    (found,) = problems(tmp_path, text)
    assert (
        found
        == "tollgate.yaml:15:14: auth.keys[1].name: 'k' is already defined at tollgate.yaml:14:14"
    )


def test_without_the_environment_secrets_are_not_required(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(
        VALID.replace("    base_url:", "    api_key_env: UPSTREAM_KEY\n    base_url:")
        + "auth:\n  keys:\n    - {name: k, key_env: K1}\n"
    )
    with pytest.raises(ConfigError):
        load_config(path, env={})
    assert load_config(path, env={}, check_env=False).config.auth.keys[0].name == "k"


def test_env_interpolation_is_typed_and_defaulted(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(
        VALID.replace("http://127.0.0.1:9/v1", "${URL:-http://127.0.0.1:7/v1}")
        + "server:\n  max_body_bytes: ${LIMIT}\n  reload_poll_seconds: 0\n"
    )
    loaded = load_config(path, env={"LIMIT": "4096"})
    assert loaded.config.server.max_body_bytes == 4096
    assert loaded.config.backends["up"].base_url == "http://127.0.0.1:7/v1"  # type: ignore[union-attr]


def test_policy_files_are_loaded_in_order_and_checked(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "10-cap.yaml").write_text(
        "policies:\n  - use: max_tokens\n    with: {limit: 100}\n"
    )
    (tmp_path / "policies" / "20-bad.yaml").write_text(
        "policies:\n  - use: max_tokens\n    with: {limit: -1}\n"
    )
    text = VALID + "policy_files: [policies/*.yaml]\n"
    found = problems(tmp_path, text)
    assert found == [
        "policies/20-bad.yaml:3:19: policies[0].with.limit: Input should be greater than or "
        "equal to 1"
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", env={})


def test_shipped_configs_are_valid(tmp_path: Path) -> None:
    """The embedded default, and every example policy file loaded with it (the examples route
    to its fp16 and int4 tiers and read the example budgets)."""
    from gateway.settings import Settings

    root = Path(__file__).resolve().parents[3]
    embedded = Settings().resolved_config_path()
    load_config(embedded, env={})
    probe = tmp_path / "tollgate.yaml"
    probe.write_text(Path(embedded).read_text() + f"policy_files: ['{root}/policies/*.yaml']\n")
    loaded = load_config(probe, env={})
    assert {p.label for p in loaded.policies} >= {"max_tokens", "budgets", "rules"}
    assert loaded.config.limits.budgets and loaded.config.limits.rate_limits


def test_policy_files_add_budgets_and_rate_limits(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "10-a.yaml").write_text(
        "budgets:\n  - {name: team-a, scope: team, subject: a, usd: 5}\n"
        "rate_limits:\n  - {name: rpm, scope: key, subject: '*', rpm: 10}\n"
    )
    path = tmp_path / "tollgate.yaml"
    path.write_text(
        VALID
        + "policy_files: [policies/*.yaml]\n"
        + "limits:\n  budgets:\n    - {name: main, scope: global, tokens: 9}\n"
    )
    limits = load_config(path, env={}).config.limits
    assert [b.name for b in limits.budgets] == ["main", "team-a"]
    assert [r.name for r in limits.rate_limits] == ["rpm"]


def test_policy_file_limits_are_checked_where_they_are_written(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "10-a.yaml").write_text(
        "budgets:\n  - {name: main, scope: global, tokens: 1}\n"
        "rate_limits:\n  - {name: r, scope: model, subject: nope, rpm: 1}\n"
    )
    text = (
        VALID
        + "policy_files: [policies/*.yaml]\n"
        + "limits:\n  budgets:\n    - {name: main, scope: global, tokens: 9}\n"
    )
    assert problems(tmp_path, text) == [
        "policies/10-a.yaml:2:12: budgets[0].name: 'main' is already defined at "
        "tollgate.yaml:15:14",
        "policies/10-a.yaml:4:38: rate_limits[0].subject: unknown model 'nope'",
    ]


def test_keepalive_knobs_that_never_did_anything_are_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    text = VALID.replace(
        "    base_url: http://127.0.0.1:9/v1",
        "    base_url: http://127.0.0.1:9/v1\n    limits: {max_keepalive: 8}",
    )
    (found,) = problems(tmp_path, text)
    assert "backends.up.limits" in found and "never applied" in found


@pytest.mark.parametrize(
    ("extra", "env", "shares"),
    [
        ("", {"TOLLGATE_DATABASE_URL": "postgresql+psycopg://db/tollgate"}, "its database"),
        ("database: {url: 'postgresql+psycopg://db/tollgate'}\n", {}, "its database"),
        ("limits: {store: redis}\n", {}, "budget counters in Redis"),
        ("cache: {store: redis}\n", {}, "the response cache in Redis"),
    ],
)
def test_a_fleet_member_needs_the_shared_secret(
    tmp_path: Path, extra: str, env: dict[str, str], shares: str
) -> None:
    (found,) = problems(tmp_path, VALID + extra, env)
    assert found.startswith("tollgate.yaml:")
    assert "keys.secret_env: environment variable TOLLGATE_SECRET is not set" in found
    assert shares in found
    path = tmp_path / "tollgate.yaml"
    load_config(path, env={**env, "TOLLGATE_SECRET": "shared"})
    load_config(path, env=env, check_env=False)  # admin commands check it where they need it


def test_a_lone_gateway_generates_its_own_secret_and_a_named_signing_key_must_be_set(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(VALID)
    load_config(path, env={})
    (found,) = problems(tmp_path, VALID + "audit: {signing_key_env: TG_AUDIT_KEY}\n")
    assert "audit.signing_key_env: environment variable TG_AUDIT_KEY is not set" in found


def test_yaml_merge_keys_bring_an_anchor_in_and_written_keys_win(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(VALID.replace("""backends:
  up:
    type: openai
    base_url: http://127.0.0.1:9/v1
""", """backends:
  up: &up
    type: openai
    base_url: http://127.0.0.1:9/v1
    headers: {x-team: a}
  down:
    <<: *up
    base_url: http://127.0.0.1:10/v1
"""))  # fmt: skip
    backends = load_config(path, env={}).config.backends
    assert str(backends["down"].base_url) == "http://127.0.0.1:10/v1"  # type: ignore[union-attr]
    assert backends["down"].headers == {"x-team": "a"}  # type: ignore[union-attr]
    (found,) = problems(tmp_path, VALID + "server:\n  <<: 5\n")
    assert found.startswith("tollgate.yaml:") and "`<<` merges mappings only" in found


def test_the_database_pool_is_sized_by_the_config(tmp_path: Path) -> None:
    """The connection budget in docs/deploy.md holds only if the pool obeys database.*."""
    from gateway.config.accounting_schema import DatabaseConfig
    from gateway.services import prepare_database

    sizes = DatabaseConfig(pool_size=3, max_overflow=2)
    engine = prepare_database(f"sqlite:///{tmp_path}/t.db", True, sizes)
    try:
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
        assert engine.pool._max_overflow == 2  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_budget_alerts_name_webhooks_that_exist_and_need_one(tmp_path: Path) -> None:
    text = (
        VALID
        + """limits:
  budgets:
    - {name: b1, scope: team, subject: ml, usd: 5, alert_at: [80, 50], notify: [pager]}
  alerts:
    webhooks: [{name: finance, url_env: TG_HOOK}]
"""
    )
    found = problems(tmp_path, text)
    assert any("notify: unknown webhook 'pager' (limits.alerts.webhooks: finance)" in p
               for p in found), found  # fmt: skip
    assert any("url_env: environment variable TG_HOOK is not set" in p for p in found), found
    budget_line = "limits:\n  budgets:\n    - {name: b2, scope: team, subject: ml, usd: 5, "
    lonely = VALID + budget_line + "alert_at: [90]}\n"
    assert any(
        "alert_at: alert thresholds need a receiver" in p for p in problems(tmp_path, lonely)
    )
    bad = VALID + budget_line + "alert_at: [0]}\n"
    assert any("percentage from 1 to 1000" in p for p in problems(tmp_path, bad))
    fixed = tmp_path / "ok.yaml"
    fixed.write_text(text.replace(", notify: [pager]", ""))
    ok = load_config(fixed, env={"TG_HOOK": "http://127.0.0.1:9/hook"})
    budget = ok.config.limits.budgets[0]
    assert budget.alert_at == (50, 80) and budget.rule("yaml").alert_at == (50, 80)
