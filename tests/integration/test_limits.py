"""Budgets and rate limits at the ledger: the same behaviour on the embedded store and Redis."""

from __future__ import annotations

import asyncio
from zoneinfo import ZoneInfo

from gateway.accounting.ledger import Denial, Hold, Ledger
from gateway.accounting.limits import Ask, Planner, RateRule
from gateway.accounting.spend import Spent
from gateway.budget_rules import BudgetRule
from gateway.call import Principal
from tests.integration.conftest import Clock, StoreFactory

ALICE = Principal(key_id="k1", name="alice", team="ml", org="acme")
BOB = Principal(key_id="k2", name="bob", team="web", org="acme")
ALICE_FULL = Principal(key_id="k1", name="alice", user="a@x", team="ml", org="acme")


def budget(name: str, scope: str, subject: str | None, **kw: object) -> BudgetRule:
    fields: dict[str, object] = {
        "usd_nanos": None,
        "tokens": None,
        "window": "day",
        "enforcement": "hard",
        **kw,
    }
    return BudgetRule(name, scope, subject, **fields)  # type: ignore[arg-type]


def setup(
    make_store: StoreFactory,
    clock: Clock,
    budgets: list[BudgetRule] = (),  # type: ignore[assignment]
    rates: list[RateRule] = (),  # type: ignore[assignment]
    zone: str = "UTC",
) -> tuple[Ledger, Planner]:
    tz = ZoneInfo(zone)
    ledger = Ledger(make_store(clock), "closed", tz, clock=clock, hold_s=60)
    return ledger, Planner(budgets, rates, tz, clock)


async def test_reservation_is_all_or_nothing(make_store: StoreFactory) -> None:
    clock = Clock("2026-05-05T12:00:00")
    ledger, planner = setup(
        make_store,
        clock,
        [budget("team", "team", "ml", usd_nanos=1000), budget("org", "org", "acme", tokens=100)],
    )
    first = await ledger.reserve(planner.lines(ALICE, "chat", Ask(600, 10)))
    assert isinstance(first, Hold)
    refused = await ledger.reserve(planner.lines(ALICE, "chat", Ask(300, 95)))
    assert isinstance(refused, Denial)
    assert (refused.line.rule, refused.line.unit, refused.current) == ("org", "tokens", 10)
    lines = planner.lines(ALICE, "chat", Ask(0, 0))
    assert await ledger.values([line.charge.key for line in lines]) == [600, 10], (
        "the refused call charged nothing, not even the budget it fitted"
    )


async def test_concurrent_reservations_never_pass_the_limit(make_store: StoreFactory) -> None:
    clock = Clock("2026-05-05T12:00:00")
    ledger, planner = setup(make_store, clock, [budget("team", "team", "*", usd_nanos=350)])
    results = await asyncio.gather(
        *(ledger.reserve(planner.lines(ALICE, "chat", Ask(7, 1))) for _ in range(300))
    )
    held = [r for r in results if isinstance(r, Hold)]
    assert len(held) == 50
    assert await ledger.values([held[0].lines[0].charge.key]) == [350]


async def test_settle_commits_actual_and_releases_the_rest(make_store: StoreFactory) -> None:
    clock = Clock("2026-05-05T12:00:00")
    rules = [budget("b", "key", "*", usd_nanos=10_000, tokens=1000)]
    ledger, planner = setup(make_store, clock, rules)
    keys = [line.charge.key for line in planner.lines(ALICE, "chat", Ask(0, 0))]
    hold = await ledger.reserve(planner.lines(ALICE, "chat", Ask(500, 100)))
    assert isinstance(hold, Hold)
    assert await ledger.values(keys) == [500, 100]
    ledger.settle(hold, Spent(200, 40, 30, 10, "ml", "alice", "chat"))
    assert await ledger.values(keys) == [200, 40]
    failed = await ledger.reserve(planner.lines(ALICE, "chat", Ask(500, 100)))
    assert isinstance(failed, Hold)
    ledger.settle(failed, None)  # upstream failure: release everything
    assert await ledger.values(keys) == [200, 40]


async def test_subjects_are_counted_separately(make_store: StoreFactory) -> None:
    clock = Clock("2026-05-05T12:00:00")
    ledger, planner = setup(make_store, clock, [budget("per-team", "team", "*", tokens=10)])
    assert isinstance(await ledger.reserve(planner.lines(ALICE, "c", Ask(0, 10))), Hold)
    assert isinstance(await ledger.reserve(planner.lines(ALICE, "c", Ask(0, 1))), Denial)
    assert isinstance(await ledger.reserve(planner.lines(BOB, "c", Ask(0, 10))), Hold)
    assert planner.lines(Principal("k3", "carol"), "c", Ask(0, 1)) == [], "no team: no budget"


