"""Takes reservation plans to the counter store and back, and decides what a store outage means.

`on_store_failure: closed` refuses calls while the shared store is unreachable; `open` lets them
through against per-process local counters (the same limits, enforced by each process alone) and
says so in the logs and in `degraded_calls`. After a failure the shared store is retried at most
once per `retry_s`, so an outage costs one timeout per interval, not one per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.accounting.limits import Line
from gateway.accounting.settle import SettleQueue
from gateway.accounting.spend import (
    SPEND_FIELDS,
    SPEND_WINDOWS,
    SpendBook,
    Spent,
    recorded,
    refusals_table,
    table_name,
)
from gateway.accounting.windows import Window, WindowCache, WindowKind, window_at
from gateway.errors import Fault
from gateway.stores.counters import (
    CounterStore,
    HoldTag,
    Refused,
    Settlement,
    StoreRejected,
    StoreUnavailable,
)
from gateway.stores.memory import MemoryCounters

log = logging.getLogger("gateway.ledger")


class StoreDown(Fault):
    """The shared store is unreachable and the configured choice is to fail closed."""


@dataclass(slots=True)
class Hold:
    """What one call reserved, and in which store (a degraded call settles locally)."""

    lines: list[Line]
    store: CounterStore
    values: list[int]
    degraded: bool = False
    tag: HoldTag | None = None
    at: float = 0.0  # when it was made (what the rate and budget headers count from)


@dataclass(frozen=True, slots=True)
class Denial:
    line: Line
    current: int


@dataclass
class LedgerStats:
    degraded_calls: int = 0
    store_failures: int = 0
    store_rejections: int = 0


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    """The ledger's counters since start: calls checked against local counters while the
    shared store was down, the store's failures and refusals, and corrections dropped or
    refused."""

    degraded_calls: int
    store_failures: int
    store_rejections: int
    dropped_settlements: int
    rejected_settlements: int
    rejected_tallies: int


class Ledger:
    def __init__(
        self,
        store: CounterStore,
        on_failure: Literal["closed", "open"],
        zone: ZoneInfo,
        clock: Callable[[], float] = time.time,
        retry_s: float = 1.0,
        hold_s: float = 900.0,
    ) -> None:
        self.store = store
        self.local = store if isinstance(store, MemoryCounters) else MemoryCounters(clock)
        self.on_failure = on_failure
        self.zone = zone
        self.clock = clock
        self.retry_s = retry_s
        self.hold_s = hold_s
        self.stats = LedgerStats()
        self._down_until = 0.0
        self.degraded = False
        self.windows = WindowCache(zone)
        # Spend goes to the shared store only: kept in the process while it is down, shipped
        # once it is back (the local fallback would hide the outage's spend from the fleet).
        self.book = SpendBook(lambda: self.store, self.windows, clock)
        self.settles = SettleQueue(self._failed)
        self._task: asyncio.Task[None] | None = None
        self._seeded: set[str] = set()  # budget counters looked at (seed) by this process

    def snapshot(self) -> LedgerStatus:
        """How degraded the ledger has been since start (/readyz, /metrics)."""
        return LedgerStatus(
            degraded_calls=self.stats.degraded_calls,
            store_failures=self.stats.store_failures,
            store_rejections=self.stats.store_rejections,
            dropped_settlements=self.settles.dropped,
            rejected_settlements=self.settles.rejected,
            rejected_tallies=self.book.rejected,
        )

    @property
    def shared(self) -> bool:
        return self.store is not self.local

    async def reserve(self, lines: Sequence[Line], lasting: bool = False) -> Hold | Denial:
        """`lasting`: a batch's reservation, settled line by line over hours by whichever
        gateway runs it, so never released as a dead gateway's hold."""
        charges = [line.charge for line in lines]
        store = self._pick()
        fresh = [
            line for line in lines if line.seed is not None and line.charge.key not in self._seeded
        ]
        if fresh and store is self.store:
            await self._seed(fresh)
        tag = self._tag() if store is not self.local and not lasting else None
        try:
            result = await store.reserve(charges, tag)
        except StoreUnavailable as exc:
            self._failed(exc)
            store, tag = self._pick(), None
            result = await store.reserve(charges)
        except StoreRejected:
            self.stats.store_rejections += 1
            raise  # this call's reservation only: the store itself is fine
        else:
            self._recovered(store)
        if isinstance(result, Refused):
            return Denial(lines[result.index], result.current)
        degraded = store is self.local and self.shared
        if degraded:
            self.stats.degraded_calls += 1
        return Hold(list(lines), store, result, degraded, tag, self.clock())

    async def _seed(self, lines: Sequence[Line]) -> None:
        """Budget counters this process has not used yet in this window: each that does not
        exist at all (a budget created, or added by a reload, mid-window) starts from what its
        subject already spent in the window, as `tollgate spend` reports it. One look per
        counter per process; a failure is the store's failure."""
        if len(self._seeded) > 100_000:
            self._seeded.clear()
        await self.book.flush()  # this process's own recent spend counts too
        for line in lines:
            assert line.seed is not None
            self._seeded.add(line.charge.key)
            await self.seed_counter(
                line.charge.key, line.window, line.unit, line.seed, line.charge.ttl
            )

    async def seed_counter(
        self, key: str, window: Window, unit: str, seed: tuple[str, str], ttl: int
    ) -> None:
        if window.kind not in SPEND_WINDOWS or unit not in ("usd", "tokens"):
            return
        usd, tokens = await recorded(self.store, window.tag, *seed)
        spent = usd if unit == "usd" else tokens
        if spent and await self.store.seed(key, spent, ttl):
            log.info("budget counter %s starts at %d %s already spent", key, spent, unit)

    def _tag(self) -> HoldTag:
        """A shared-store reservation outlives a dead gateway by at most `hold_s` seconds."""
        return HoldTag(secrets.token_hex(8), self.clock() + self.hold_s)

    def settle(self, hold: Hold, spent: Spent | None) -> None:
        """Commit what the call really used and release the rest (all of it if `spent` is
        None: the call failed before the backend did any work)."""
        lines = []
        for line in hold.lines:
            reserved = line.charge.amount
            if spent is None:
                actual = 0
            elif line.unit == "usd":
                actual = spent.usd_nanos
            elif line.unit == "tokens":
                actual = spent.tokens
            else:
                actual = reserved
            lines.append((line.charge.key, reserved, actual, line.charge.ttl))
        if spent is not None:
            self.book.add(spent)
        self.settles.add(hold.store, Settlement(hold.tag, tuple(lines)))

    def settle_reserved(
        self, counters: Sequence[tuple[str, int, int, int]], spent: Spent | None
    ) -> None:
        """Part of a lasting reservation settled: (key, reserved, actual, ttl) per counter."""
        if spent is not None:
            self.book.add(spent)
        if counters:
            self.settles.add(self.store, Settlement(None, tuple(counters)))

    def record(self, spent: Spent) -> None:
        """Spend of a call no budget applied to: tallies only (shipped in the next batch)."""
        self.book.add(spent)

    async def spend(
        self, group_by: str, kind: WindowKind, at: float | None = None
    ) -> dict[str, dict[str, int]]:
        if self._pick(fail_closed=False) is not self.store:
            raise StoreUnavailable(
                "the shared counter store is down; spend is kept until it returns"
            )
        await self.settles.flush()
        await self.book.flush()
        now = self.clock() if at is None else at
        window = window_at(kind, now, self.zone)
        raw = await self.store.table(table_name(window.tag, group_by))
        rows: dict[str, dict[str, int]] = {}
        for key, amount in raw.items():
            value, _, name = key.rpartition("|")
            rows.setdefault(value, dict.fromkeys(SPEND_FIELDS, 0))[name] = amount
        return rows

    async def refusals(self, window_tag: str) -> dict[str, int]:
        """Calls each budget refused in a window: `budget|subject` -> count."""
        await self.book.flush()
        return await self._pick(fail_closed=False).table(refusals_table(window_tag))

    async def values(self, keys: Sequence[str]) -> list[int]:
        await self.settles.flush()
        return await self._pick(fail_closed=False).values(keys)

    def _pick(self, fail_closed: bool = True) -> CounterStore:
        if not self.shared or self.clock() >= self._down_until:
            return self.store
        if self.on_failure == "closed" and fail_closed:
            raise StoreDown("the budget store (redis) is unreachable")
        return self.local

    def _failed(self, exc: StoreUnavailable) -> None:
        self.stats.store_failures += 1
        self._down_until = self.clock() + self.retry_s
        if not self.degraded:
            self.degraded = True
            log.error(
                "budget store unreachable (%s); on_store_failure=%s: %s",
                exc,
                self.on_failure,
                "denying calls with 503"
                if self.on_failure == "closed"
                else "enforcing limits per process until it returns",
            )

    def _recovered(self, store: CounterStore) -> None:
        if self.degraded and store is self.store:
            self.degraded = False
            log.warning("budget store reachable again; shared limits restored")

    def start(self) -> None:
        self.settles.start()
        self._task = asyncio.create_task(self._maintain(), name="tollgate-ledger")

    async def _maintain(self) -> None:
        """Once a second, ship the spend tallies; every 5 s, release the holds of calls whose
        gateway died (any gateway may do it, atomically); once a minute, drop expired local
        counters."""
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            try:
                await self.book.flush()
                if ticks % 5 == 0:
                    await self.sweep()
                if ticks % 60 == 0:
                    self.local.sweep()
            except StoreUnavailable as exc:
                self._failed(exc)
            except Exception:
                log.exception("ledger maintenance failed")

    async def sweep(self) -> int:
        if not self.shared or self._pick(fail_closed=False) is not self.store:
            return 0
        released = await self.store.sweep_holds(self.clock())
        if released:
            log.warning("released %d reservations left by calls that never settled", released)
        return released

    async def ship(self) -> None:
        """Ship pending settlements and spend now, keeping the ledger running (a batch line's:
        its gateway may be killed right after, and nothing else would settle it)."""
        await self.settles.flush()
        await self.book.flush()

    async def flush(self) -> None:
        """Ship pending settlements and spend now (shutdown, before persisting counters)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.settles.aclose()
        await self.book.flush()

    async def aclose(self) -> None:
        await self.flush()
        await self.store.aclose()
