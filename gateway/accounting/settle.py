"""Settlements of finished calls, shipped in small batches: no response waits for them.

Settling replaces what a call reserved by what it used. Doing it a few milliseconds late only
keeps a counter high for those milliseconds (never low), so it is safe to batch: one script call
carries every settlement gathered in the window. One that cannot be shipped (store down) is kept
and retried; the embedded store applies them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gateway.stores.counters import CounterStore, Settlement, StoreRejected, StoreUnavailable
from gateway.stores.memory import MemoryCounters

log = logging.getLogger("gateway.settle")
_MAX_PENDING = 100_000


class SettleQueue:
    def __init__(
        self, on_failure: Callable[[StoreUnavailable], None], window_s: float = 0.005
    ) -> None:
        self._on_failure = on_failure
        self._window_s = window_s
        self._pending: dict[int, tuple[CounterStore, list[Settlement]]] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.rejected = 0

    def add(self, store: CounterStore, settlement: Settlement) -> None:
        if isinstance(store, MemoryCounters):
            store.release_now((settlement,))
            return
        _, queue = self._pending.setdefault(id(store), (store, []))
        if len(queue) >= _MAX_PENDING:
            # The store has been down too long: keep memory bounded. The dropped call's hold
            # expires and is swept, charging its reservation instead of its actual cost.
            self.dropped += 1
            return
        queue.append(settlement)
        self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, {}
            for store, queue in pending.values():
                try:
                    await store.release(queue)
                except StoreUnavailable as exc:
                    self._on_failure(exc)
                    for settlement in queue:  # kept, retried with the next batch
                        self.add(store, settlement)
                except StoreRejected:
                    await self._one_by_one(store, queue)

    async def _one_by_one(self, store: CounterStore, queue: list[Settlement]) -> None:
        """A batch the store refused: each settlement on its own, so one bad value costs
        only its own call's settlement (its hold then expires and is swept)."""
        for settlement in queue:
            try:
                await store.release([settlement])
            except StoreRejected as exc:
                self.rejected += 1
                log.error("a settlement was refused by the counter store and dropped: %s", exc)
            except StoreUnavailable as exc:
                self._on_failure(exc)
                self.add(store, settlement)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tollgate-settle")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._window_s)  # gather the calls finishing meanwhile
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("settling reservations failed")
            if self._pending:
                await asyncio.sleep(1.0)  # the store is down: retry once a second, not hot

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("could not settle reservations at shutdown")
