"""Embedded counters: one process, no server. Atomic because nothing awaits between the check
and the increment; expired counters are dropped lazily and by `sweep()`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.stores.counters import Charge, HoldTag, Refused, Settlement, Tally


class MemoryCounters:
    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.time, track_dirty: bool = False) -> None:
        self._clock = clock
        self._counters: dict[str, int] = {}
        self._tables: dict[str, dict[str, int]] = {}
        self._expiry: dict[str, float] = {}
        self.track_dirty = track_dirty  # on when the counters are persisted
        self.dirty: set[str] = set()

    def _live(self, key: str) -> int:
        expires = self._expiry.get(key)
        if expires is not None and expires <= self._clock():
            self._counters.pop(key, None)
            self._tables.pop(key, None)
            del self._expiry[key]
            if self.track_dirty:
                self.dirty.add(key)  # so the persisted row goes too
            return 0
        return self._counters.get(key, 0)

    def _touch(self, key: str, ttl: int) -> None:
        if ttl > 0:
            self._expiry[key] = self._clock() + ttl
        if self.track_dirty:
            self.dirty.add(key)

    async def reserve(
        self, charges: Sequence[Charge], hold: HoldTag | None = None
    ) -> Refused | list[int]:
        return self.reserve_now(charges)

    async def release(self, settlements: Sequence[Settlement]) -> None:
        self.release_now(settlements)

    def release_now(self, settlements: Sequence[Settlement]) -> None:
        """In one process a reservation cannot outlive its gateway: just the differences."""
        for settlement in settlements:
            for key, reserved, actual, ttl in settlement.lines:
                if actual != reserved:
                    self._counters[key] = self._live(key) + actual - reserved
                    self._touch(key, ttl)

    async def sweep_holds(self, now: float) -> int:
        return 0

    async def seed(self, key: str, value: int, ttl: int) -> bool:
        if (key in self._counters and self._live(key) != 0) or key in self._counters:
            return False
        self._counters[key] = value
        self._touch(key, ttl)
        return True

    def reserve_now(self, charges: Sequence[Charge]) -> Refused | list[int]:
        for i, charge in enumerate(charges):
            current = self._live(charge.key)
            if charge.limit is not None and current + charge.amount > charge.limit:
                return Refused(i, current)
        values = []
        for charge in charges:
            value = self._live(charge.key) + charge.amount
            self._counters[charge.key] = value
            self._touch(charge.key, charge.ttl)
            values.append(value)
        return values

    async def settle(self, deltas: Sequence[Charge], tallies: Sequence[Tally]) -> None:
        self.settle_now(deltas, tallies)

    def settle_now(self, deltas: Sequence[Charge], tallies: Sequence[Tally]) -> None:
        for delta in deltas:
            self._counters[delta.key] = self._live(delta.key) + delta.amount
            self._touch(delta.key, delta.ttl)
        for tally in tallies:
            self._live(tally.table)
            table = self._tables.setdefault(tally.table, {})
            table[tally.field] = table.get(tally.field, 0) + tally.amount
            self._touch(tally.table, tally.ttl)

    async def values(self, keys: Sequence[str]) -> list[int]:
        return [self._live(k) for k in keys]

    async def table(self, table: str) -> dict[str, int]:
        self._live(table)
        return dict(self._tables.get(table, {}))

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def sweep(self) -> None:
        now = self._clock()
        for key in [k for k, t in self._expiry.items() if t <= now]:
            self._live(key)

    def snapshot(
        self, keys: set[str]
    ) -> list[tuple[str, int | None, dict[str, int] | None, float]]:
        """(key, counter, table, expires_at) for `keys`: what the SQLite persister writes."""
        rows = []
        for key in keys:
            counter = self._counters.get(key)
            table = self._tables.get(key)
            rows.append((key, counter, dict(table) if table else None, self._expiry.get(key, 0.0)))
        return rows

    def restore(
        self, key: str, counter: int | None, table: dict[str, int] | None, expires: float
    ) -> None:
        if expires and expires <= self._clock():
            return
        if counter is not None:
            self._counters[key] = counter
        if table:
            self._tables[key] = dict(table)
        if expires:
            self._expiry[key] = expires
