"""Keys and budgets keep being served from memory when SQL goes away, and the gateway says so."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.admin.accounts import Accounts
from gateway.auth import KeyRing
from gateway.stores.keys import create_key
from gateway.stores.migrate import downgrade, upgrade
from gateway.stores.sql import make_engine


async def _until(predicate: object, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_sql_outage_keeps_the_last_keys_and_is_reported(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/a.db")
    upgrade(engine)
    ring = KeyRing(b"s")
    _, secret = create_key(engine, b"s", name="k", team="t")
    accounts = Accounts(engine, ring, refresh_s=0.01)
    await accounts.start()
    try:
        assert ring.lookup(secret) is not None and not accounts.failing
        await asyncio.to_thread(downgrade, engine, "base")  # the tables are gone
        await _until(lambda: accounts.failing)
        assert ring.lookup(secret) is not None, "the last known keys still authenticate"
        await asyncio.to_thread(upgrade, engine)
        await _until(lambda: not accounts.failing)
    finally:
        await accounts.aclose()


def test_a_virtual_key_may_not_take_a_static_keys_name(tmp_path: Path) -> None:
    """Names are unique across static and virtual keys: once a virtual key could take a
    static key's name and then share its per-key spend rows and reports."""
    import pytest

    from gateway.admin.keys import KeyCreate, new_key
    from gateway.config.schema import Config
    from gateway.stores.keys import KeyRefused

    engine = make_engine(f"sqlite:///{tmp_path}/k.db")
    upgrade(engine)
    config = Config.model_validate_json(
        '{"auth": {"keys": [{"name": "ci-bot", "key_sha256": "' + "a" * 64 + '"}]}}'
    )
    with pytest.raises(KeyRefused, match="static key named 'ci-bot'"):
        new_key(engine, b"s", KeyCreate(name="ci-bot"), config)
    row, _ = new_key(engine, b"s", KeyCreate(name="ci-bot-2"), config)
    assert row.name == "ci-bot-2"
    engine.dispose()
