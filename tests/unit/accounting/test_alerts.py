"""Which budget alert thresholds a reservation shows crossed, and that each fires once."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from gateway.accounting.alerts import AlertWatch, Crossing
from gateway.accounting.limits import Ask, Line, Planner
from gateway.budget_rules import BudgetRule
from gateway.call import Principal

UTC = ZoneInfo("UTC")
ML = Principal(key_id="k1", name="alice", team="ml")


class Sink:
    def __init__(self) -> None:
        self.crossings: list[Crossing] = []

    def crossed(self, crossing: Crossing) -> None:
        self.crossings.append(crossing)


def lines(alert_at: tuple[int, ...] | None, default: tuple[int, ...] = ()) -> list[Line]:
    rule = BudgetRule("ml-month", "team", "ml", 1000, None, "month", "hard", alert_at=alert_at,
                      notify=("ops",))  # fmt: skip
    planner = Planner((rule,), (), UTC, lambda: 1_800_000_000.0, default)
    return planner.lines(ML, "chat", Ask(usd_nanos=100, tokens=10))


def test_the_highest_crossed_threshold_fires_once_per_window() -> None:
    sink = Sink()
    watch = AlertWatch(sink)
    planned = lines((50, 80, 100))
    watch.observe(planned, [549])  # 449 used before this call's 100: under 50%
    assert sink.crossings == []
    watch.observe(planned, [600])  # 500 used: 50%
    watch.observe(planned, [650])
    assert [c.threshold for c in sink.crossings] == [50]
    watch.observe(planned, [1000])  # 900 used: jumps past 80 (fires 80, not 50 again)
    assert [c.threshold for c in sink.crossings] == [50, 80]
    first = sink.crossings[0]
    assert (first.budget, first.subject, first.unit, first.used, first.limit) == (
        "ml-month", "team ml", "usd", 500, 1000
    )  # fmt: skip
    assert first.notify == ("ops",) and first.enforcement == "hard"


def test_a_refusal_counts_what_was_already_used() -> None:
    sink = Sink()
    watch = AlertWatch(sink)
    planned = lines((100,))
    watch.observe(planned, [1000], own=False)  # refused at exactly the limit
    assert [c.threshold for c in sink.crossings] == [100]


def test_the_default_applies_only_to_budgets_without_their_own() -> None:
    assert lines(None, default=(90,))[0].alert_at == (90,)
    assert lines((10,), default=(90,))[0].alert_at == (10,)
    sink = Sink()
    AlertWatch(sink).observe(lines(None), [2000])  # no thresholds at all: nothing
    assert sink.crossings == []
