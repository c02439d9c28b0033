"""Spend rollups: every finished call's facts (facts.py) summed into minute buckets in memory;
a writer adds them into SQL at minute, hour and day granularity.

Every process adds its own deltas with `INSERT .. ON CONFLICT DO UPDATE SET x = x + excluded.x`,
so a fleet needs no coordination and a failed flush is simply retried (its deltas are merged
back, never lost or counted twice within a process). The dashboard and /admin/spend/rollups read
these tables: the same calls, and the same figures, as the traces carry.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.dialects import postgresql, sqlite

from gateway.call import SAVINGS_KINDS
from gateway.stores.sql import rejected_value
from gateway.telemetry.facts import CallFacts
from gateway.telemetry.tables import (
    DIMENSIONS,
    GRANULARITIES,
    LATENCY_BINS_MS,
    SUMS,
    latency,
    shadows,
    spend,
)

log = logging.getLogger("gateway.telemetry")

_N = len(SUMS)
_REQ, _ERR, _DEN, _HIT, _IN, _OUT, _CACHED, _COST, _CF = range(9)
_SAVINGS_AT = {kind: 9 + i for i, kind in enumerate(SAVINGS_KINDS)}
_LAT, _TTFT, _TTFT_N = _N - 3, _N - 2, _N - 1
_NOT_ERRORS = ("served", "cache_hit", "denied", "client_disconnected")
_ANSWERED = ("served", "cache_hit")  # what latency percentiles describe
SpendKey = tuple[int, str, str, str, str, str]  # minute, then DIMENSIONS
LatencyKey = tuple[int, str, str, int]  # minute, model, metric, bin
ShadowKey = tuple[int, str]  # minute, rule


@dataclass
class Pending:
    """Deltas not yet in SQL."""

    spend: dict[SpendKey, list[int]] = field(default_factory=dict)
    latency: dict[LatencyKey, int] = field(default_factory=dict)
    key_names: dict[str, str] = field(default_factory=dict)  # key id -> name
    shadow: dict[ShadowKey, list[int]] = field(default_factory=dict)  # [calls, nano-dollars]

    def __bool__(self) -> bool:
        return bool(self.spend or self.latency or self.shadow)

    def merge(self, other: Pending) -> None:
        for key, sums in other.spend.items():
            mine = self.spend.get(key)
            if mine is None:
                self.spend[key] = sums
            else:
                for i, value in enumerate(sums):
                    mine[i] += value
        for lkey, count in other.latency.items():
            self.latency[lkey] = self.latency.get(lkey, 0) + count
        self.key_names.update(other.key_names)
        for skey, (calls, nanos) in other.shadow.items():
            mine = self.shadow.setdefault(skey, [0, 0])
            mine[0] += calls
            mine[1] += nanos


MAX_PENDING = 100_000


def coarsened(pending: Pending) -> Pending:
    out = Pending(key_names=dict(pending.key_names))
    for (minute, *dims), sums in pending.spend.items():
        out.merge(Pending({(minute // 3600 * 3600, *dims): sums}))  # type: ignore[dict-item]
    for (minute, model, metric, slot), count in pending.latency.items():
        key = (minute // 3600 * 3600, model, metric, slot)
        out.latency[key] = out.latency.get(key, 0) + count
    for (minute, rule), sums in pending.shadow.items():
        out.merge(Pending(shadow={(minute // 3600 * 3600, rule): list(sums)}))
    return out


def _dim(value: object) -> str:
    """A dimension as its column holds it: at most 200 characters, no NUL (PostgreSQL text
    cannot hold one; a model name with one once wedged every flush)."""
    text = str(value)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text[:200]


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def latency_bin(ms: float) -> int:
    return bisect.bisect_left(LATENCY_BINS_MS, ms)


class RollupProcessor:
    """Sums every finished call into minute buckets in memory, until the writer takes them."""

    def __init__(self) -> None:
        self._pending = Pending()
        self.calls = 0

    def add(self, facts: CallFacts) -> None:
        self.calls += 1
        minute = facts.minute
        model = _dim(facts.model)
        key: SpendKey = (minute, _dim(facts.team), _dim(facts.key_id), model,
                         _dim(facts.tier), _dim(facts.cache))  # fmt: skip
        sums = self._pending.spend.get(key)
        if sums is None:
            sums = self._pending.spend[key] = [0] * _N
            self._pending.key_names[key[2]] = _dim(facts.key_name)
        outcome = facts.outcome
        sums[_REQ] += 1
        if outcome not in _NOT_ERRORS:
            sums[_ERR] += 1
        elif outcome == "denied":
            sums[_DEN] += 1
        elif outcome == "cache_hit":
            sums[_HIT] += 1
        usage = facts.usage
        if usage is not None:
            sums[_IN] += usage.input_tokens
            sums[_OUT] += usage.output_tokens
            sums[_CACHED] += usage.cached_tokens
        money = facts.money
        sums[_COST] += money.cost
        sums[_CF] += money.counterfactual
        for kind, nanos in money.savings:
            at = _SAVINGS_AT.get(kind)
            if at is not None:
                sums[at] += nanos
        latency_us = (facts.end_ns - facts.start_ns) // 1000
        sums[_LAT] += latency_us
        if outcome in _ANSWERED:  # a refusal in 1 ms says nothing of how fast calls are served
            self._count(minute, model, "latency", latency_us / 1000)
        ttft = facts.ttft_ms
        if ttft is not None:
            sums[_TTFT] += round(ttft * 1000)
            sums[_TTFT_N] += 1
            self._count(minute, model, "ttft", ttft)
        for rule, nanos in money.shadows:
            row = self._pending.shadow.setdefault((minute, _dim(rule)), [0, 0])
            row[0] += 1
            row[1] += nanos

    def _count(self, minute: int, model: str, metric: str, ms: float) -> None:
        key = (minute, model, metric, latency_bin(ms))
        self._pending.latency[key] = self._pending.latency.get(key, 0) + 1

    def take(self) -> Pending:
        pending, self._pending = self._pending, Pending()
        return pending

    def restore(self, pending: Pending) -> None:
        """A flush failed: its deltas go back in front of what arrived meanwhile. A long
        database outage must not grow memory without bound: past `MAX_PENDING` rows, minute
        buckets are folded into their hour's first minute (hour and day totals stay exact;
        that stretch loses its minute detail), and the fact is logged."""
        pending.merge(self._pending)
        if len(pending.spend) > MAX_PENDING:
            pending = coarsened(pending)
            log.error(
                "spend rollups: the database has been unreachable long enough that pending "
                "minute buckets were folded into hours (%d rows pending)",
                len(pending.spend),
            )
        self._pending = pending

    def peek(self) -> Pending:
        return self._pending


Rows = list[dict[str, Any]]


def rows_of(pending: Pending) -> tuple[Rows, Rows, Rows]:
    """Minute deltas expanded to every granularity, merged, in primary-key order (so two
    processes adding into the same rows take their locks in the same order)."""
    spend_rows: dict[tuple[Any, ...], list[int]] = {}
    latency_rows: dict[tuple[Any, ...], int] = {}
    for (minute, *dims), sums in pending.spend.items():
        for name, width in GRANULARITIES.items():
            key = (name, minute // width * width, *dims)
            mine = spend_rows.get(key)
            if mine is None:
                spend_rows[key] = list(sums)
            else:
                for i, value in enumerate(sums):
                    mine[i] += value
    for (minute, model, metric, slot), count in pending.latency.items():
        for name, width in GRANULARITIES.items():
            lkey = (name, minute // width * width, model, metric, slot)
            latency_rows[lkey] = latency_rows.get(lkey, 0) + count
    names = ("granularity", "bucket_start", *DIMENSIONS)
    spend_out = [
        {
            **dict(zip(names, key, strict=True)),
            **dict(zip(SUMS, sums, strict=True)),
            "key_name": pending.key_names.get(key[3], ""),
        }
        for key, sums in sorted(spend_rows.items())
    ]
    lnames = ("granularity", "bucket_start", "model", "metric", "bin", "count")
    latency_out = [
        dict(zip(lnames, (*key, count), strict=True)) for key, count in sorted(latency_rows.items())
    ]
    shadow_rows: dict[tuple[str, int, str], list[int]] = {}
    for (minute, rule), (calls, nanos) in pending.shadow.items():
        for name, width in GRANULARITIES.items():
            row = shadow_rows.setdefault((name, minute // width * width, rule), [0, 0])
            row[0] += calls
            row[1] += nanos
    shadow_out = [
        {"granularity": g, "bucket_start": b, "rule": r, "calls": c, "savings_nanousd": n}
        for (g, b, r), (c, n) in sorted(shadow_rows.items())
    ]
    return spend_out, latency_out, shadow_out


class RollupWriter:
    """Adds pending deltas into the rollup tables (blocking: run it in a thread). A batch the
    database refuses for a value it cannot store is written row by row, and a row it still
    refuses is dropped and counted (rollups are derived; the audit log keeps every call), so
    one bad row never holds back every flush after it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.dropped_rows = 0

    def write(self, pending: Pending) -> None:
        spend_rows, latency_rows, shadow_rows = rows_of(pending)
        batches = [(self._upsert(spend, SUMS, ("key_name",)), spend_rows)]
        batches.append((self._upsert(latency, ("count",)), latency_rows))
        batches.append((self._upsert(shadows, ("calls", "savings_nanousd")), shadow_rows))
        try:
            with self._engine.begin() as conn:
                for statement, rows in batches:
                    if rows:
                        conn.execute(statement, rows)
        except Exception as exc:
            if not rejected_value(exc):
                raise
            for statement, rows in batches:
                self._one_by_one(statement, rows)

    def _one_by_one(self, statement: Any, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            try:
                with self._engine.begin() as conn:
                    conn.execute(statement, [row])
            except Exception as exc:
                if not rejected_value(exc):
                    raise
                self.dropped_rows += 1
                log.error("a spend rollup row the database refused was dropped: %s", exc)

    def _upsert(self, table: Table, sums: Sequence[str], latest: Sequence[str] = ()) -> Any:
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(table)
        keys: Iterable[str] = (c.name for c in table.primary_key.columns)
        changes = {name: table.c[name] + stmt.excluded[name] for name in sums}
        changes.update({name: stmt.excluded[name] for name in latest})
        return stmt.on_conflict_do_update(index_elements=list(keys), set_=changes)
