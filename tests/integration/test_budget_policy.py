"""The budgets policy in the real pipeline (simulated backend), on both counter stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.budget_rules import BudgetRule
from gateway.call import Call, CallRecord, Principal, Usage
from gateway.errors import PolicyDenied, UpstreamUnavailable
from gateway.pipeline import Pipeline
from gateway.recorder import Recorder as CallRecorder
from gateway.runtime import Runtime
from tests.integration.conftest import Clock, StoreFactory
from tests.support.runtime import make_deps, runtime_from

CONFIG = """
version: 1
auth: {mode: open}
backends:
  sim:
    type: sim
    time_scale: 0
    models: [{name: m, input_price_per_mtok: 1.0, output_price_per_mtok: 2.0}]
  broken:
    type: sim
    time_scale: 0
    faults: {error_rate: 1.0, error_statuses: [500]}
    models: [{name: m}]
models:
  chat: {backend: sim, model: m}
  bad: {backend: broken, model: m}
limits:
  prompt_margin: 0
  budget_status: STATUS
  budgets:
    - {name: ml-daily, scope: team, subject: ml, usd: "0.0004", window: day}
    - {name: ml-soft, scope: team, subject: ml, tokens: 60, enforcement: soft}
  rate_limits:
    - {name: per-key, scope: key, subject: "*", rpm: 5}
