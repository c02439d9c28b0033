"""SQL-backed state the hot path reads from memory: virtual keys and run-time budgets.

A background task polls one small revisions table (bumped in the same transaction as every key
or budget change) and reloads only what changed, so `tollgate keys revoke` on any machine
reaches every gateway process within `keys.refresh_seconds`, and no request ever waits on SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import Engine, select

from gateway.auth import KeyRing
from gateway.budget_rules import BudgetRule
from gateway.stores import persist
from gateway.stores.budgets import list_budgets
from gateway.stores.keys import list_keys
from gateway.stores.memory import MemoryCounters
from gateway.stores.sql import revisions

log = logging.getLogger("gateway.accounts")


class Accounts:
    def __init__(
        self,
        engine: Engine,
        ring: KeyRing,
        refresh_s: float,
        counters: MemoryCounters | None = None,
    ) -> None:
        self.engine = engine
        self.ring = ring
        self.refresh_s = refresh_s
        self.counters = counters  # embedded counters to persist, if any
        self.budgets: tuple[BudgetRule, ...] = ()
        self._seen: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.failing = False

    def current_budgets(self) -> tuple[BudgetRule, ...]:
        return self.budgets

    async def start(self) -> None:
        if self.counters is not None:
            restored = await asyncio.to_thread(persist.load, self.engine, self.counters)
            log.info("restored %d embedded counters", restored)
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="tollgate-accounts")

    async def refresh(self) -> None:
        revs = await asyncio.to_thread(self._revisions)
        if revs.get("keys", 0) != self._seen.get("keys", -1):
            rows = await asyncio.to_thread(list_keys, self.engine)
            self.ring.replace(rows)
        if revs.get("budgets", 0) != self._seen.get("budgets", -1):
            self.budgets = tuple(await asyncio.to_thread(list_budgets, self.engine))
        self._seen = {"keys": revs.get("keys", 0), "budgets": revs.get("budgets", 0)}
        if self.counters is not None and self.counters.dirty:
            await asyncio.to_thread(persist.save, self.engine, self.counters)

    def _revisions(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {r.name: r.value for r in conn.execute(select(revisions))}

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep serving on the last known state
                if not self.failing:
                    log.error("cannot refresh keys and budgets from SQL: %s", exc)
                self.failing = True
            else:
                if self.failing:
                    log.warning("keys and budgets refresh from SQL works again")
                self.failing = False

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.counters is not None:
            try:
                await asyncio.to_thread(persist.save, self.engine, self.counters)
            except Exception:
                log.exception("could not persist embedded counters at shutdown")
        await asyncio.to_thread(self.engine.dispose)
