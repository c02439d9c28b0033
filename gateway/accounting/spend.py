"""Spend tallies (by team, key and model, per hour/day/week/month/total): accumulated in the
process and shipped to the counter store in one batch a second, so reporting adds no store
round trip to any call. `/admin/spend` flushes this process's batch before it reads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway.accounting.windows import WindowCache, WindowKind
from gateway.stores.counters import CounterStore, StoreRejected, StoreUnavailable, Tally

log = logging.getLogger("gateway.spend")

SPEND_WINDOWS: tuple[WindowKind, ...] = ("hour", "day", "week", "month", "total")
SPEND_DIMENSIONS = ("team", "key", "model")
# Also tallied, to start a budget created mid-window from what its subject already spent.
SEED_DIMENSIONS = ("user", "org", "all")
SPEND_FIELDS = ("usd", "in", "out", "req")
# How long each window's tallies are kept after they start (0: forever).
_KEEP_S: dict[WindowKind, int] = {
    "hour": 8 * 86400,
    "day": 400 * 86400,
    "week": 400 * 86400,
    "month": 800 * 86400,
    "total": 0,
}


@dataclass(frozen=True, slots=True)
class Spent:
    """A finished call's actual figures, for settling and the spend tallies."""

    usd_nanos: int
    tokens: int
    input_tokens: int
    output_tokens: int
    team: str | None
    key: str
    model: str
    user: str | None = None
    org: str | None = None


def table_name(window_tag: str, dimension: str) -> str:
    return f"s:{window_tag}:{dimension}"


def refusals_table(window_tag: str) -> str:
    return f"d:{window_tag}"


class SpendBook:
    def __init__(
        self,
        store: Callable[[], CounterStore],
        windows: WindowCache,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._windows = windows
        self._clock = clock
        self._pending: dict[tuple[str, str], list[int]] = {}
        self._refusals: dict[tuple[str, str], int] = {}  # (window tag, "budget|subject")
        self._lock = asyncio.Lock()
        self._failing = False
        self.rejected = 0

    def add(self, spent: Spent) -> None:
        amounts = (spent.usd_nanos, spent.input_tokens, spent.output_tokens, 1)
        for key in (
            ("team", spent.team or "-"),
            ("key", spent.key),
            ("model", spent.model),
            ("user", spent.user or "-"),
            ("org", spent.org or "-"),
            ("all", "all"),
        ):
            row = self._pending.get(key)
            if row is None:
                self._pending[key] = list(amounts)
            else:
                for i, amount in enumerate(amounts):
                    row[i] += amount

    def refused(self, window_tag: str, budget: str, subject: str) -> None:
        """A call a budget refused: counted per budget, subject and window (the dashboard shows
        a budget that is refusing calls although money is left)."""
        key = (window_tag, f"{budget}|{subject}")
        self._refusals[key] = self._refusals.get(key, 0) + 1

    async def flush(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, {}
            refusals, self._refusals = self._refusals, {}
            if not pending and not refusals:
                return
            tallies = self._tallies(pending) + [
                Tally(refusals_table(tag), field, n, _KEEP_S["month"])
                for (tag, field), n in refusals.items()
            ]
            try:
                await self._store().settle([], tallies)
            except StoreUnavailable as exc:
                if not self._failing:
                    log.warning(
                        "spend tallies kept in the process until the store is back: %s", exc
                    )
                self._failing = True
                for key, row in pending.items():  # merge back; the next flush retries
                    mine = self._pending.setdefault(key, [0, 0, 0, 0])
                    for i, amount in enumerate(row):
                        mine[i] += amount
                for rkey, n in refusals.items():
                    self._refusals[rkey] = self._refusals.get(rkey, 0) + n
            except StoreRejected as exc:
                # Tallies are bounded sums of bounded usage: this cannot happen short of a bug;
                # drop the batch (spend is also in the audit log and the rollups), loudly.
                self.rejected += 1
                log.error("spend tallies refused by the counter store and dropped: %s", exc)
            else:
                self._failing = False

    def _tallies(self, pending: dict[tuple[str, str], list[int]]) -> list[Tally]:
        now = self._clock()
        out = []
        for kind in SPEND_WINDOWS:
            tag = self._windows.at(kind, now).tag
            for (dimension, value), amounts in pending.items():
                table = table_name(tag, dimension)
                for name, amount in zip(SPEND_FIELDS, amounts, strict=True):
                    if amount:
                        out.append(Tally(table, f"{value}|{name}", amount, _KEEP_S[kind]))
        return out


async def recorded(
    store: CounterStore, window_tag: str, dimension: str, value: str
) -> tuple[int, int]:
    """What one subject has spent in a window so far, as the tallies say: (nano-dollars,
    tokens)."""
    table = await store.table(table_name(window_tag, dimension))
    usd = table.get(f"{value}|usd", 0)
    return usd, table.get(f"{value}|in", 0) + table.get(f"{value}|out", 0)
