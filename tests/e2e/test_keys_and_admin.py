"""Virtual keys and the admin API through real gateway processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import GatewayProcess
from tests.support.services import postgres_database

ADMIN = "admin-key-for-tests"
REFRESH_S = 0.5


def config(upstream: str) -> str:
    return f"""
version: 1
server: {{reload_poll_seconds: 0}}
backends:
  fake: {{type: openai, base_url: "{upstream}/v1"}}
models:
  chat: {{backend: fake, model: fake-chat}}
  other: {{backend: fake, model: fake-chat}}
pricing:
  - {{backend: fake, input: 1, output: 2}}
keys:
  refresh_seconds: {REFRESH_S}
"""


@contextlib.contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/shared.db"
        return
    with postgres_database() as url:
        yield url


def tollgate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_key_lifecycle_across_a_fleet(
    kind: str, upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(config(upstream[1]))
    with database(kind, tmp_path) as url:
        env = {"TOLLGATE_DATABASE_URL": url, "TOLLGATE_SECRET": "fleet-secret"}
        cfg = ["--config", str(path)]
        if kind == "postgresql":
            refused = tollgate(env, "serve", *cfg, "--port", "1")
            assert refused.returncode == 2 and "tollgate db upgrade" in refused.stderr
            assert tollgate(env, "db", "upgrade", *cfg).returncode == 0
        created = tollgate(
            env, "keys", "create", *cfg, "--name", "ci", "--team", "qa", "--models", "chat"
        )
        assert created.returncode == 0, created.stderr
        secret = created.stdout.split()[0]
        assert secret.startswith("tg-")
        listed = tollgate(env, "keys", "list", *cfg, "--json")
        assert secret not in listed.stdout and '"team": "qa"' in listed.stdout

        with contextlib.ExitStack() as stack:
            fleet = [
                stack.enter_context(GatewayProcess(path, env={**env, "TOLLGATE_ADMIN_KEY": ADMIN}))
                for _ in range(3)
            ]
            for gw in fleet:
                client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
                reply = client.chat.completions.create(
                    model="chat", messages=[{"role": "user", "content": "hi"}]
                )
                assert reply.choices[0].message.content
                with pytest.raises(openai.NotFoundError):  # the key is limited to `chat`
                    client.chat.completions.create(
                        model="other", messages=[{"role": "user", "content": "hi"}]
                    )
            spend = httpx.get(
                fleet[0].url + "/admin/spend?group_by=key",
                headers={"authorization": f"Bearer {ADMIN}"},
            ).json()
            assert spend["rows"][0]["key"] == "ci" and spend["rows"][0]["requests"] >= 1

            assert tollgate(env, "keys", "revoke", *cfg, "ci").returncode == 0
            revoked_at = time.monotonic()
            pending = list(fleet)
            while pending:
                assert time.monotonic() - revoked_at < REFRESH_S + 3, "revocation too slow"
                pending = [gw for gw in pending if _status(gw, secret) != 401]
            error = _post(fleet[1], secret).json()["error"]
            assert error["code"] == "revoked_api_key"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_key_rotation_keeps_the_key_and_ends_the_old_secret(
    kind: str, upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    """Rotated by the CLI (grace 1h: both secrets work) and again by the admin API (grace 2s:
    the previous secret stops when it ends, the one before at once); one key throughout, so
    its spend stays one row."""
    path = tmp_path / "tollgate.yaml"
    path.write_text(config(upstream[1]))
    with database(kind, tmp_path) as url:
        env = {"TOLLGATE_DATABASE_URL": url, "TOLLGATE_SECRET": "fleet-secret"}
        cfg = ["--config", str(path)]
        if kind == "postgresql":
            assert tollgate(env, "db", "upgrade", *cfg).returncode == 0
        made = tollgate(env, "keys", "create", *cfg, "--name", "svc", "--org", "acme",
                        "--tags", "a,b", "--expires", "30d")  # fmt: skip
        first = made.stdout.split()[0]
        with GatewayProcess(path, env={**env, "TOLLGATE_ADMIN_KEY": ADMIN}) as gw:
            assert _status(gw, first) == 200
            rotated = tollgate(env, "keys", "rotate", *cfg, "svc", "--grace", "1h", "--json")
            assert rotated.returncode == 0, rotated.stderr
            shown = json.loads(rotated.stdout)
            second = shown["key"]
            assert second != first and shown["id"].startswith("key_")
            assert shown["previous_expires_at"].endswith("Z")  # ISO 8601
            deadline = time.monotonic() + REFRESH_S + 5
            while _status(gw, second) != 200:
                assert time.monotonic() < deadline, "the new secret never worked"
            assert _status(gw, first) == 200, "the old secret works through its grace period"
            spend = _admin(gw, "GET", "/admin/spend?group_by=key").json()["rows"]
            assert [(r["key"], r["requests"]) for r in spend] == [("svc", 3)]

            reply = _admin(gw, "POST", "/admin/keys/svc/rotate", json={"grace": "2s"})
            assert reply.status_code == 200, reply.text
            third = reply.json()["key"]
            assert _status(gw, third) == 200  # the admin API refreshes its own gateway at once
            assert _status(gw, first) == 401, "only the last secret before a rotation is kept"
            assert _status(gw, second) == 200
            deadline = time.monotonic() + 10
            while _status(gw, second) != 401:
                assert time.monotonic() < deadline, "the grace period never ended"
            assert _post(gw, second).json()["error"]["code"] == "rotated_api_key"
            missing = _admin(gw, "POST", "/admin/keys/nope/rotate", json={"grace": "1h"})
            assert missing.status_code == 404
            bad = _admin(gw, "POST", "/admin/keys/svc/rotate", json={"grace": "soon"})
            assert bad.status_code == 400 and "grace" in bad.json()["error"]["message"]
        listed = tollgate(env, "keys", "list", *cfg)
        header, line = listed.stdout.splitlines()[:2]
        for column in ("ORG", "EXPIRES", "CREATED", "TAGS", "MODELS"):
            assert column in header
        assert "acme" in line and "a,b" in line and "all" in line
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line)


def _post(gw: GatewayProcess, key: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def _status(gw: GatewayProcess, key: str) -> int:
    return _post(gw, key).status_code


@pytest.fixture
def admin_gateway(upstream: tuple[FakeUpstream, str], tmp_path: Path) -> Iterator[GatewayProcess]:
    path = tmp_path / "tollgate.yaml"
    path.write_text(config(upstream[1]))
    with GatewayProcess(path, env={"TOLLGATE_ADMIN_KEY": ADMIN}) as gw:
        yield gw


def _admin(
    gw: GatewayProcess, method: str, path: str, key: str = ADMIN, **kw: Any
) -> httpx.Response:
    return httpx.request(
        method, gw.url + path, headers={"authorization": f"Bearer {key}"}, timeout=10, **kw
    )


def _team_tokens(gw: GatewayProcess, team: str) -> int:
    rows = _admin(gw, "GET", "/admin/spend?group_by=team&window=month").json()["rows"]
    return sum(r["input_tokens"] + r["output_tokens"] for r in rows if r["team"] == team)


def test_admin_api_keys_budgets_and_spend(admin_gateway: GatewayProcess) -> None:
    gw = admin_gateway
    assert _admin(gw, "GET", "/admin/keys", key="wrong").status_code == 401
    bad = _admin(gw, "POST", "/admin/keys", json={"name": "x", "colour": "red"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "colour"
    bad_expiry = _admin(gw, "POST", "/admin/keys", json={"name": "x", "expires": "soon"})
    assert bad_expiry.status_code == 400 and "duration" in bad_expiry.json()["error"]["message"]

    created = _admin(gw, "POST", "/admin/keys", json={"name": "svc", "team": "web"})
    assert created.status_code == 201
    secret = created.json()["key"]
    assert _admin(gw, "POST", "/admin/keys", json={"name": "svc"}).status_code == 409
    assert _status(gw, secret) == 200, "usable at once on the process that created it"
    listed = _admin(gw, "GET", "/admin/keys").json()["data"]
    assert [k["name"] for k in listed] == ["svc"] and "key" not in listed[0]

    put = _admin(
        gw, "PUT", "/admin/budgets/web-day", json={"scope": "team", "subject": "web", "tokens": 20}
    )
    assert put.status_code == 200, put.text
    shown = _admin(gw, "GET", "/admin/budgets/web-day").json()
    # Seeded from the team's spend this window, which may or may not hold the call made a
    # moment ago yet (spend rollups are written off the request path).
    assert shown["usage"]["tokens"] in (0, _team_tokens(gw, "web")) and shown["tokens"] == 20
    assert _status(gw, secret) == 429, "20 tokens cannot cover a call's worst case"
    assert _admin(gw, "DELETE", "/admin/budgets/web-day").status_code == 200
    assert _status(gw, secret) == 200

    spend = _admin(gw, "GET", "/admin/spend?group_by=team&window=month").json()
    assert spend["rows"][0]["team"] == "web" and spend["rows"][0]["requests"] == 2
    assert _admin(gw, "GET", "/admin/spend?window=fortnight").status_code == 400

    assert _admin(gw, "DELETE", "/admin/keys/svc").status_code == 200
    assert _status(gw, secret) == 401


def test_admin_api_is_off_without_an_admin_key(
    upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(config(upstream[1]))
    with GatewayProcess(path, env={"TOLLGATE_ADMIN_KEY": ""}) as gw:
        response = _admin(gw, "GET", "/admin/keys")
        assert response.status_code == 403
        assert "TOLLGATE_ADMIN_KEY" in response.json()["error"]["message"]


def test_expired_key_is_refused(upstream: tuple[FakeUpstream, str], tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(config(upstream[1]))
    with GatewayProcess(path, env={"TOLLGATE_ADMIN_KEY": ADMIN}) as gw:
        created = _admin(
            gw, "POST", "/admin/keys", json={"name": "old", "expires": "2020-01-01T00:00:00Z"}
        )
        response = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {created.json()['key']}"},
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "expired_api_key"
