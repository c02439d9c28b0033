"""Corrections to reservations, shipped in small batches: no response waits for them.

Settling releases what a call reserved but did not use. Doing it a few milliseconds late only
keeps a counter high for those milliseconds (never low), so it is safe to batch: one script
call carries every correction gathered in the window, summed per counter. A correction that
cannot be shipped (store down) is kept and retried; the embedded store applies them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from gateway.stores.counters import Charge, CounterStore, StoreUnavailable
from gateway.stores.memory import MemoryCounters

log = logging.getLogger("gateway.settle")
_MAX_PENDING_KEYS = 100_000


class SettleQueue:
    def __init__(
        self, on_failure: Callable[[StoreUnavailable], None], window_s: float = 0.005
    ) -> None:
        self._on_failure = on_failure
        self._window_s = window_s
        self._pending: dict[int, tuple[CounterStore, dict[str, list[int]]]] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def add(self, store: CounterStore, deltas: Sequence[Charge]) -> None:
        if isinstance(store, MemoryCounters):
            store.settle_now(deltas, ())
            return
        _, by_key = self._pending.setdefault(id(store), (store, {}))
        for delta in deltas:
            entry = by_key.get(delta.key)
            if entry is None:
                if len(by_key) >= _MAX_PENDING_KEYS:
                    self.dropped += 1  # the store has been down too long: keep memory bounded
                    continue
                by_key[delta.key] = [delta.amount, delta.ttl]
            else:
                entry[0] += delta.amount
                entry[1] = max(entry[1], delta.ttl)
        self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, {}
            for store, by_key in pending.values():
                charges = [Charge(k, a, None, ttl) for k, (a, ttl) in by_key.items() if a]
                if not charges:
                    continue
                try:
                    await store.settle(charges, ())
                except StoreUnavailable as exc:
                    self._on_failure(exc)
                    self.add(store, charges)  # merged back, retried with the next batch

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
