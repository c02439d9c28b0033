"""A call that needed more than one try is audited with each of them (SQLite and PostgreSQL):
its attempts, what the failed ones cost (a negative `resilience` saving, so the money still adds
up), all hash-chained, so `verify` names a changed attempt."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select, update

from gateway.accounting.tokens import TokenCounter
from gateway.audit import tables
from gateway.audit.verify import verify
from gateway.call import Call, Principal
from tests.support.audit import AuditedPipeline, audit_engine, events, signer
from tests.support.runtime import make_deps, runtime_from

CONFIG = """
version: 1
auth: {mode: open}
backends:
  down: {type: sim, time_scale: 0, faults: {error_rate: 1.0, error_statuses: [503]},
         models: [{name: big, input_price_per_mtok: 3, output_price_per_mtok: 15}]}
  stuck: {type: sim, time_scale: 0, timeouts: {total: 0.2}, faults: {added_latency_ms: 3000},
          models: [{name: big, input_price_per_mtok: 3, output_price_per_mtok: 15}]}
  ok: {type: sim, time_scale: 0,
       models: [{name: small, input_price_per_mtok: 0.5, output_price_per_mtok: 1.5}]}
models:
  chat:
    tiers: {fp16: [{backend: down, model: big}], int4: [{backend: ok, model: small}]}
    default_tier: fp16
    fallbacks: [int4]
  slow:
    tiers: {fp16: [{backend: stuck, model: big}], int4: [{backend: ok, model: small}]}
    default_tier: fp16
    fallbacks: [int4]
  plain: {backend: ok, model: small}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with audit_engine(request.param, tmp_path) as made:
        yield made


def call(rid: str, model: str) -> Call:
    body = {"model": model, "messages": [{"role": "user", "content": f"hello {rid}"}],
            "max_tokens": 5}  # fmt: skip
    return Call(rid, "openai", "chat.completions", model, body, False, False,
                principal=Principal("k", "k", team="t"))  # fmt: skip


@pytest.fixture
async def audited(engine: Engine, tmp_path: Path) -> AsyncIterator[AuditedPipeline]:
    transport = httpx.AsyncHTTPTransport()
    runtime = runtime_from(tmp_path / "t.yaml", CONFIG, make_deps(transport, TokenCounter()))
    made = AuditedPipeline(runtime, engine, tmp_path / "journal")
    for rid, model in (("fell-back", "chat"), ("timed-out", "slow"), ("plain", "plain")):
        reply = await made.pipeline.handle(call(rid, model), runtime)
        reply.seal()
        await reply.done()
    made.close()
    yield made
    for backend in runtime.backends.values():
        await backend.aclose()
    await transport.aclose()


def attempts(engine: Engine, seq: int) -> list[tuple[object, ...]]:
    at = tables.attempts
    query = (
        select(at.c.backend, at.c.tier, at.c.status, at.c.error_type, at.c.consumed_tokens)
        .where(at.c.seq == seq)
        .order_by(at.c.position)
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


async def test_every_attempt_is_recorded_and_what_failed_ones_cost_adds_up(
    audited: AuditedPipeline,
) -> None:
    rows = {r.request_id: r for r in events(audited.engine)}
    fell = rows["fell-back"]
    assert (fell.backend, fell.tier, fell.attempts, fell.status) == ("ok", "int4", 2, 200)
    assert attempts(audited.engine, fell.seq) == [
        ("down", "fp16", 503, "upstream_overloaded", None),
        ("ok", "int4", 200, None, None),
    ]
    assert fell.savings_resilience_nanousd == 0  # a 503 consumed nothing

    slow = rows["timed-out"]
    tried = attempts(audited.engine, slow.seq)
    assert [t[:4] for t in tried] == [("stuck", "fp16", 0, "upstream_timeout"),
                                      ("ok", "int4", 200, None)]  # fmt: skip
    consumed = tried[0][4]
    assert isinstance(consumed, int) and consumed > 0
    assert slow.savings_resilience_nanousd == -consumed * 3_000  # its prompt, at fp16's price
    parts = sum(getattr(slow, c) for c in tables.SAVINGS_COLUMNS) + slow.savings_resilience_nanousd
    assert parts == slow.counterfactual_nanousd - slow.cost_nanousd

    plain = rows["plain"]
    assert plain.attempts == 1 and attempts(audited.engine, plain.seq) == []
    report = verify(audited.engine, signer())
    assert report.ok, [p.describe() for p in report.problems]


@pytest.mark.parametrize("change", ["attempt", "count", "resilience"])
async def test_verify_names_a_changed_attempt(audited: AuditedPipeline, change: str) -> None:
    rows = {r.request_id: r for r in events(audited.engine)}
    target = rows["timed-out"]
    at, ev = tables.attempts, tables.events
    with audited.engine.begin() as conn:
        if change == "attempt":
            conn.execute(update(at).where(at.c.seq == target.seq, at.c.position == 0)
                         .values(error_type="upstream_overloaded"))  # fmt: skip
        elif change == "count":
            conn.execute(update(ev).where(ev.c.id == target.id).values(attempts=1))
        else:
            conn.execute(update(ev).where(ev.c.id == target.id)
                         .values(savings_resilience_nanousd=0))  # fmt: skip
    report = verify(audited.engine, signer())
    (problem,) = report.problems
    assert problem.describe().startswith("ALTERED") and "request timed-out" in problem.describe()
