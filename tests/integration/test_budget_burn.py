"""A budget's burn-down on the dashboard covers its whole current window, first bucket
included, at the edges of the calendar: the first and last day of a month, and days that
daylight saving time makes 23 or 25 hours long. Every time comes from an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from gateway.accounting.ledger import Ledger
from gateway.api.spend_data import budget_burn
from gateway.budget_rules import BudgetRule
from gateway.stores.memory import MemoryCounters
from gateway.telemetry.rollups import Pending, RollupWriter
from gateway.telemetry.tables import SUMS
from tests.integration.conftest import Clock
from tests.support.audit import audit_engine

NY = "America/New_York"
_COST = SUMS.index("cost_nanousd")


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with audit_engine(request.param, tmp_path) as made:
        yield made


def at(when: str, zone: str = NY) -> int:
    return int(datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(zone)).timestamp())


def spend(engine: Engine, *calls: tuple[str, int]) -> None:
    """Rollup rows as the telemetry writes them: (local time, nano-dollars) for team ml."""
    pending = Pending()
    for when, nanos in calls:
        minute = at(when) // 60 * 60
        sums = pending.spend.setdefault(
            (minute, "ml", "k1", "chat", "fp16", "miss"), [0] * len(SUMS)
        )
        sums[_COST] += nanos
    RollupWriter(engine).write(pending)


def rule(window: str) -> BudgetRule:
    return BudgetRule("ml", "team", "ml", 10**9, None, window, "hard")  # type: ignore[arg-type]


async def burn(engine: Engine, window: str, now: str) -> dict[str, object]:
    clock = Clock(now, NY)
    ledger = Ledger(MemoryCounters(clock), "closed", ZoneInfo(NY), clock=clock)
    return await budget_burn(engine, ledger, rule(window), clock())


def final(report: dict[str, object]) -> int:
    points = report["burn"]
    assert isinstance(points, list) and points
    return round(points[-1][1] * 1e9)


async def test_the_first_day_of_a_month_has_a_burn_from_its_first_hour(engine: Engine) -> None:
    spend(engine, ("2027-01-31T23:59:00", 7), ("2027-02-01T00:05:00", 100))
    report = await burn(engine, "month", "2027-02-01T00:30:00")
    window = report["window"]
    assert isinstance(window, dict) and window["start"] == at("2027-02-01T00:00:00")
    points = report["burn"]
    assert isinstance(points, list) and len(points) == 1  # the window's first (and only) hour
    assert points[0][0] == at("2027-02-01T01:00:00")
    assert final(report) == 100  # January's last minute is not February's


async def test_the_last_day_of_a_month_keeps_its_first_day(engine: Engine) -> None:
    spend(
        engine,
        ("2027-01-31T23:59:00", 7),  # the month before
        ("2027-02-01T00:05:00", 100),  # the window's first hour
        ("2027-02-28T23:40:00", 20),  # its last
    )
    report = await burn(engine, "month", "2027-02-28T23:50:00")
    points = report["burn"]
    assert isinstance(points, list) and len(points) == 28 * 24
    assert round(points[0][1] * 1e9) == 100
    assert final(report) == 120


@pytest.mark.parametrize(
    ("day", "hours"),
    [("2027-03-14", 23), ("2027-11-07", 25)],  # DST starts / ends in New York
)
async def test_days_that_dst_shortens_or_lengthens(engine: Engine, day: str, hours: int) -> None:
    spend(engine, (f"{day}T00:10:00", 1), (f"{day}T23:50:00", 2))
    previous = datetime.fromisoformat(day).replace(day=int(day[-2:]) - 1).date().isoformat()
    spend(engine, (f"{previous}T23:55:00", 50))
    report = await burn(engine, "day", f"{day}T23:55:00")
    points = report["burn"]
    assert isinstance(points, list) and len(points) == hours
    assert final(report) == 3


async def test_a_week_window_starting_today(engine: Engine) -> None:
    spend(engine, ("2027-03-15T00:00:30", 5))  # a Monday
    report = await burn(engine, "week", "2027-03-15T00:01:00")
    assert final(report) == 5