async def test_day_window_rolls_over_at_local_midnight(make_store: StoreFactory) -> None:
    zone = "America/New_York"
    clock = Clock("2026-03-07T23:59:30", zone)
    ledger, planner = setup(make_store, clock, [budget("d", "team", "ml", tokens=100)], zone=zone)
    assert isinstance(await ledger.reserve(planner.lines(ALICE, "c", Ask(0, 100))), Hold)
    denied = await ledger.reserve(planner.lines(ALICE, "c", Ask(0, 1)))
    assert isinstance(denied, Denial)
    message = denied.line.describe(ZoneInfo(zone), denied.current, clock())
    assert "resets at 2026-03-08T00:00:00-05:00" in message and "100 of 100 tokens" in message
    clock.set("2026-03-08T00:00:01", zone)
    hold = await ledger.reserve(planner.lines(ALICE, "c", Ask(0, 100)))
    assert isinstance(hold, Hold)
    window = hold.lines[0].window
    assert window.end is not None and window.end - window.start == 23 * 3600, "DST day"


async def test_month_window_is_calendar_aligned(make_store: StoreFactory) -> None:
    zone = "Europe/Paris"
    clock = Clock("2026-01-31T23:59:59", zone)
    rules = [budget("m", "org", "acme", usd_nanos=5, window="month")]
    ledger, planner = setup(make_store, clock, rules, zone=zone)
    assert isinstance(await ledger.reserve(planner.lines(ALICE, "c", Ask(5, 0))), Hold)
    assert isinstance(await ledger.reserve(planner.lines(BOB, "c", Ask(1, 0))), Denial)
    clock.set("2026-02-01T00:00:00", zone)
    assert isinstance(await ledger.reserve(planner.lines(BOB, "c", Ask(5, 0))), Hold)


async def test_total_window_never_resets(make_store: StoreFactory) -> None:
    clock = Clock("2026-01-01T00:00:00")
    ledger, planner = setup(
        make_store, clock, [budget("t", "global", None, tokens=5, window="total")]
    )
    assert isinstance(await ledger.reserve(planner.lines(ALICE, "c", Ask(0, 5))), Hold)
    clock.set("2027-06-01T00:00:00")
    assert isinstance(await ledger.reserve(planner.lines(BOB, "c", Ask(0, 1))), Denial)


async def test_rate_limit_per_minute_with_retry_after(make_store: StoreFactory) -> None:
    clock = Clock("2026-05-05T12:00:15")
    rates = [RateRule("rpm", "key", "*", None, rpm=3, tpm=None)]
    ledger, planner = setup(make_store, clock, rates=rates)
    for _ in range(3):
        assert isinstance(await ledger.reserve(planner.lines(ALICE, "chat", Ask(0, 5))), Hold)
    denied = await ledger.reserve(planner.lines(ALICE, "chat", Ask(0, 5)))
    assert isinstance(denied, Denial) and denied.line.kind == "rate"
    assert denied.line.window.seconds_left(clock()) == 45
    assert isinstance(await ledger.reserve(planner.lines(BOB, "chat", Ask(0, 5))), Hold)
    clock.set("2026-05-05T12:01:00")
    assert isinstance(await ledger.reserve(planner.lines(ALICE, "chat", Ask(0, 5))), Hold)


async def test_tokens_per_minute_for_one_model(make_store: StoreFactory) -> None:
    clock = Clock("2026-05-05T12:00:00")
    rates = [RateRule("tpm", "model", "chat", None, rpm=None, tpm=100)]
    ledger, planner = setup(make_store, clock, rates=rates)
    assert isinstance(await ledger.reserve(planner.lines(ALICE, "chat", Ask(0, 60))), Hold)
    assert isinstance(await ledger.reserve(planner.lines(BOB, "chat", Ask(0, 60))), Denial)
    assert planner.lines(BOB, "embed", Ask(0, 60)) == [], "other models are not limited"


async def test_soft_budget_counts_without_refusing(make_store: StoreFactory) -> None:
    clock = Clock("2026-05-05T12:00:00")
    rules = [budget("soft", "team", "ml", tokens=10, enforcement="soft")]
    ledger, planner = setup(make_store, clock, rules)
    hold = await ledger.reserve(planner.lines(ALICE, "c", Ask(0, 25)))
    assert isinstance(hold, Hold) and hold.values == [25]
    assert not hold.lines[0].hard and hold.lines[0].limit == 10


async def test_spend_is_tallied_by_team_key_and_model(make_store: StoreFactory) -> None:
    clock = Clock("2026-05-05T12:00:00")
    ledger, _ = setup(make_store, clock)
    ledger.record(Spent(1500, 30, 20, 10, "ml", "alice", "chat"))
    ledger.record(Spent(500, 10, 5, 5, "ml", "alice2", "embed"))
    ledger.record(Spent(100, 3, 3, 0, None, "bob", "chat"))
    by_team = await ledger.spend("team", "day")
    assert by_team["ml"] == {"usd": 2000, "in": 25, "out": 15, "req": 2}
    assert by_team["-"]["usd"] == 100
    by_model = await ledger.spend("model", "month")
    assert by_model["chat"]["req"] == 2 and by_model["embed"]["usd"] == 500
    clock.set("2026-05-06T00:00:01")
    assert await ledger.spend("team", "day") == {}, "a new day starts empty"
    assert (await ledger.spend("key", "month"))["alice"]["usd"] == 1500


