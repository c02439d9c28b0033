"""Stored responses in SQL (SQLite and PostgreSQL): found only by the key that made them, gone
after their retention (and pruned), deleted on request."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from gateway.stores.migrate import upgrade
from gateway.stores.responses import StoredResponse, load, prune, remove, save
from gateway.stores.sql import make_engine
from tests.support.services import postgres_database


@contextlib.contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[Engine]:
    if kind == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path}/responses.db")
    else:
        stack = contextlib.ExitStack()
        engine = make_engine(stack.enter_context(postgres_database()))
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        if kind != "sqlite":
            stack.close()


def stored(ident: str, key: str, expires_at: float) -> StoredResponse:
    return StoredResponse(
        id=ident, key_id=key, created_at=100.0, expires_at=expires_at, model="chat",
        response={"id": ident, "output": [{"type": "message", "content": [{"text": "hé"}]}]},
        input_items=[{"id": "msg_1", "role": "user", "content": "hi"}],
        conversation=[{"role": "user", "content": "hi"}, {"type": "message", "role": "assistant"}],
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_response_is_its_keys_until_its_retention_ends(kind: str, tmp_path: Path) -> None:
    with database(kind, tmp_path) as engine:
        save(engine, stored("resp_a", "key_1", expires_at=200.0))
        save(engine, stored("resp_b", "key_1", expires_at=500.0))
        found = load(engine, "resp_a", "key_1", now=150.0)
        assert found is not None and found.response["output"][0]["content"][0]["text"] == "hé"
        assert len(found.conversation) == 2 and found.input_items[0]["id"] == "msg_1"
        assert load(engine, "resp_a", "key_2", now=150.0) is None, "another key's: not found"
        assert load(engine, "resp_a", "key_1", now=200.0) is None, "past its retention"
        assert prune(engine, now=300.0) == 1
        assert load(engine, "resp_b", "key_1", now=300.0) is not None
        assert remove(engine, "resp_b", "key_2") is False
        assert remove(engine, "resp_b", "key_1") is True
        assert load(engine, "resp_b", "key_1", now=300.0) is None
