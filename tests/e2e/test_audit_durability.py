"""The audit log loses nothing: not when the gateway is killed with SIGKILL under load, not
when the database goes away under load (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from gateway.stores.migrate import upgrade
from gateway.stores.sql import make_engine
from tests.support.audit import events, signer
from tests.support.load import Load, prompt_hash
from tests.support.servers import GatewayProcess
from tests.support.services import postgres_database
from tests.support.tcp_proxy import TcpProxy
from tests.support.wait import until

CONFIG = """
version: 1
server: {reload_poll_seconds: 0}
logging: {requests: false}
auth: {mode: open}
backends:
  sim: {type: sim, time_scale: 0, models: [{name: m}]}
models:
  chat: {backend: sim, model: m}
audit: {ship_interval_ms: 20, signing_key_env: TG_AUDIT_KEY}
"""
KEY = {"TG_AUDIT_KEY": "test-audit-signing-key"}


def audit_status(gw: GatewayProcess) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(gw.url + "/readyz", timeout=5).json()["audit"]
    return status


def drained(gw: GatewayProcess) -> bool:
    status = audit_status(gw)
    return bool(status["lag_events"] == 0 and status["database"] == "ok")


@contextlib.contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/audit.db"
        return
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


def checked_events(engine: Engine) -> list[Any]:
    rows = events(engine)
    assert len({r.request_id for r in rows}) == len(rows), "no event twice"
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1)), "in order, no gaps"
    from gateway.audit.verify import verify

    report = verify(engine, signer())
    assert report.ok, [p.describe() for p in report.problems]
    return rows


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kill_9_under_load_loses_no_event(kind: str, tmp_path: Path) -> None:
    config = tmp_path / "tollgate.yaml"
    config.write_text(CONFIG)
    with database(kind, tmp_path) as url:
        env = {**KEY, "TOLLGATE_DATABASE_URL": url, "TOLLGATE_AUDIT_DIR": str(tmp_path / "j")}
        first = GatewayProcess(config, env=env).start()
        with Load(lambda: first.url) as load:
            until(lambda: load.count() >= 300, timeout=30)
            assert first.proc is not None
            first.proc.kill()  # SIGKILL: no shutdown, no drain
            first.proc.wait(10)
        in_flight = load.failed
        with GatewayProcess(config, env=env) as second:
            until(lambda: drained(second), timeout=30)
            engine = make_engine(url)
            rows = checked_events(engine)
            engine.dispose()
    recorded = {r.prompt_sha256 for r in rows}
    by_hash = {prompt_hash(n): n for n in load.received | in_flight}
    assert recorded <= set(by_hash), "every event is one of the load's requests"
    numbers = {by_hash[h] for h in recorded}
    assert load.received <= numbers, "every response the client got has its event"
    extra = numbers - load.received
    # Journaled, then killed before the response left: only calls the client saw fail.
    assert extra <= in_flight and len(extra) <= 8
    assert len(rows) == len(load.received) + len(extra)


def test_postgres_outage_under_load_loses_nothing(tmp_path: Path) -> None:
    config = tmp_path / "tollgate.yaml"
    config.write_text(CONFIG)
    with postgres_database() as url, TcpProxy("127.0.0.1", 5432) as proxy:
        engine = make_engine(url)
        upgrade(engine)
        via_proxy = url.replace(":5432/", f":{proxy.port}/")
        env = {**KEY, "TOLLGATE_DATABASE_URL": via_proxy}
        with GatewayProcess(config, env=env) as gw, Load(lambda: gw.url) as load:
            until(lambda: load.count() >= 100, timeout=30)
            proxy.cut()
            until(lambda: audit_status(gw)["database"] == "unreachable", timeout=30)
            before = load.count()
            until(lambda: load.count() >= before + 200, timeout=30)
            status = audit_status(gw)
            assert status["lag_events"] > 0 and status["accepting"]
            proxy.restore()
            until(lambda: load.count() >= before + 300, timeout=30)
            load.stop()
            until(lambda: drained(gw), timeout=30)
        assert not load.failed, "calls are served while the database is away"
        rows = checked_events(engine)
        engine.dispose()
    assert len(rows) == len(load.received)
    assert {r.prompt_sha256 for r in rows} == {prompt_hash(n) for n in load.received}
    completed = [r.completed_at for r in rows]
    assert completed == sorted(completed), "shipped in the order the calls finished"