"""

ML = Principal(key_id="k1", name="alice", team="ml")
OTHER = Principal(key_id="k2", name="bob", team="web")


class Recorder:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def submit(self, record: CallRecord) -> None:
        self.records.append(record)


class Harness:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sink = Recorder()
        self.pipeline = Pipeline(CallRecorder(self.sink, TokenCounter()))  # type: ignore[arg-type]
        self.ledger = runtime.chain.plugins()[-1].limits.ledger

    async def call(self, principal: Principal = ML, **body: Any) -> Call:
        c = make_call(principal, **body)
        reply = await self.pipeline.handle(c, self.runtime)
        if reply.stream is not None:
            async for _ in reply.stream:
                pass
            await reply.stream.close()
        else:
            await reply.done()
        return c

    async def until_denied(self, limit: int = 20, **body: Any) -> tuple[int, PolicyDenied]:
        """Calls until one is refused: how many were served, and the refusal."""
        for served in range(limit):
            try:
                await self.call(**body)
            except PolicyDenied as err:
                return served, err
        raise AssertionError(f"no call was refused in {limit}")

    async def used(self, name: str) -> int:
        table = await self.ledger.spend("team", "day")
        return table.get(name, {}).get("usd", 0)


def make_call(principal: Principal, model: str = "chat", **extra: Any) -> Call:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    body.update(extra)
    stream = body.get("stream") is True
    return Call("r", "openai", "chat.completions", model, body, stream, False, principal=principal)


@pytest.fixture
async def harness(
    make_store: StoreFactory, tmp_path: Path, tokens: TokenCounter, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    status = getattr(request, "param", 429)
    clock = Clock("2026-05-05T12:00:00")
    transport = httpx.AsyncHTTPTransport()
    deps = make_deps(transport, tokens, store=make_store(clock), clock=clock)
    runtime = runtime_from(tmp_path / "t.yaml", CONFIG.replace("STATUS", str(status)), deps)
    yield Harness(runtime)
    for backend in runtime.backends.values():
        await backend.aclose()
    await transport.aclose()


def cost(usage: Usage) -> int:
    return usage.input_tokens * 1000 + usage.output_tokens * 2000  # $1 / $2 per 1M, in nanos


async def test_served_call_commits_its_real_cost(harness: Harness) -> None:
    await harness.call()
    (record,) = harness.sink.records
    assert record.usage is not None and record.status == 200
    assert await harness.used("ml") == cost(record.usage)
    hold_keys = [f"b:ml-daily:team ml:day:{1777939200}:usd"]
    assert await harness.ledger.values(hold_keys) == [cost(record.usage)], (
        "the reservation (prompt + max_tokens) was replaced by the actual cost"
    )


async def test_exhausted_budget_is_refused_with_its_name_and_reset(harness: Harness) -> None:
    served, err = await harness.until_denied(max_tokens=40)
    assert served >= 2
    assert (err.status, err.error_type, err.code) == (429, "insufficient_quota", "budget_exceeded")
    assert "ml-daily" in err.message and "resets at 2026-05-06T00:00:00+00:00" in err.message
    assert await harness.used("ml") <= 400_000
    await harness.call(OTHER, max_tokens=40)  # another team is not affected


@pytest.mark.parametrize("harness", [402], indirect=True)
async def test_budget_status_can_be_402(harness: Harness) -> None:
    _, err = await harness.until_denied(max_tokens=40)
    assert err.status == 402


async def test_rate_limit_gives_retry_after(harness: Harness) -> None:
    for _ in range(5):
        await harness.call(OTHER, max_tokens=1)
    with pytest.raises(PolicyDenied) as info:
        await harness.call(OTHER, max_tokens=1)
    err = info.value
    assert (err.status, err.error_type, err.code) == (429, "requests", "rate_limit_exceeded")
    assert err.headers["retry-after"] == "60"
    assert "per-key" in err.message


async def test_stream_commits_reported_usage(harness: Harness) -> None:
    await harness.call(stream=True, max_tokens=30)
    (record,) = harness.sink.records
    assert record.usage is not None and record.usage.output_tokens == 30
    assert await harness.used("ml") == cost(record.usage)


async def test_abandoned_stream_commits_what_was_generated(harness: Harness) -> None:
    c = make_call(ML, stream=True, max_tokens=100)
    reply = await harness.pipeline.handle(c, harness.runtime)
    assert reply.stream is not None
    chunks = 0
    async for _ in reply.stream:
        chunks += 1
        if chunks == 4:
            break
    await reply.stream.close(disconnected=True)
    (record,) = harness.sink.records
    assert record.disconnected and record.usage is not None and record.usage.estimated
    used = await harness.used("ml")
    assert used == cost(record.usage)
    assert 0 < record.usage.output_tokens < 100, "charged for what was relayed, not the cap"


async def test_upstream_failure_releases_the_reservation(harness: Harness) -> None:
    c = make_call(ML, model="bad")
    with pytest.raises(UpstreamUnavailable) as info:
        await harness.pipeline.handle(c, harness.runtime)
    assert info.value.status == 502 and "HTTP 500" in info.value.message
    assert await harness.used("ml") == 0
    key = f"b:ml-daily:team ml:day:{1777939200}:usd"
    assert await harness.ledger.values([key]) == [0]


async def test_soft_budget_labels_the_call_and_lets_it_through(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.call(max_tokens=40)
    second = await harness.call(max_tokens=40)
    third = await harness.call(max_tokens=40)
    assert second.labels.get("budget.soft_exceeded") == "ml-soft"
    assert third.labels.get("budget.soft_exceeded") == "ml-soft"
    assert any("soft budget 'ml-soft'" in d.reason for d in second.decisions)
    alerts = [r for r in caplog.records if "soft budget 'ml-soft'" in r.getMessage()]
    assert len(alerts) == 1, "alerted once per window, not once per call"


async def test_run_time_budgets_apply_without_reload(
    make_store: StoreFactory, tmp_path: Path, tokens: TokenCounter
) -> None:
    clock = Clock("2026-05-05T12:00:00")
    current: list[tuple[BudgetRule, ...]] = [()]
    transport = httpx.AsyncHTTPTransport()
    deps = make_deps(
        transport, tokens, store=make_store(clock), clock=clock, sql_budgets=lambda: current[0]
    )
    text = CONFIG.replace("STATUS", "429").split("limits:")[0]
    h = Harness(runtime_from(tmp_path / "t.yaml", text, deps))
    await h.call(OTHER)
    current[0] = (BudgetRule("web", "team", "web", None, 10, "day", "hard"),)
    with pytest.raises(PolicyDenied, match="'web'"):
        await h.call(OTHER)
    await h.call(ML)
    await transport.aclose()
