"""Spend rollups fed by the traces equal the audit log's totals for the same traffic, to the
nano-dollar (SQLite and PostgreSQL), at every granularity; flushes add (several flushes, or
several processes, into the same rows); a failed flush loses nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from gateway.accounting.tokens import TokenCounter
from gateway.audit import tables as audit_tables
from gateway.telemetry import queries
from gateway.telemetry.queries import Range
from gateway.telemetry.rollups import Pending, RollupProcessor, RollupWriter
from gateway.telemetry.tables import GRANULARITIES, SUMS, latency, spend
from tests.integration.test_audit_log import CONFIG, drive
from tests.support.audit import AuditedPipeline, audit_engine, with_cache
from tests.support.runtime import make_deps, runtime_from
from tests.support.telemetry import TracedPipeline

MONEY = (
    "cost_nanousd",
    "counterfactual_nanousd",
    *(f"savings_{k}_nanousd" for k in ("exact_cache", "semantic_cache", "tier_routing",
                                       "prefix_reuse", "provider_prompt_cache", "batch")),
)  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with audit_engine(request.param, tmp_path) as made:
        yield made


@pytest.fixture
async def both(engine: Engine, tmp_path: Path) -> AsyncIterator[Engine]:
    """The audit test's traffic (every outcome type), audited and traced in one pipeline,
    run twice with a rollup flush in between (the second flush adds into existing rows)."""
    transport = httpx.AsyncHTTPTransport()
    deps = make_deps(transport, TokenCounter())
    runtime = with_cache(runtime_from(tmp_path / "t.yaml", CONFIG, deps))
    audited = AuditedPipeline(runtime, engine, tmp_path / "journal")
    traced = TracedPipeline(engine, journal=audited.log.journal)
    traced.start()
    audited.pipeline = traced.pipeline
    await drive(audited)
    await traced.settle()
    await traced.telemetry.flush()
    fresh = make_deps(transport, TokenCounter())  # fresh rate limits
    second = with_cache(runtime_from(tmp_path / "t2.yaml", CONFIG, fresh))
    audited.runtime = second
    await drive(audited)
    audited.close()
    await traced.aclose()
    yield engine
    for backend in [*runtime.backends.values(), *second.backends.values()]:
        await backend.aclose()
    await transport.aclose()


def audit_totals(engine: Engine, team: str | None = None) -> dict[str, int]:
    e = audit_tables.events
    columns = [func.coalesce(func.sum(e.c[name]), 0) for name in MONEY]
    query = select(func.count(), func.sum(e.c.input_tokens), func.sum(e.c.output_tokens), *columns)
    if team is not None:
        query = query.where(e.c.team == team)
    with engine.connect() as conn:
        row = conn.execute(query).one()
    return {
        "requests": row[0],
        "input_tokens": int(row[1] or 0),
        "output_tokens": int(row[2] or 0),
        **{name: int(value) for name, value in zip(MONEY, row[3:], strict=True)},
    }


def rollup_totals(engine: Engine, granularity: str, team: str | None = None) -> dict[str, int]:
    r = Range(0, 2**40, granularity)
    sums = queries.totals(engine, r, **({"team": team} if team is not None else {}))
    return {name: sums[name] for name in ("requests", "input_tokens", "output_tokens", *MONEY)}


async def test_rollups_equal_the_audit_log_to_the_nano_dollar(both: Engine) -> None:
    expected = audit_totals(both)
    assert expected["requests"] == 24 and expected["cost_nanousd"] > 0
    assert expected["savings_tier_routing_nanousd"] > 0
    assert expected["savings_exact_cache_nanousd"] > 0
    for granularity in GRANULARITIES:
        assert rollup_totals(both, granularity) == expected, granularity
    for team in ("ml", "legal", "web"):
        assert rollup_totals(both, "hour", team) == audit_totals(both, team), team


async def test_rollup_dimensions_and_histograms(both: Engine) -> None:
    with both.connect() as conn:
        rows = conn.execute(select(spend).where(spend.c.granularity == "day")).all()
        hist = conn.execute(
            select(latency.c.metric, func.sum(latency.c.count))
            .where(latency.c.granularity == "minute")
            .group_by(latency.c.metric)
        ).all()
    by = {(r.team, r.key_id, r.model, r.tier, r.cache): r for r in rows}
    hit = by[("ml", "k-alice", "chat", "", "exact")]
    assert hit.requests == 2 and hit.cache_hits == 2 and hit.cost_nanousd == 0
    denied = sum(r.denied for r in rows)
    assert denied == 4  # max_tokens and the rate limit, twice
    errors = sum(r.errors for r in rows)
    assert errors == 6  # unknown model, upstream 500, bad key; twice
    # Latency describes answered calls: 6 of each run's 12 (served and cache hits).
    assert dict(hist)["latency"] == 12
    assert queries.percentiles(both, Range(0, 2**40, "day"), "latency")["p50"] is not None


async def test_a_failed_flush_keeps_its_deltas(engine: Engine) -> None:
    traced = TracedPipeline(engine)
    minute = int(time.time()) // 60 * 60
    sums = [0] * len(SUMS)
    sums[0], sums[SUMS.index("cost_nanousd")] = 3, 1_234
    traced.telemetry.rollups.restore(Pending({(minute, "t", "k", "m", "", "miss"): sums}))

    class Down(RollupWriter):
        def write(self, pending: Pending) -> None:
            raise ConnectionError("database down")

    writer = traced.telemetry.writer
    traced.telemetry.writer = Down(engine)
    with pytest.raises(ConnectionError):
        await traced.telemetry.flush()
    assert traced.telemetry.flush_failures == 1
    traced.telemetry.writer = writer
    await traced.telemetry.flush()
    assert rollup_totals(engine, "day")["cost_nanousd"] == 1_234
    assert rollup_totals(engine, "minute")["requests"] == 3


async def test_gateways_flushing_at_once_add_up(engine: Engine) -> None:
    """Several processes' flushes into the same rows at the same moment (as a fleet does):
    nothing lost, nothing counted twice, no deadlock (rows are written in key order)."""
    minute = int(time.time()) // 60 * 60
    fleet = [TracedPipeline(engine) for _ in range(4)]
    for n, member in enumerate(fleet):
        pending = Pending()
        for team in ("a", "b", "c"):
            for m in range(5):
                sums = [0] * len(SUMS)
                sums[0], sums[SUMS.index("cost_nanousd")] = 1, 1_000 + n
                pending.spend[(minute - 60 * m, team, f"k{m}", "chat", "", "miss")] = sums
        member.telemetry.rollups.restore(pending)
    await asyncio.gather(*(member.telemetry.flush() for member in fleet))
    day = rollup_totals(engine, "day")
    assert day["requests"] == 4 * 15
    assert day["cost_nanousd"] == 15 * (1_000 + 1_001 + 1_002 + 1_003)
    assert rollup_totals(engine, "minute") == day == rollup_totals(engine, "hour")


def test_a_row_the_database_refuses_is_dropped_and_the_rest_are_written(
    engine: Engine,
) -> None:
    """A NUL byte in a model name once wedged every flush on PostgreSQL. Dimensions are now
    cleaned before they are kept, and a row the database still refuses costs only itself."""
    one = [1] + [0] * (len(SUMS) - 1)
    good = Pending({(60, "ml", "k1", "chat", "", "miss"): one})
    processor = RollupProcessor()
    processor.add(_facts(model="bad\x00name" + "m" * 300))
    cleaned = processor.take()
    ((_, _, _, model, *_),) = cleaned.spend
    assert "\x00" not in model and len(model) == 200
    writer = RollupWriter(engine)
    poisoned = Pending(
        {**good.spend, (60, "ml", "k1", "bad\x00", "", "miss"): [1] + [0] * (len(SUMS) - 1)}
    )
    writer.write(poisoned)
    written = rollup_totals(engine, "minute")["requests"]
    if engine.dialect.name == "postgresql":
        assert (written, writer.dropped_rows) == (1, 3)  # its minute, hour and day rows
    else:  # SQLite keeps a NUL: nothing to refuse
        assert (written, writer.dropped_rows) == (2, 0)


def _facts(model: str) -> Any:
    from gateway.call import NO_MONEY
    from gateway.telemetry.facts import CallFacts

    return CallFacts(
        operation="chat", provider="openai", model=model, team="ml", tier="", key_id="k1",
        key_name="alice", cache="miss", outcome="served", stream=False, error_type="",
        start_ns=60 * 10**9, end_ns=61 * 10**9, ttft_ms=None, usage=None, money=NO_MONEY,
    )  # fmt: skip
