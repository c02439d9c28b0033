"""The spend dashboard in a real browser (Debian's chromium, headless, driven by Playwright; no
browser download): traffic from several teams, then the page must show the same totals as the
audit log, in its charts and tables, and the range selector must change what it shows.
Screenshots are saved under test-output/ for review."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import func, insert, select

from gateway.audit import tables as audit_tables
from gateway.stores.sql import make_engine
from gateway.telemetry.tables import SUMS, spend
from tests.support.servers import GatewayProcess
from tests.support.wait import until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
CONFIG = """
version: 1
server: {reload_poll_seconds: 0}
auth:
  keys:
    - {name: alice, key_env: TG_A, team: ml}
    - {name: bob, key_env: TG_B, team: web}
    - {name: carol, key_env: TG_C, team: search}
backends:
  sim:
    type: sim
    time_scale: 0
    models:
      - {name: big, input_price_per_mtok: 30.0, output_price_per_mtok: 60.0}
      - {name: small, input_price_per_mtok: 5.0, output_price_per_mtok: 10.0}
models:
  chat:
    tiers: {fp16: [{backend: sim, model: big}], int4: [{backend: sim, model: small}]}
    default_tier: int4   # served by the cheaper tier, its savings measured against fp16
    reference: fp16
limits:
  budgets:
    - {name: ml-monthly, scope: team, subject: ml, usd: "0.05", window: month}
audit: {ship_interval_ms: 10}
telemetry: {rollups: {flush_seconds: 0.2}}
"""
KEYS = {
    "TG_A": "tg-browser-alice-0001",
    "TG_B": "tg-browser-bob-00002",
    "TG_C": "tg-browser-carol-003",
}
CALLS = {"TG_A": 5, "TG_B": 3, "TG_C": 2}
ARCHIVE_NANOS = 7_000_000_000  # $7, three days ago: in "7 days", not in "24 hours"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path]]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is needed for the dashboard test: apt-get install chromium "
            "(.ci/run installs it)"
        )
    config = tmp_path / "tollgate.yaml"
    config.write_text(CONFIG)
    db = tmp_path / "tollgate.db"
    env = {**KEYS, "TOLLGATE_DATABASE_URL": f"sqlite:///{db}", "TOLLGATE_ADMIN_KEY": "",
           "TOLLGATE_DASHBOARD_KEY": ""}  # fmt: skip
    with GatewayProcess(config, env=env) as gw:
        yield gw, db


def audit_by_team(db: Path) -> dict[str, Decimal]:
    engine = make_engine(f"sqlite:///{db}")
    e = audit_tables.events
    with engine.connect() as conn:
        rows = conn.execute(select(e.c.team, func.sum(e.c.cost_nanousd)).group_by(e.c.team)).all()
    engine.dispose()
    return {team: Decimal(nanos) / 10**9 for team, nanos in rows}


def audit_count(db: Path) -> int:
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(audit_tables.events)).scalar()
    engine.dispose()
    return int(count or 0)


def add_archive(db: Path) -> None:
    engine = make_engine(f"sqlite:///{db}")
    start = (int(time.time()) - 3 * 86400) // 3600 * 3600
    with engine.begin() as conn:
        for granularity, width in (("minute", 60), ("hour", 3600), ("day", 86400)):
            row = {name: 0 for name in SUMS}
            row.update(requests=1, cost_nanousd=ARCHIVE_NANOS, counterfactual_nanousd=ARCHIVE_NANOS)
            conn.execute(
                insert(spend).values(
                    granularity=granularity, bucket_start=start // width * width, team="archive",
                    key_id="k-old", model="chat", tier="fp16", cache="miss", **row,
                )
            )  # fmt: skip
    engine.dispose()


def legend(page: Page) -> dict[str, Decimal]:
    items = page.locator("#legend [data-series]")
    return {
        items.nth(i).get_attribute("data-series") or "": Decimal(
            items.nth(i).get_attribute("data-usd") or "0"
        )
        for i in range(items.count())
    }


def test_dashboard_renders_the_audited_totals_and_the_range_selector_works(
    served: tuple[GatewayProcess, Path],
) -> None:
    gw, db = served
    for env, count in CALLS.items():
        sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEYS[env], max_retries=0)
        for i in range(count):
            sdk.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=20
            )
    # Every call audited (not just one per team: a team's later calls may still be shipping).
    until(lambda: audit_count(db) == sum(CALLS.values()), timeout=20)
    expected = audit_by_team(db)
    add_archive(db)
    OUTPUT.mkdir(exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(gw.url + "/dashboard")
        page.wait_for_selector("body[data-state=ready]", timeout=15_000)

        quantum = Decimal("0.000000001")
        assert legend(page) == {t: v.quantize(quantum) for t, v in expected.items()}
        total = Decimal(page.get_attribute("#total-spend", "data-usd") or "0")
        assert total == sum(expected.values()).quantize(quantum)
        assert page.inner_text("#total-requests") == "10"
        assert page.locator("#chart-spend svg rect").count() >= 3  # one segment per team at least
        assert page.get_attribute("#chart-spend svg", "data-series") == "3"
        assert float(page.get_attribute("#total-saved", "data-usd") or "0") > 0  # int4 tier
        tier = page.locator("#savings [data-kind=tier_routing]").get_attribute("data-usd")
        assert float(tier or "0") > 0
        keys = page.locator("#top-keys tbody tr")
        assert keys.count() == 3
        assert keys.first.inner_text().startswith("alice · ml")  # most spend: 5 calls
        budget = page.locator("#budgets [data-budget=ml-monthly]")
        assert budget.count() == 1 and budget.locator("polyline").count() == 1
        assert "of $0.0500" in budget.inner_text()
        assert page.inner_text("#latency").split(" / ")[0].endswith("ms")
        page.screenshot(path=str(OUTPUT / "dashboard-24h.png"), full_page=True)

        page.select_option("#range", "7d")
        page.wait_for_selector("body[data-range='7d'][data-state=ready]", timeout=15_000)
        seven = legend(page)
        assert seven["archive"] == Decimal(ARCHIVE_NANOS) / 10**9
        assert Decimal(page.get_attribute("#total-spend", "data-usd") or "0") == (
            total + Decimal(ARCHIVE_NANOS) / 10**9
        )
        assert "range=7d" in page.url

        page.select_option("#stack", "tier")
        page.wait_for_selector("#stack-label:has-text('by tier')", timeout=15_000)
        assert set(legend(page)) == {"fp16", "int4"}
        page.screenshot(path=str(OUTPUT / "dashboard-7d-by-tier.png"), full_page=True)

        page.select_option("#range", "1h")
        page.wait_for_selector("body[data-range='1h'][data-state=ready]", timeout=15_000)
        assert "archive" not in legend(page)

        # Small sums keep their digits; a budget refusing calls with money left says so.
        assert page.evaluate("usd(0.000054075)") == "$0.000054"
        assert page.evaluate("usd(0)") == "$0.0000"
        page.evaluate(
            """renderBudgets({generated_at: 0, budgets: [{name: "tiny", scope: "team",
            subject: "x", limit_usd: 0.00005, spent_usd: 0.00001, refused: 3,
            window: {kind: "day", start: 0, end: 86400}, burn: [], projected_exhaustion: null}]})"""
        )
        tiny = page.locator("#budgets [data-budget=tiny]")
        assert tiny.get_attribute("data-refusing") == "true"
        assert "refusing calls: 3 refused this window, $0.000040 left" in tiny.inner_text()
        browser.close()
