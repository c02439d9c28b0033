"""The embedded counter store: expiry, and persistence to SQLite across restarts."""

from __future__ import annotations

from pathlib import Path

from gateway.stores import persist
from gateway.stores.counters import Charge, Tally
from gateway.stores.memory import MemoryCounters
from gateway.stores.migrate import upgrade
from gateway.stores.sql import make_engine


async def test_counters_expire_and_sweep_forgets_them() -> None:
    now = [1000.0]
    store = MemoryCounters(lambda: now[0])
    await store.reserve([Charge("short", 5, None, 10), Charge("forever", 1, None, 0)])
    now[0] = 1011.0
    assert await store.values(["short", "forever"]) == [0, 1]
    await store.reserve([Charge("other", 1, None, 5)])
    now[0] = 1020.0
    store.sweep()
    assert store.snapshot({"other"}) == [("other", None, None, 0.0)], "swept"


async def test_persisted_counters_come_back_and_expired_rows_go(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/c.db")
    upgrade(engine)
    now = [1000.0]
    store = MemoryCounters(lambda: now[0], track_dirty=True)
    await store.reserve([Charge("budget", 7, 100, 60), Charge("total", 3, None, 0)])
    await store.settle([], [Tally("spend", "ml|usd", 42, 0)])
    assert persist.save(engine, store) == 3
    assert persist.save(engine, store) == 0, "nothing changed since"

    restored = MemoryCounters(lambda: now[0])
    assert persist.load(engine, restored) == 3
    assert await restored.values(["budget", "total"]) == [7, 3]
    assert await restored.table("spend") == {"ml|usd": 42}

    now[0] = 1061.0
    assert await store.values(["budget"]) == [0]  # expired: marked dirty, its row deleted
    persist.save(engine, store)
    later = MemoryCounters(lambda: now[0])
    persist.load(engine, later)
    assert later.snapshot({"budget"}) == [("budget", None, None, 0.0)]
    assert await later.values(["total"]) == [3]
    engine.dispose()


async def test_untracked_store_keeps_no_dirty_set() -> None:
    store = MemoryCounters()
    await store.reserve([Charge("k", 1, None, 0)])
    assert store.dirty == set()
