"""Budget alerts delivered: claimed once per fleet in SQL (SQLite and PostgreSQL), posted to a
local webhook receiver as JSON and as a Slack message, retried with back-off, recorded as audit
events."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import Engine, select

from gateway.accounting.alerts import Crossing
from gateway.accounting.windows import window_at
from gateway.alerting import Alerter
from gateway.call import CallRecord
from gateway.config.alerts_schema import AlertsConfig, WebhookConfig
from gateway.stores.migrate import upgrade
from gateway.stores.sql import budget_alerts, make_engine
from tests.support.services import postgres_database

NOW = 1_800_000_000.0
WINDOW = window_at("month", NOW, ZoneInfo("UTC"))


@contextlib.contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[Engine]:
    if kind == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path}/alerts.db")
        upgrade(engine)
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        yield engine
        engine.dispose()


class Receiver:
    """A webhook endpoint that answers each POST with the next status of `statuses` (then
    200), and keeps what it was sent."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[str, dict[str, object]]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.received.append((request.url.path, json.loads(request.content)))
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status, headers={"retry-after": "3"} if status == 429 else {})


class Journal:
    accepting = True

    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def append(self, record: CallRecord) -> None:
        self.records.append(record)


def crossing(threshold: int = 80, notify: tuple[str, ...] | None = None) -> Crossing:
    return Crossing("ml-month", "team ml", WINDOW, threshold, "usd", 400_120_000_000,
                    500_000_000_000, "hard", notify)  # fmt: skip


SETTINGS = AlertsConfig(
    webhooks=(
        WebhookConfig(name="finance", url="http://hooks.test/json"),
        WebhookConfig(name="slack", url_env="TG_SLACK_URL", format="slack"),
    ),
    attempts=4,
    backoff_seconds=1.0,
    max_backoff_seconds=5.0,
)


def alerter(engine: Engine, receiver: Receiver, journal: Journal, waits: list[float]) -> Alerter:
    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return Alerter(
        engine,
        lambda: SETTINGS,
        journal,
        env={"TG_SLACK_URL": "http://hooks.test/slack"},
        transport=httpx.MockTransport(receiver.handler),
        clock=lambda: NOW,
        sleep=sleep,
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_an_alert_fires_once_per_fleet_to_every_webhook_and_is_audited(
    kind: str, tmp_path: Path
) -> None:
    receiver, waits = Receiver(), []
    with database(kind, tmp_path) as engine:
        journals = [Journal(), Journal()]
        fleet = [alerter(engine, receiver, j, waits) for j in journals]
        for member in fleet:
            member.start()
        for member in fleet:  # two gateways see the same crossing
            member.crossed(crossing())
        for member in fleet:
            await member.idle()
            await member.aclose()
        with engine.connect() as conn:
            rows = conn.execute(select(budget_alerts)).mappings().all()
    assert [(r["budget"], r["subject"], r["threshold"]) for r in rows] == [
        ("ml-month", "team ml", 80)
    ]
    assert sorted(path for path, _ in receiver.received) == ["/json", "/slack"]
    sent = dict(receiver.received)
    body = sent["/json"]
    assert body["type"] == "tollgate.budget_alert" and body["threshold_percent"] == 80
    assert (body["used"], body["limit"], body["unit"]) == ("400.12", "500", "usd")
    assert body["window"]["kind"] == "month" and body["window"]["end"].endswith("Z")
    assert "passed 80% of its month limit: $400.12 of $500.00" in sent["/slack"]["text"]
    events = [r for j in journals for r in j.records]
    assert len(events) == 1, "recorded once, by the gateway that fired it"
    event = events[0]
    assert (event.kind, event.endpoint, event.model, event.status) == (
        "alert", "budget_alert", "ml-month", 200
    )  # fmt: skip
    assert event.principal.team == "ml"
    assert "webhook slack: delivered (1 tries, HTTP 200)" in [d.reason for d in event.decisions]
    assert waits == []


async def test_failures_are_retried_with_back_off_and_a_refusal_is_not(tmp_path: Path) -> None:
    receiver, waits, journal = Receiver([503, 429, 200]), [], Journal()
    with database("sqlite", tmp_path) as engine:
        member = alerter(engine, receiver, journal, waits)
        member.start()
        member.crossed(crossing(notify=("finance",)))
        await member.idle()
        # ...a receiver that refuses the alert outright (400) is not asked again.
        receiver.statuses = [400]
        member.crossed(crossing(threshold=100, notify=("finance",)))
        await member.idle()
        await member.aclose()
    assert [path for path, _ in receiver.received] == ["/json"] * 4
    assert waits == [1.0, 3.0]  # doubled back-off, stretched to the receiver's Retry-After
    delivered, refused = journal.records
    assert delivered.status == 200 and "(3 tries, HTTP 200)" in delivered.decisions[1].reason
    assert refused.status == 502 and refused.error_type == "webhook_failed"
    assert "not delivered (1 tries, HTTP 400)" in refused.decisions[1].reason


async def test_an_unreachable_receiver_is_given_up_after_its_attempts(tmp_path: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    waits: list[float] = []
    journal = Journal()
    with database("sqlite", tmp_path) as engine:

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        member = Alerter(engine, lambda: SETTINGS, journal, env={},
                         transport=httpx.MockTransport(down), sleep=sleep)  # fmt: skip
        member.start()
        member.crossed(crossing())
        await member.idle()
        await member.aclose()
    assert waits == [1.0, 2.0, 4.0]  # 4 attempts, back-off capped at 5 s
    reasons = [d.reason for d in journal.records[0].decisions]
    assert "webhook finance: not delivered (4 tries, ConnectError: connection refused)" in reasons
    assert (
        "webhook slack: not delivered (0 tries, environment variable TG_SLACK_URL not set)"
        in reasons
    )
