"""An in-process gateway pipeline writing a real audit log (journal + shipper) to SQL."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from gateway.accounting.tokens import TokenCounter
from gateway.audit import tables
from gateway.audit.service import AuditLog
from gateway.audit.signing import Signer
from gateway.call import Answer, Call, Route, Usage, Verdict
from gateway.config.audit_schema import AuditConfig
from gateway.pipeline import Pipeline
from gateway.policies.base import PolicyPlugin
from gateway.policies.chain import ChainEntry, PolicyChain
from gateway.recorder import Recorder
from gateway.runtime import Runtime
from gateway.sinks.fanout import SinkFanout
from gateway.stores.migrate import upgrade
from gateway.stores.sql import make_engine
from tests.support.servers import GatewayProcess
from tests.support.services import postgres_database

SIGNING_KEY = b"test-audit-signing-key"


@contextlib.contextmanager
def audit_engine(kind: str, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, migrated database: a SQLite file, or a new PostgreSQL database."""
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path}/audit.db"
        else:
            url = stack.enter_context(postgres_database())
        engine = make_engine(url)
        upgrade(engine)
        try:
            yield engine
        finally:
            engine.dispose()


class CannedAnswer(PolicyPlugin):
    """Stands in for a response cache: answers calls whose `user` is "cache-me"."""

    name = "cache"

    async def on_request(self, call: Call) -> Verdict | None:
        if call.body.get("user") != "cache-me":
            return None
        body = {"id": "cached", "object": "chat.completion", "choices": [],
                "usage": {"prompt_tokens": 12, "completion_tokens": 5}}  # fmt: skip
        return Answer(body, cache="exact", usage=Usage(input_tokens=12, output_tokens=5))


class TierRoute(PolicyPlugin):
    """Stands in for a routing rule: sends calls whose `user` is "route-int4" to that tier."""

    name = "route"

    async def on_request(self, call: Call) -> Verdict | None:
        if call.body.get("user") != "route-int4":
            return None
        return Route(tier="int4", reason="bulk traffic")


def with_cache(runtime: Runtime) -> Runtime:
    """The runtime with a stand-in cache and routing rule ahead of its own policies."""
    entries = [
        ChainEntry(CannedAnswer(None, None), "cache", False),  # type: ignore[arg-type]
        ChainEntry(TierRoute(None, None), "route", False),  # type: ignore[arg-type]
        *runtime.chain.entries(),
    ]
    return dataclasses.replace(runtime, chain=PolicyChain(entries))


class AuditedPipeline:
    def __init__(self, runtime: Runtime, engine: Engine, journal_dir: Path, **config: Any) -> None:
        self.runtime = runtime
        self.engine = engine
        settings = AuditConfig(journal_dir=str(journal_dir), ship_interval_ms=5.0, **config)
        url = engine.url.render_as_string(hide_password=False)
        self.log = AuditLog.open(settings, url, SIGNING_KEY, journal_dir)
        sinks = SinkFanout([], capacity=10_000)
        self.pipeline = Pipeline(Recorder(sinks, TokenCounter(), self.log.journal))

    def close(self) -> None:
        self.log.close()


def signer() -> Signer:
    return Signer(SIGNING_KEY)


def events(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(tables.events).order_by(tables.events.c.id)))


def decisions(engine: Engine, seq: int) -> list[Any]:
    table = tables.decisions
    with engine.connect() as conn:
        return list(
            conn.execute(select(table).where(table.c.seq == seq).order_by(table.c.position))
        )


def bodies(engine: Engine, seq: int) -> dict[str, str]:
    table = tables.bodies
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.part, table.c.content).where(table.c.seq == seq))
        return {part: content for part, content in rows}


def gateway_events(gateway: GatewayProcess, where: str = "", *args: object) -> list[sqlite3.Row]:
    """The audit events a test gateway (on its own SQLite file) has shipped so far."""
    path = gateway.env["TOLLGATE_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        query = f"SELECT * FROM tollgate_audit_events {where} ORDER BY id"
        return list(db.execute(query, args))


def gateway_notes(gateway: GatewayProcess, request_id: str) -> list[str]:
    """The gateway's own notes (decisions with action `note`) on one call."""
    path = gateway.env["TOLLGATE_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT d.reason FROM tollgate_audit_decisions d JOIN tollgate_audit_events e "
            "ON e.chain_id = d.chain_id AND e.seq = d.seq WHERE e.request_id = ? "
            "AND d.action = 'note' ORDER BY d.position",
            (request_id,),
        )
        return [r[0] for r in rows]
