"""Embedded counters survive a restart: dirty counters are written to SQLite every second and
read back at start. A crash loses at most that second of increments (documented); a budget
window does not silently reset because the gateway restarted."""

from __future__ import annotations

import json

from sqlalchemy import Engine, delete, insert, select

from gateway.stores.memory import MemoryCounters
from gateway.stores.sql import counters

_CHUNK = 500


def save(engine: Engine, store: MemoryCounters) -> int:
    dirty, store.dirty = store.dirty, set()
    if not dirty:
        return 0
    rows = [r for r in store.snapshot(dirty) if r[1] is not None or r[2]]
    try:
        with engine.begin() as conn:
            keys = list(dirty)
            for i in range(0, len(keys), _CHUNK):  # SQLite bounds the parameters per statement
                conn.execute(delete(counters).where(counters.c.key.in_(keys[i : i + _CHUNK])))
            if not rows:
                return 0
            conn.execute(
                insert(counters),
                [
                    {
                        "key": key,
                        "counter": value,
                        "tally": json.dumps(table) if table else None,
                        "expires_at": expires,
                    }
                    for key, value, table, expires in rows
                ],
            )
    except Exception:
        store.dirty |= dirty  # try again next time
        raise
    return len(rows)


def load(engine: Engine, store: MemoryCounters) -> int:
    with engine.connect() as conn:
        rows = conn.execute(select(counters)).mappings().all()
    for row in rows:
        table = json.loads(row["tally"]) if row["tally"] else None
        store.restore(row["key"], row["counter"], table, row["expires_at"])
    return len(rows)