async def test_a_dead_gateways_reservation_is_released(make_store: StoreFactory) -> None:
    clock = Clock("2026-05-05T12:00:00")
    ledger, planner = setup(make_store, clock, [budget("b", "team", "ml", usd_nanos=1000)])
    key = planner.lines(ALICE, "c", Ask(0, 0))[0].charge.key
    assert isinstance(await ledger.reserve(planner.lines(ALICE, "c", Ask(400, 0))), Hold)
    # ... and its gateway dies: nothing will ever settle it.
    clock.set("2026-05-05T12:00:59")
    assert await ledger.sweep() == 0, "not before the hold expires"
    clock.set("2026-05-05T12:01:01")
    if ledger.shared:
        assert await ledger.sweep() == 1
        assert await ledger.values([key]) == [0]
    else:  # one process: a reservation cannot outlive the gateway holding it
        assert await ledger.sweep() == 0


async def test_a_call_settling_after_its_hold_was_swept_is_charged_once(
    make_store: StoreFactory,
) -> None:
    clock = Clock("2026-05-05T12:00:00")
    ledger, planner = setup(make_store, clock, [budget("b", "team", "ml", usd_nanos=1000)])
    key = planner.lines(ALICE, "c", Ask(0, 0))[0].charge.key
    slow = await ledger.reserve(planner.lines(ALICE, "c", Ask(400, 0)))
    assert isinstance(slow, Hold)
    clock.set("2026-05-05T12:02:00")
    await ledger.sweep()
    ledger.settle(slow, Spent(250, 0, 0, 0, "ml", "alice", "c"))
    assert await ledger.values([key]) == [250], "its real cost, neither 400 nor -150"


async def test_a_lasting_reservation_outlives_holds_and_settles_by_parts(
    make_store: StoreFactory,
) -> None:
    """A batch's reservation: never swept as a dead gateway's hold; each part settled takes
    only its difference, on every store."""
    clock = Clock("2026-05-05T12:00:00")
    ledger, planner = setup(make_store, clock, [budget("b", "team", "ml", usd_nanos=1000)])
    key = planner.lines(ALICE, "c", Ask(0, 0))[0].charge.key
    held = await ledger.reserve(planner.lines(ALICE, "c", Ask(600, 0)), lasting=True)
    assert isinstance(held, Hold) and held.tag is None
    clock.set("2026-05-05T18:00:00")  # long past any hold's expiry (60 s here)
    assert await ledger.sweep() == 0
    spent = Spent(130, 0, 0, 0, "ml", "alice", "c")
    ledger.settle_reserved([(key, 200, 130, 3600)], spent)  # one line: worst 200, cost 130
    ledger.settle_reserved([(key, 400, 0, 3600)], None)  # the rest never ran
    assert await ledger.values([key]) == [130]


async def test_a_budget_created_mid_window_starts_from_what_was_spent(
    make_store: StoreFactory,
) -> None:
    """It once started at $0 whatever `tollgate spend` said the team had spent that day."""
    clock = Clock("2026-05-05T12:00:00")
    ledger, _ = setup(make_store, clock)
    ledger.record(Spent(1500, 30, 20, 10, "ml", "alice", "chat", user="a@x", org="acme"))
    await ledger.book.flush()
    for scope, subject in (("team", "ml"), ("user", "a@x"), ("org", "acme"), ("global", None)):
        rule = budget(f"new-{scope}", scope, subject, usd_nanos=2000)
        planner = Planner([rule], [], ZoneInfo("UTC"), clock)
        denied = await ledger.reserve(planner.lines(ALICE_FULL, "c", Ask(600, 0)))
        assert isinstance(denied, Denial) and denied.current == 1500, scope
        assert isinstance(await ledger.reserve(planner.lines(ALICE_FULL, "c", Ask(500, 0))), Hold)
    tokens = budget("new-tokens", "team", "ml", tokens=40)
    planner = Planner([tokens], [], ZoneInfo("UTC"), clock)
    assert isinstance(await ledger.reserve(planner.lines(ALICE_FULL, "c", Ask(0, 11))), Denial)
    clock.set("2026-05-06T00:00:01")  # the next window starts empty
    rule = budget("next-day", "team", "ml", usd_nanos=2000)
    planner = Planner([rule], [], ZoneInfo("UTC"), clock)
    assert isinstance(await ledger.reserve(planner.lines(ALICE_FULL, "c", Ask(1900, 0))), Hold)


def test_key_budgets_count_by_key_id_not_by_name() -> None:
    """Two keys that share a name (a static key and a virtual one, before names were unique;
    a key re-created under a retired name) never share counters."""
    clock = Clock("2026-05-05T12:00:00")
    rules = [budget("per-key", "key", "*", usd_nanos=1000)]
    rates = [RateRule("rpm", "key", "*", None, 10, None)]
    planner = Planner(rules, rates, ZoneInfo("UTC"), clock)
    one = Principal(key_id="k-one", name="shared")
    two = Principal(key_id="k-two", name="shared")
    keys = [{line.charge.key for line in planner.lines(p, "c", Ask(1, 1))} for p in (one, two)]
    assert not keys[0] & keys[1]
    assert all("k-one" in k for k in keys[0])
