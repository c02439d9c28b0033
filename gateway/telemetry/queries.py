"""Reads of the spend rollups: time series, totals, top keys, savings, percentiles and burn
series. Blocking (run in a thread); every query is bounded by a time range and a granularity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine, func, select

from gateway.call import SAVINGS_KINDS
from gateway.telemetry.tables import (
    GRANULARITIES,
    LATENCY_BINS_MS,
    SUMS,
    latency,
    shadows,
    spend,
)

Stack = Literal["team", "model", "tier", "key_id", "cache"]


@dataclass(frozen=True, slots=True)
class Range:
    """[start, end) in epoch seconds, read at one granularity."""

    start: int
    end: int
    granularity: str

    @classmethod
    def last(cls, seconds: int, now: float, granularity: str | None = None) -> Range:
        if granularity is None:
            granularity = (
                "minute" if seconds <= 6 * 3600 else "hour" if seconds <= 8 * 86400 else "day"
            )
        width = GRANULARITIES[granularity]
        end = (int(now) // width + 1) * width
        start = (int(now) - seconds) // width * width + width
        return cls(start, end, granularity)

    @classmethod
    def since(cls, start: float, now: float, granularity: str) -> Range:
        """From the bucket holding `start` through the one holding `now`: a budget window so
        far, its first bucket included (on a window's first day that is all there is)."""
        width = GRANULARITIES[granularity]
        return cls(int(start) // width * width, (int(now) // width + 1) * width, granularity)

    def buckets(self) -> list[int]:
        return list(range(self.start, self.end, GRANULARITIES[self.granularity]))


def _where(r: Range, table: Any = spend) -> list[Any]:
    return [
        table.c.granularity == r.granularity,
        table.c.bucket_start >= r.start,
        table.c.bucket_start < r.end,
    ]


def totals(engine: Engine, r: Range, **filters: str) -> dict[str, int]:
    columns = [func.coalesce(func.sum(spend.c[name]), 0).label(name) for name in SUMS]
    conditions = _where(r) + [spend.c[k] == v for k, v in filters.items()]
    with engine.connect() as conn:
        row = conn.execute(select(*columns).where(*conditions)).one()
    return {name: int(value) for name, value in zip(SUMS, row, strict=True)}


@dataclass(frozen=True, slots=True)
class StackedCost:
    """One series of the stacked spend chart: a dimension's value and its cost per bucket."""

    name: str
    nanos: list[int]  # nano-dollars


@dataclass(frozen=True, slots=True)
class Series:
    buckets: list[int]
    stacks: list[StackedCost]
    requests: list[int]
    errors: list[int]


@dataclass(frozen=True, slots=True)
class Group:
    """Totals (the SUMS columns, integers; money in nano-dollars) for one value of a dimension;
    grouped by key, also the key's name and team as last seen."""

    value: str | None
    sums: Mapping[str, int]
    key_name: str | None = None
    team: str | None = None


@dataclass(frozen=True, slots=True)
class ShadowSaving:
    """What a shadow rule would have saved over a range (negative: cost more)."""

    rule: str
    calls: int
    nanos: int


def series(engine: Engine, r: Range, stack: Stack, limit: int = 8) -> Series:
    """Cost per bucket, one series per value of `stack` (the top `limit`, the rest as
    'other'), plus requests and errors per bucket."""
    dim = spend.c[stack]
    query = (
        select(
            spend.c.bucket_start,
            dim,
            func.sum(spend.c.cost_nanousd),
            func.sum(spend.c.requests),
            func.sum(spend.c.errors),
        )
        .where(*_where(r))
        .group_by(spend.c.bucket_start, dim)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    buckets = r.buckets()
    at = {b: i for i, b in enumerate(buckets)}
    by_value: dict[str, list[int]] = {}
    requests = [0] * len(buckets)
    errors = [0] * len(buckets)
    for bucket, value, cost, reqs, errs in rows:
        i = at.get(int(bucket))
        if i is None:
            continue
        by_value.setdefault(value, [0] * len(buckets))[i] += int(cost)
        requests[i] += int(reqs)
        errors[i] += int(errs)
    ranked = sorted(by_value, key=lambda v: -sum(by_value[v]))
    out = [StackedCost(v or "(none)", by_value[v]) for v in ranked[:limit]]
    rest = ranked[limit:]
    if rest:
        other = [sum(by_value[v][i] for v in rest) for i in range(len(buckets))]
        out.append(StackedCost("other", other))
    return Series(buckets, out, requests, errors)


def grouped(engine: Engine, r: Range, by: Stack, limit: int = 10) -> list[Group]:
    """Totals per value of one dimension, most expensive first (by key: with its name and
    team as last seen)."""
    dim = spend.c[by]
    columns = [func.sum(spend.c[name]).label(name) for name in SUMS]
    named = [func.max(spend.c.key_name), func.max(spend.c.team)] if by == "key_id" else []
    query = (
        select(dim, *columns, *named)
        .where(*_where(r))
        .group_by(dim)
        .order_by(func.sum(spend.c.cost_nanousd).desc(), dim)
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    out = []
    for row in rows:
        sums = {name: int(v) for name, v in zip(SUMS, row[1 : 1 + len(SUMS)], strict=True)}
        out.append(Group(row[0], sums, *(row[-2:] if named else ())))
    return out


def percentiles(
    engine: Engine, r: Range, metric: str, points: Sequence[float] = (0.5, 0.95, 0.99)
) -> dict[str, float | None]:
    """Percentiles (ms) from the histogram, interpolated linearly within the bin the rank
    falls in (beyond the last bound: that bound)."""
    query = (
        select(latency.c.bin, func.sum(latency.c.count))
        .where(*_where(r, latency), latency.c.metric == metric)
        .group_by(latency.c.bin)
    )
    with engine.connect() as conn:
        counts = {int(b): int(c) for b, c in conn.execute(query).all()}
    total = sum(counts.values())
    out: dict[str, float | None] = {}
    for p in points:
        label = f"p{round(p * 100)}"
        if not total:
            out[label] = None
            continue
        rank, seen = p * total, 0
        bounds = LATENCY_BINS_MS
        for slot in sorted(counts):
            if seen + counts[slot] >= rank:
                if slot >= len(bounds):
                    out[label] = float(bounds[-1])
                else:
                    low = float(bounds[slot - 1]) if slot else 0.0
                    share = (rank - seen) / counts[slot]
                    out[label] = round(low + (bounds[slot] - low) * share, 1)
                break
            seen += counts[slot]
    return out


def cumulative(engine: Engine, r: Range, **filters: str) -> list[tuple[int, int]]:
    """(bucket end, spend so far) across the range: a budget's burn."""
    query = (
        select(spend.c.bucket_start, func.sum(spend.c.cost_nanousd))
        .where(*_where(r), *(spend.c[k] == v for k, v in filters.items()))
        .group_by(spend.c.bucket_start)
    )
    with engine.connect() as conn:
        per = {int(b): int(c) for b, c in conn.execute(query).all()}
    width = GRANULARITIES[r.granularity]
    out, running = [], 0
    for bucket in r.buckets():
        running += per.get(bucket, 0)
        out.append((bucket + width, running))
    return out


def savings_of(sums: Mapping[str, int]) -> list[tuple[str, int]]:
    """(optimisation, nano-dollars saved) from a row of totals, every kind in order."""
    return [(kind, sums[f"savings_{kind}_nanousd"]) for kind in SAVINGS_KINDS]


def shadow_savings(engine: Engine, r: Range) -> list[ShadowSaving]:
    """Per shadow rule over the range: calls it matched, and what enforcing it would have
    saved (negative: it would have cost more)."""
    query = (
        select(shadows.c.rule, func.sum(shadows.c.calls), func.sum(shadows.c.savings_nanousd))
        .where(*_where(r, shadows))
        .group_by(shadows.c.rule)
        .order_by(shadows.c.rule)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [ShadowSaving(rule, int(calls), int(nanos)) for rule, calls, nanos in rows]
